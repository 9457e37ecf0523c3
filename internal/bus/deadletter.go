package bus

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/guardwatch/observatory/internal/events"
)

// Dead-letter headers. The body of a dead letter is the original payload,
// byte for byte.
const (
	HeaderReason          = "Guard-Reject-Reason"
	HeaderDetail          = "Guard-Reject-Detail"
	HeaderOriginalSubject = "Guard-Original-Subject"
	HeaderOriginalSeq     = "Guard-Original-Seq"
	HeaderRejectedAt      = "Guard-Rejected-At"

	// HeaderReplayOf is set on a decision republished from a dead letter,
	// and on the record of that replay, to the dead letter's stream
	// sequence. A replayed payload that is rejected again keeps it.
	HeaderReplayOf = "Guard-Replay-Of"
	// HeaderReplayedSeq, on a replay record, is the stream sequence of the
	// republished decision.
	HeaderReplayedSeq = "Guard-Replayed-Seq"
)

// KindReplayed is the subject kind of replay records:
// guard.v1.<account>.<project>.replayed holds one message per dead letter
// of the tenant that was republished, so that none is replayed twice. No
// consumer of decisions or dead letters reads it.
const KindReplayed = "replayed"

// ReplaySubject is where replays of the tenant's dead letters are recorded.
func ReplaySubject(account, project string) (string, error) {
	return events.Subject(account, project, KindReplayed)
}

// DeadLetterSubject is where a payload received on subject goes when it is
// rejected: the tenant's own dead-letter subject when the subject names a
// valid tenant, the unscoped one otherwise.
func DeadLetterSubject(subject string) string {
	acct, proj, _, err := events.ParseSubject(subject)
	if err != nil {
		return UnscopedDeadLetterSubject
	}
	s, _ := events.Subject(acct, proj, events.KindDeadLetter)
	return s
}

// DeadLetter builds the message that records a rejected payload.
func DeadLetter(subject string, seq uint64, payload []byte, reason events.Reason,
	detail string) *nats.Msg {
	m := nats.NewMsg(DeadLetterSubject(subject))
	m.Data = payload
	m.Header.Set(HeaderReason, string(reason))
	m.Header.Set(HeaderDetail, detail)
	m.Header.Set(HeaderOriginalSubject, subject)
	m.Header.Set(HeaderOriginalSeq, strconv.FormatUint(seq, 10))
	m.Header.Set(HeaderRejectedAt, time.Now().UTC().Format(time.RFC3339Nano))
	return m
}

// PublishDeadLetters publishes the messages and waits until the stream
// stored every one, so the originals may then be terminated.
func PublishDeadLetters(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg) error {
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("publish dead letter: %w", err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("store dead letter: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("store dead letter: %w", ctx.Err())
		}
	}
	return nil
}
