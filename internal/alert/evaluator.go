package alert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/guardwatch/observatory/internal/events"
)

const (
	// casAttempts bounds the retries of one window update that keeps
	// losing to other replicas.
	casAttempts = 50
	// stateCacheMax bounds the windows a replica keeps in memory.
	stateCacheMax = 100_000
	// opTimeout bounds the KV and stream calls of one decision.
	opTimeout = 10 * time.Second
)

// evaluator consumes decisions from the shared durable consumer, counts
// matches in the shared windows and hands fired alerts to the outbox.
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

// run consumes until ctx ends; the decision in hand is finished first.
func (e *evaluator) run(ctx context.Context) error {
	iter, err := e.cons.Messages(jetstream.PullMaxMessages(e.batch))
	if err != nil {
		return fmt.Errorf("consume decisions: %w", err)
	}
	stop := context.AfterFunc(ctx, iter.Stop)
	defer stop()
	for {
		m, err := iter.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil
		}
		if err != nil {
			e.log.Warn("pull decisions", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		e.handle(m)
	}
}

// handle evaluates one decision and settles its message: ack once every
// window it touches is stored and every alert it fired is in the outbox;
// otherwise a redelivery retries it, which the windows recognise.
func (e *evaluator) handle(m jetstream.Msg) {
	if err := e.evaluate(m); err != nil {
		e.log.Error("evaluate decision", "subject", m.Subject(), "err", err)
		_ = m.NakWithDelay(time.Second)
		return
	}
	_ = m.Ack()
}

// evaluate counts one decision in the windows of its project's matching
// subscriptions. A payload that is no valid decision of its subject's
// tenant is passed over: the ingester dead-letters it.
func (e *evaluator) evaluate(m jetstream.Msg) error {
	acct, proj, kind, err := events.ParseSubject(m.Subject())
	if err != nil || kind != events.KindDecision {
		return nil
	}
	subs := e.subs.active(acct, proj)
	if len(subs) == 0 {
		return nil
	}
	e.m.evaluated.Inc()
	ev, err := e.dec.Decode(m.Data())
	if err != nil || ev.AccountID != acct || ev.ProjectID != proj {
		e.m.skipped.WithLabelValues(skipInvalid).Inc()
		return nil
	}
	md, err := m.Metadata()
	if err != nil {
		return fmt.Errorf("message metadata: %w", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
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
			h := hit{Seq: md.Sequence.Stream, At: md.Timestamp, Group: g, Trigger: *summary}
			if err := e.count(ctx, sub, h); err != nil {
				return fmt.Errorf("count match of %s/%s for %s: %w", acct, proj, sub.ID, err)
			}
		}
	}
	return nil
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

// count applies one hit to its window with compare-and-set: a write based
// on a stale revision fails, and the hit is applied again on top of the
// winner's state. Exactly one replica's write moves a window over its
// threshold, so exactly one replica fires the alert.
func (e *evaluator) count(ctx context.Context, sub *Subscription, h hit) error {
	e.m.matched.Inc()
	key := sub.AccountID + "." + sub.ProjectID + "." + sub.ID + "." + groupHash(h.Group)
	for attempt := range casAttempts {
		if attempt > 0 {
			// Lost a race: back off a little, with jitter, so that
			// contending replicas do not collide again in lock step.
			time.Sleep(time.Duration(rand.Int64N(int64(attempt) * int64(time.Millisecond))))
		}
		cur, rev, err := e.load(ctx, key)
		if err != nil {
			return err
		}
		next := cur.clone()
		st, a := next.apply(sub, h)
		if st == stepDuplicate {
			e.m.skipped.WithLabelValues(skipDuplicate).Inc()
			if a != nil {
				// This decision fired an alert before its ack was lost:
				// hand it on again; the outbox and the claim drop repeats.
				return e.handOn(ctx, a)
			}
			return nil
		}
		data, err := json.Marshal(next)
		if err != nil {
			return fmt.Errorf("encode window %s: %w", key, err)
		}
		var newRev uint64
		if rev == 0 {
			newRev, err = e.state.Create(ctx, key, data)
		} else {
			newRev, err = e.state.Update(ctx, key, data, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) ||
			errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			e.m.conflicts.Inc()
			e.forget(key)
			continue
		}
		if err != nil {
			return fmt.Errorf("store window %s: %w", key, err)
		}
		e.remember(key, next, newRev)
		if st == stepFired {
			e.m.fired.Inc()
			return e.handOn(ctx, a)
		}
		return nil
	}
	return fmt.Errorf("store window %s: still conflicting after %d attempts", key, casAttempts)
}

// load returns the window from this replica's cache or the bucket; a
// window that does not exist yet has revision 0.
func (e *evaluator) load(ctx context.Context, key string) (*window, uint64, error) {
	e.mu.Lock()
	c, ok := e.cache[key]
	e.mu.Unlock()
	if ok {
		return c.w, c.rev, nil
	}
	entry, err := e.state.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return &window{}, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read window %s: %w", key, err)
	}
	var w window
	if err := json.Unmarshal(entry.Value(), &w); err != nil {
		// A window that cannot be read starts over rather than block
		// its group for good.
		e.log.Error("unreadable window replaced", "key", key, "err", err)
		return &window{}, entry.Revision(), nil
	}
	return &w, entry.Revision(), nil
}

func (e *evaluator) remember(key string, w *window, rev uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.cache) >= stateCacheMax {
		clear(e.cache)
	}
	e.cache[key] = cachedWindow{w: w, rev: rev}
}

func (e *evaluator) forget(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.cache, key)
}

// handOn puts a fired alert into the outbox and waits until it is stored.
// The alert id is the message id, so a repeat inside the duplicate window
// is dropped by the stream.
func (e *evaluator) handOn(ctx context.Context, a *Alert) error {
	data, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode alert %s: %w", a.ID, err)
	}
	msg := nats.NewMsg(outboxPrefix + a.AccountID + "." + a.ProjectID)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, a.ID)
	if _, err := e.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("hand on alert %s: %w", a.ID, err)
	}
	e.log.Info("alert fired", "account", a.AccountID, "project", a.ProjectID,
		"subscription", a.Subscription.ID, "alert", a.ID, "count", a.Count)
	return nil
}
