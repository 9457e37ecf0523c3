package alert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/guardwatch/observatory/internal/events"
)

const (
	// casAttempts bounds the retries of one window update that keeps
	// losing to other replicas.
	casAttempts = 50
	// stateCacheMax bounds the windows a replica keeps in memory.
	stateCacheMax = 100_000
	// opTimeout bounds the KV and stream calls of one batch.
	opTimeout = 10 * time.Second
	// windowWriters bounds the windows of one batch written at once.
	windowWriters = 16
)

// evaluator consumes decisions from the shared durable consumer, counts
// matches in the shared windows and hands fired alerts to the outbox.
//
// It works in batches: whatever arrived while the previous batch was
// being written, up to batch decisions. The matches of a batch are
// grouped by window, each window is written once with all of its matches,
// and different windows are written concurrently. Under light load a
// batch is one decision and adds no delay; under heavy load a hot window
// costs one write per batch instead of one per match, which also keeps
// replicas from colliding on it.
type evaluator struct {
	batch int
	js    jetstream.JetStream
	cons  jetstream.Consumer
	state jetstream.KeyValue
	subs  *subCache
	dec   *events.Decoder
	m     *metrics
	log   *slog.Logger

	mu    sync.Mutex
	cache map[string]cachedWindow // last window this replica read or wrote
}

type cachedWindow struct {
	w   *window
	rev uint64
}

// run consumes until ctx ends; the batch in hand is finished first.
func (e *evaluator) run(ctx context.Context) error {
	iter, err := e.cons.Messages(jetstream.PullMaxMessages(e.batch))
	if err != nil {
		return fmt.Errorf("consume decisions: %w", err)
	}
	stop := context.AfterFunc(ctx, iter.Stop)
	defer stop()
	msgs := make(chan jetstream.Msg, e.batch)
	go e.pull(iter, msgs)
	for m := range msgs {
		batch := []jetstream.Msg{m}
	fill:
		for len(batch) < e.batch {
			select {
			case m, ok := <-msgs:
				if !ok {
					break fill
				}
				batch = append(batch, m)
			default:
				break fill
			}
		}
		e.process(batch)
	}
	return nil
}

// pull copies messages from the iterator until it is stopped.
func (e *evaluator) pull(iter jetstream.MessagesContext, out chan<- jetstream.Msg) {
	defer close(out)
	for {
		m, err := iter.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return
		}
		if err != nil {
			e.log.Warn("pull decisions", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		out <- m
	}
}

// counted is one match of a decision, for one subscription and group.
type counted struct {
	sub *Subscription
	h   hit
	msg int // index of the decision in its batch
}

// process evaluates a batch and settles each decision: ack once every
// window it touches is stored and every alert it fired is in the outbox;
// otherwise nak, and the redelivery is recognised by the windows.
func (e *evaluator) process(batch []jetstream.Msg) {
	failed := make([]bool, len(batch))
	byKey := map[string][]counted{}
	var keys []string
	for i, m := range batch {
		cs, err := e.matches(m, i)
		if err != nil {
			e.log.Error("evaluate decision", "subject", m.Subject(), "err", err)
			failed[i] = true
			continue
		}
		for _, c := range cs {
			k := windowKey(c.sub, c.h.Group)
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], c)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, windowWriters)
	for _, k := range keys {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := e.count(ctx, k, byKey[k]); err != nil {
				e.log.Error("count matches", "key", k, "err", err)
				mu.Lock()
				for _, c := range byKey[k] {
					failed[c.msg] = true
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for i, m := range batch {
		if failed[i] {
			_ = m.NakWithDelay(time.Second)
		} else {
			_ = m.Ack()
		}
	}
}

// evaluate counts one decision on its own, as a batch of one would, but
// leaves its message unsettled.
func (e *evaluator) evaluate(m jetstream.Msg) error {
	cs, err := e.matches(m, 0)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	for _, c := range cs {
		if err := e.count(ctx, windowKey(c.sub, c.h.Group), []counted{c}); err != nil {
			return err
		}
	}
	return nil
}

// matches decodes a decision and lists its matches with the unpaused
// subscriptions of its project, one per group it counts for. A payload
// that is no valid decision of its subject's tenant matches nothing: the
// ingester dead-letters it.
func (e *evaluator) matches(m jetstream.Msg, idx int) ([]counted, error) {
	acct, proj, kind, err := events.ParseSubject(m.Subject())
	if err != nil || kind != events.KindDecision {
		return nil, nil
	}
	subs := e.subs.active(acct, proj)
	if len(subs) == 0 {
		return nil, nil
	}
	e.m.evaluated.Inc()
	ev, err := e.dec.Decode(m.Data())
	if err != nil || ev.AccountID != acct || ev.ProjectID != proj {
		e.m.skipped.WithLabelValues(skipInvalid).Inc()
		return nil, nil
	}
	md, err := m.Metadata()
	if err != nil {
		return nil, fmt.Errorf("message metadata: %w", err)
	}
	var out []counted
	var summary *EventSummary
	for _, sub := range subs {
		if !sub.match.Matches(ev) {
			continue
		}
		if summary == nil {
			s := summarize(ev)
			summary = &s
		}
		for _, g := range groups(sub, ev) {
			out = append(out, counted{sub: sub, msg: idx, h: hit{Seq: md.Sequence.Stream,
				At: md.Timestamp, Group: g, Trigger: *summary}})
		}
	}
	return out, nil
}

// windowKey is <account>.<project>.<sub_id>.<group hash>.
func windowKey(sub *Subscription, group string) string {
	return sub.AccountID + "." + sub.ProjectID + "." + sub.ID + "." + groupHash(group)
}

// groups lists the group values a decision counts for: one, except for
// policy grouping, where it counts once for each determining policy (or
// only the matched one, when the match names a policy).
func groups(sub *Subscription, ev *events.Event) []string {
	switch sub.GroupBy {
	case GroupUser:
		if ev.Identity == nil {
			return []string{""}
		}
		return []string{ev.Identity.UserID}
	case GroupSession:
		return []string{ev.SessionID}
	case GroupPolicy:
		if p := sub.match.PolicyID; p != "" {
			return []string{p}
		}
		var out []string
		for _, p := range ev.DeterminingPolicies {
			if !slices.Contains(out, p.PolicyID) {
				out = append(out, p.PolicyID)
			}
		}
		if len(out) == 0 {
			return []string{""}
		}
		return out
	default:
		return []string{""}
	}
}
