package alert

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// count applies a batch's matches to one window with compare-and-set: a
// write based on a stale revision fails, and the matches are applied again
// on top of the winner's state. So every match counts once whichever
// replica received it, and exactly one write moves a window over its
// threshold: that replica fires. Alerts go to the outbox only after the
// window that fired them is stored.
func (e *evaluator) count(ctx context.Context, key string, cs []counted) error {
	for attempt := range casAttempts {
		if attempt > 1 {
			// Lost more than one race: back off a little, with jitter,
			// so that contending replicas do not collide in lock step.
			time.Sleep(time.Duration(rand.Int64N(int64(attempt) * int64(200*time.Microsecond))))
		}
		cur, rev, err := e.load(ctx, key)
		if err != nil {
			return err
		}
		next := cur.clone()
		var out []*Alert
		changed, fired, dups := false, 0, 0
		for _, c := range cs {
			st, a := next.apply(c.sub, c.h)
			switch st {
			case stepDuplicate:
				// A redelivery. If this very decision fired an alert, its
				// ack was lost: hand the alert on again; the outbox and
				// the claim drop repeats.
				dups++
				if a != nil {
					out = append(out, a)
				}
			case stepFired:
				changed, fired = true, fired+1
				out = append(out, a)
			default:
				changed = true
			}
		}
		if changed {
			ok, err := e.store(ctx, key, next, rev)
			if err != nil {
				return err
			}
			if !ok {
				e.m.conflicts.Inc()
				e.forget(key)
				continue
			}
		}
		e.m.matched.Add(float64(len(cs) - dups))
		e.m.skipped.WithLabelValues(skipDuplicate).Add(float64(dups))
		e.m.fired.Add(float64(fired))
		for _, a := range out {
			if err := e.handOn(ctx, a); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("store window %s: still conflicting after %d attempts", key, casAttempts)
}

// store writes a window based on revision rev (0: the window is new). It
// returns false when another writer came first.
func (e *evaluator) store(ctx context.Context, key string, w *window, rev uint64) (bool,
	error) {
	data, err := json.Marshal(w)
	if err != nil {
		return false, fmt.Errorf("encode window %s: %w", key, err)
	}
	var newRev uint64
	if rev == 0 {
		newRev, err = e.state.Create(ctx, key, data)
	} else {
		newRev, err = e.state.Update(ctx, key, data, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store window %s: %w", key, err)
	}
	e.remember(key, w, newRev)
	return true, nil
}

// load returns the window from this replica's cache or the bucket; a
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
