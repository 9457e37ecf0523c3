package alert

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/go-json-experiment/json"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/guardwatch/observatory/internal/events"
)

// HeaderNATSAlertID carries the alert id on the nats channel.
const HeaderNATSAlertID = "Guard-Alert-Id"

// RetryPolicy bounds the retries of one notification: exponential
// backoff with jitter, until MaxAttempts or MaxElapsed, whichever comes
// first. Zero fields take the defaults shown.
type RetryPolicy struct {
	MaxAttempts    int           // default 6
	Initial        time.Duration // first wait, default 500ms
	Max            time.Duration // longest wait, default 30s
	MaxElapsed     time.Duration // whole budget, default 2m
	AttemptTimeout time.Duration // one request, default 10s
}

func (p *RetryPolicy) defaults() {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 6
	}
	if p.Initial <= 0 {
		p.Initial = 500 * time.Millisecond
	}
	if p.Max <= 0 {
		p.Max = 30 * time.Second
	}
	if p.MaxElapsed <= 0 {
		p.MaxElapsed = 2 * time.Minute
	}
	if p.AttemptTimeout <= 0 {
		p.AttemptTimeout = 10 * time.Second
	}
}

// SenderConfig configures a Sender.
type SenderConfig struct {
	// Guard checks every address dialled; required.
	Guard *Guard
	// JS publishes the nats channel; nil makes that channel fail.
	JS    jetstream.JetStream
	Retry RetryPolicy
	// Replica names this process in the logs of failed deliveries; it is
	// kept out of delivery records, which tenants read.
	Replica string
	// Registerer receives the delivery metrics; nil skips registration.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
}

// Sender delivers alerts over a subscription's channel, with retries.
type Sender struct {
	cfg    SenderConfig
	client *http.Client
	m      *metrics
	log    *slog.Logger
}

// NewSender returns a sender.
func NewSender(cfg SenderConfig) (*Sender, error) {
	return newSender(cfg, newMetrics(cfg.Registerer))
}

func newSender(cfg SenderConfig, m *metrics) (*Sender, error) {
	if cfg.Guard == nil {
		return nil, errors.New("alert sender: a guard is required")
	}
	cfg.Retry.defaults()
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Sender{cfg: cfg, client: cfg.Guard.Client(cfg.Retry.AttemptTimeout), m: m,
		log: cfg.Logger.With("component", "alert-sender")}, nil
}

// attemptError is a failed attempt, described in words safe to record.
type attemptError struct {
	msg    string
	status int
	err    error
}

func (e *attemptError) Error() string { return e.msg }
func (e *attemptError) Unwrap() error { return e.err }

// Send delivers the alert, retrying as the policy allows, and returns the
// record of the outcome. It gives up early only when ctx ends.
func (s *Sender) Send(ctx context.Context, sub *Subscription, a *Alert) Delivery {
	d := Delivery{AlertID: a.ID, Channel: sub.Channel.Type, Test: a.Test,
		Count: a.Count, Group: a.Group}
	body, err := s.body(sub, a)
	if err != nil {
		d.Status, d.Error, d.At = StatusFailed, "could not encode the alert", s.cfg.Now()
		return d
	}

	p := s.cfg.Retry
	b := &backoff.ExponentialBackOff{InitialInterval: p.Initial, RandomizationFactor: 0.5,
		Multiplier: 2, MaxInterval: p.Max}
	op := func() (struct{}, error) {
		d.Attempts++
		if d.Attempts > 1 {
			s.m.retries.WithLabelValues(d.Channel).Inc()
		}
		status, err := s.attempt(ctx, sub, a, body, d.Attempts)
		d.HTTPStatus = status
		return struct{}{}, err
	}
	_, err = backoff.Retry(ctx, op, backoff.WithBackOff(b),
		backoff.WithMaxTries(uint(p.MaxAttempts)), backoff.WithMaxElapsedTime(p.MaxElapsed))

	d.At = s.cfg.Now().UTC()
	d.LatencyMS = float64(d.At.Sub(a.FiredAt).Microseconds()) / 1000
	if err == nil {
		d.Status = StatusDelivered
		s.m.latency.WithLabelValues(d.Channel).Observe(d.At.Sub(a.FiredAt).Seconds())
	} else {
		d.Status, d.Error = StatusFailed, describe(err)
		s.log.WarnContext(ctx, "alert delivery failed", "account", a.AccountID,
			"project", a.ProjectID, "subscription", sub.ID, "alert", a.ID,
			"attempts", d.Attempts, "replica", s.cfg.Replica, "err", err)
	}
	s.m.deliveries.WithLabelValues(d.Channel, d.Status).Inc()
	return d
}

// describe turns a final error into a recordable message.
func describe(err error) string {
	var ae *attemptError
	switch {
	case errors.As(err, &ae):
		return ae.msg
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "stopped before the delivery finished"
	default:
		return "delivery failed"
	}
}

func (s *Sender) body(sub *Subscription, a *Alert) ([]byte, error) {
	if sub.Channel.Type == ChannelSlack {
		return json.Marshal(map[string]string{"text": SlackText(a)})
	}
	return json.Marshal(a)
}

// attempt makes one try. It returns a permanent error for what a retry
// cannot fix: a refused address, a redirect or a 4xx other than 408, 425
// and 429.
func (s *Sender) attempt(ctx context.Context, sub *Subscription, a *Alert, body []byte,
	n int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Retry.AttemptTimeout)
	defer cancel()
	if sub.Channel.Type == ChannelNATS {
		return 0, s.publish(ctx, a, body)
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sub.Channel.URL,
		bytes.NewReader(body))
	if err != nil {
		return 0, backoff.Permanent(&attemptError{msg: "invalid target URL", err: err})
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "guardwatch-alerter/1")
	h.Set(HeaderAlertID, a.ID)
	h.Set(HeaderIdempotency, a.ID)
	h.Set(HeaderAttempt, strconv.Itoa(n))
	if sub.Channel.Type == ChannelWebhook {
		ts := s.cfg.Now()
		h.Set(HeaderTimestamp, unixString(ts))
		h.Set(HeaderSignature, Sign(sub.secret, ts, body))
	}

	resp, err := s.client.Do(req)
	if err != nil {
		return 0, dialError(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, s.statusError(resp)
}

func dialError(err error) error {
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.Is(err, ErrForbiddenAddress):
		return backoff.Permanent(&attemptError{msg: "target address not allowed", err: err})
	case errors.As(err, &dnsErr):
		return &attemptError{msg: "host did not resolve", err: err}
	case errors.As(err, &netErr) && netErr.Timeout():
		return &attemptError{msg: "timed out", err: err}
	default:
		return &attemptError{msg: "connection failed", err: err}
	}
}

func (s *Sender) statusError(resp *http.Response) error {
	code := resp.StatusCode
	e := &attemptError{msg: "HTTP " + strconv.Itoa(code), status: code}
	switch {
	case code >= 200 && code < 300:
		return nil
	case code >= 300 && code < 400:
		e.msg = "redirect not followed (HTTP " + strconv.Itoa(code) + ")"
		return backoff.Permanent(e)
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 &&
			time.Duration(secs)*time.Second <= s.cfg.Retry.Max {
			return errors.Join(e, backoff.RetryAfter(secs))
		}
		return e
	case code >= 500, code == http.StatusRequestTimeout, code == http.StatusTooEarly:
		return e
	default:
		return backoff.Permanent(e)
	}
}

// publish sends the alert on guard.v1.<account>.<project>.alert and waits
// for the stream to store it.
func (s *Sender) publish(ctx context.Context, a *Alert, body []byte) error {
	if s.cfg.JS == nil {
		return backoff.Permanent(&attemptError{msg: "nats channel not available"})
	}
	subj, err := events.Subject(a.AccountID, a.ProjectID, events.KindAlert)
	if err != nil {
		return backoff.Permanent(&attemptError{msg: "invalid tenant", err: err})
	}
	m := nats.NewMsg(subj)
	m.Data = body
	m.Header.Set(HeaderNATSAlertID, a.ID)
	if _, err := s.cfg.JS.PublishMsg(ctx, m); err != nil {
		return &attemptError{msg: "publish failed", err: fmt.Errorf("publish %s: %w", subj, err)}
	}
	return nil
}
