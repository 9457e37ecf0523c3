package alert

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/guardwatch/observatory/internal/store"
)

// Delivery statuses.
const (
	StatusDelivered = "delivered"
	StatusFailed    = "failed"
)

// Delivery is the record of one notification: sent or, after the last
// retry, failed. The last DeliveryHistory of each subscription are kept.
type Delivery struct {
	AlertID    string    `json:"alert_id"`
	At         time.Time `json:"at"` // when it finished
	Channel    string    `json:"channel"`
	Status     string    `json:"status"`
	HTTPStatus int       `json:"http_status,omitempty"`
	Attempts   int       `json:"attempts"`
	// LatencyMS is from the arrival of the decision that fired the alert
	// (or the start of a test send) to the receiver's answer.
	LatencyMS float64 `json:"latency_ms"`
	// Error says why the last attempt failed, in words safe to show the
	// subscription's owner: no response bodies, no resolved addresses.
	Error string `json:"error,omitempty"`
	Test  bool   `json:"test,omitempty"`
	Count int    `json:"count"`
	Group string `json:"group,omitempty"`
}

// Record appends a delivery to the subscription's history. The history
// is bounded by the bucket: older records fall out.
func (s *Store) Record(ctx context.Context, sc store.Scope, id string, d Delivery) error {
	key, err := subKey(sc, id)
	if err != nil {
		return err
	}
	data, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode delivery: %w", err)
	}
	if _, err := s.deliveries.Put(ctx, key, data); err != nil {
		return fmt.Errorf("record delivery of %s: %w", key, err)
	}
	return nil
}

// Deliveries returns the recent deliveries of a subscription, newest
// first. It returns ErrNotFound when the subscription does not exist.
func (s *Store) Deliveries(ctx context.Context, sc store.Scope, id string) ([]Delivery, error) {
	if _, _, err := s.load(ctx, sc, id); err != nil {
		return nil, err
	}
	key, _ := subKey(sc, id)
	entries, err := s.deliveries.History(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read deliveries of %s: %w", key, err)
	}
	out := make([]Delivery, 0, len(entries))
	for _, e := range entries {
		if e.Operation() != jetstream.KeyValuePut {
			continue
		}
		var d Delivery
		if err := json.Unmarshal(e.Value(), &d); err != nil {
			return nil, fmt.Errorf("decode delivery of %s: %w", key, err)
		}
		out = append(out, d)
	}
	slices.Reverse(out)
	return out, nil
}

// TestSend sends a sample alert over the subscription's channel, with the
// sender's retries, and records the delivery as a test. It returns
// ErrNotFound when the subscription does not exist.
func (s *Store) TestSend(ctx context.Context, sender *Sender, sc store.Scope,
	id string) (Delivery, error) {
	rec, _, err := s.load(ctx, sc, id)
	if err != nil {
		return Delivery{}, err
	}
	d := sender.Send(ctx, &rec.Subscription, Sample(&rec.Subscription, s.now()))
	if err := s.Record(context.WithoutCancel(ctx), sc, id, d); err != nil {
		return d, err
	}
	return d, nil
}
