package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/go-json-experiment/json"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/guardwatch/observatory/internal/events"
)

// HeaderEventID names the event a decision message carries. It is
// informational: the stream does not deduplicate on it.
const HeaderEventID = "Guard-Event-Id"

// Publisher sends decision events of a guard to the stream. A publish that
// fails or times out is retried with the same payload; a retry that lands
// twice is stored twice in the stream but is one row to every reader,
// because storage keys rows by (account, project, event_id). No
// Nats-Msg-Id is set, so no other tenant's message can shadow it.
type Publisher struct {
	js         jetstream.JetStream
	maxElapsed time.Duration
}

// NewPublisher returns a publisher that retries for up to maxElapsed
// (default 30s).
func NewPublisher(js jetstream.JetStream, maxElapsed time.Duration) *Publisher {
	if maxElapsed <= 0 {
		maxElapsed = 30 * time.Second
	}
	return &Publisher{js: js, maxElapsed: maxElapsed}
}

// Message encodes an event as the message for its decision subject.
func Message(ev *events.Event) (*nats.Msg, error) {
	subj, err := events.Subject(ev.AccountID, ev.ProjectID, events.KindDecision)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", ev.EventID, err)
	}
	m := nats.NewMsg(subj)
	m.Data = data
	m.Header.Set(HeaderEventID, ev.EventID)
	return m, nil
}

// Publish sends one event and waits until the stream stored it.
func (p *Publisher) Publish(ctx context.Context, ev *events.Event) error {
	m, err := Message(ev)
	if err != nil {
		return err
	}
	return p.PublishMsg(ctx, m)
}

// PublishMsg sends a prepared message with retries until the stream
// acknowledges it, the context ends or the retry budget is spent.
func (p *Publisher) PublishMsg(ctx context.Context, m *nats.Msg) error {
	_, err := p.PublishAck(ctx, m)
	return err
}

// PublishAck is PublishMsg that also returns the stream's ack, which
// holds the sequence the message was stored at.
func (p *Publisher) PublishAck(ctx context.Context, m *nats.Msg) (*jetstream.PubAck, error) {
	op := func() (*jetstream.PubAck, error) {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		ack, err := p.js.PublishMsg(actx, m)
		if err != nil && !retryable(err) {
			return nil, backoff.Permanent(err)
		}
		return ack, err
	}
	ack, err := backoff.Retry(ctx, op,
		backoff.WithBackOff(backoff.NewExponentialBackOff()),
		backoff.WithMaxElapsedTime(p.maxElapsed))
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", m.Subject, err)
	}
	return ack, nil
}

// retryable reports whether a publish error may pass: anything but a
// refusal. The server may be unreachable, busy, slow or restarting, and a
// connection cut mid-write surfaces as a plain network error (a broken
// pipe, EOF), so unknown errors are retried within the budget. A refusal
// (bad subject, payload too large, stream full, permissions) is final.
func retryable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return serverUnavailable(err)
	}
	refused := errors.Is(err, nats.ErrBadSubject) || errors.Is(err, nats.ErrMaxPayload) ||
		errors.Is(err, nats.ErrHeadersNotSupported) || errors.Is(err, nats.ErrInvalidMsg) ||
		errors.Is(err, nats.ErrPermissionViolation) || errors.Is(err, nats.ErrAuthorization) ||
		errors.Is(err, jetstream.ErrAsyncPublishReplySubjectSet) ||
		errors.Is(err, context.Canceled)
	return !refused
}
