package alert

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Names of the JetStream resources the alerting side keeps. The outbox is
// internal: it lives outside guard.v1.>, so no guard credential can
// publish a forged alert into it.
const (
	SubsBucket     = "GUARD_ALERT_SUBS"       // <account>.<project>.<sub_id> → subscription
	StateBucket    = "GUARD_ALERT_STATE"      // <account>.<project>.<sub_id>.<group> → window
	ClaimBucket    = "GUARD_ALERT_SENT"       // <account>.<project>.<alert_id> → claim
	DeliveryBucket = "GUARD_ALERT_DELIVERIES" // <account>.<project>.<sub_id> → history
	OutboxStream   = "GUARD_ALERT_OUTBOX"     // outboxPrefix<account>.<project>

	outboxPrefix = "guard_alert_outbox."

	// DeliveryHistory is how many recent deliveries are kept per
	// subscription (KV history, at most 64).
	DeliveryHistory = 20
	// stateTTL drops the window of a group that saw no match for longer
	// than the longest window plus the longest cooldown.
	stateTTL = MaxWindow + MaxCooldown + time.Hour
	// claimTTL is how long an alert id is remembered, so a repeat of it
	// is dropped: longer than any redelivery can be delayed.
	claimTTL = 7 * 24 * time.Hour
	// outboxMaxAge bounds how long an undelivered alert waits.
	outboxMaxAge = 24 * time.Hour
	// outboxDupWindow drops a republished alert the stream saw recently;
	// the claim catches older repeats.
	outboxDupWindow = 10 * time.Minute
)

// ensureKV creates a bucket or updates it to cfg.
func ensureKV(ctx context.Context, js jetstream.JetStream,
	cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("create or update bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

func subsConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: SubsBucket, Replicas: replicas,
		Description: "alert subscriptions of every tenant, with their secrets"}
}

func deliveriesConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: DeliveryBucket, Replicas: replicas,
		History:     DeliveryHistory,
		Description: "recent alert deliveries per subscription"}
}

func stateConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: StateBucket, Replicas: replicas, TTL: stateTTL,
		Description: "alert windows and cooldowns per subscription and group"}
}

func claimConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: ClaimBucket, Replicas: replicas, TTL: claimTTL,
		Description: "alert ids claimed for sending, so each is sent once"}
}

// ensureOutbox creates the work-queue stream between evaluation and
// delivery.
func ensureOutbox(ctx context.Context, js jetstream.JetStream,
	replicas int) (jetstream.Stream, error) {
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        OutboxStream,
		Description: "fired alerts waiting for delivery",
		Subjects:    []string{outboxPrefix + "*.*"},
		Retention:   jetstream.WorkQueuePolicy,
		MaxAge:      outboxMaxAge,
		Duplicates:  outboxDupWindow,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("create or update stream %s: %w", OutboxStream, err)
	}
	return st, nil
}
