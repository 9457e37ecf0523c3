// Package bus is the JetStream side of the pipeline: the stream and its
// consumers, the producer's publisher, and dead letters.
package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/guardwatch/observatory/internal/events"
)

// UnscopedDeadLetterSubject receives payloads whose subject names no valid
// tenant, so they cannot go to a tenant's own dead-letter subject.
const UnscopedDeadLetterSubject = "guard.unscoped.deadletter"

// StreamConfig sizes the stream that holds every tenant's decisions, dead
// letters and alerts.
type StreamConfig struct {
	Name     string        // default "GUARD"
	MaxAge   time.Duration // default 7 days
	MaxBytes int64         // default unlimited (-1)
	Replicas int           // default 1
	Memory   bool          // memory storage instead of file, for benchmarks
}

// DuplicateWindow is the stream's duplicate-tracking window, set as short
// as the server allows. Nats-Msg-Id is a header any producer can set and
// the window is shared by every tenant of the stream, so the broker's
// dedup would let one tenant suppress another's event by publishing its
// id first. Deduplication happens in storage, by (account, project,
// event_id), instead.
const DuplicateWindow = 100 * time.Millisecond

// EnsureStream creates the stream or updates it to cfg.
func EnsureStream(ctx context.Context, js jetstream.JetStream,
	cfg StreamConfig) (jetstream.Stream, error) {
	if cfg.Name == "" {
		cfg.Name = "GUARD"
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = 7 * 24 * time.Hour
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = -1
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	storage := jetstream.FileStorage
	if cfg.Memory {
		storage = jetstream.MemoryStorage
	}

	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Name,
		Description: "guard decisions, dead letters and alerts of every tenant",
		Subjects:    []string{events.StreamSubjects, UnscopedDeadLetterSubject},
		Retention:   jetstream.LimitsPolicy,
		// Refuse new messages when full rather than drop audit data that
		// may not have been ingested yet; producers see the error.
		Discard:    jetstream.DiscardNew,
		MaxAge:     cfg.MaxAge,
		MaxBytes:   cfg.MaxBytes,
		Storage:    storage,
		Replicas:   cfg.Replicas,
		Duplicates: DuplicateWindow,
	})
	if err != nil {
		return nil, fmt.Errorf("create or update stream %s: %w", cfg.Name, err)
	}
	return st, nil
}

// ConsumerConfig sizes a durable pull consumer.
type ConsumerConfig struct {
	Durable       string        // required
	FilterSubject string        // default: every tenant's decisions
	AckWait       time.Duration // default 60s
	MaxAckPending int           // default 50,000
}

// EnsureConsumer creates or updates a durable pull consumer with explicit
// acks. Messages are redelivered without limit: a message is only ever
// removed from the work queue by an ack (stored) or a term (dead-lettered).
func EnsureConsumer(ctx context.Context, st jetstream.Stream,
	cfg ConsumerConfig) (jetstream.Consumer, error) {
	if cfg.Durable == "" {
		return nil, errors.New("consumer: durable name is required")
	}
	if cfg.FilterSubject == "" {
		cfg.FilterSubject = events.DecisionFilter
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = 60 * time.Second
	}
	if cfg.MaxAckPending == 0 {
		cfg.MaxAckPending = 50_000
	}

	c, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		FilterSubject: cfg.FilterSubject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxAckPending: cfg.MaxAckPending,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("create or update consumer %s: %w", cfg.Durable, err)
	}
	return c, nil
}
