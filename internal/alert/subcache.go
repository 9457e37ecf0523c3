package alert

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// subCache mirrors the subscription bucket in memory, kept current by a
// watch, so that the evaluator matches decisions without a read per
// decision. Saves and deletes reach every replica within a round trip.
type subCache struct {
	mu        sync.RWMutex
	byProject map[string]map[string]*Subscription // "<account>.<project>" → id → sub
	ready     chan struct{}
	log       *slog.Logger
}

// watchSubs starts the watch and returns once the current subscriptions
// are loaded. The watch ends with ctx.
func watchSubs(ctx context.Context, kv jetstream.KeyValue, log *slog.Logger) (*subCache,
	error) {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch subscriptions: %w", err)
	}
	c := &subCache{byProject: map[string]map[string]*Subscription{},
		ready: make(chan struct{}), log: log}
	go c.run(w)
	select {
	case <-c.ready:
		return c, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("load subscriptions: %w", ctx.Err())
	}
}

func (c *subCache) run(w jetstream.KeyWatcher) {
	defer func() { _ = w.Stop() }()
	initial := true
	for e := range w.Updates() {
		if e == nil {
			if initial {
				initial = false
				close(c.ready)
			}
			continue
		}
		c.apply(e)
	}
}

// apply takes one put or delete of the bucket.
func (c *subCache) apply(e jetstream.KeyValueEntry) {
	parts := strings.Split(e.Key(), ".")
	if len(parts) != 3 {
		c.log.Warn("subscription key out of layout", "key", e.Key())
		return
	}
	tenant, id := parts[0]+"."+parts[1], parts[2]
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(c.byProject[tenant], id)
		return
	}
	rec, err := decodeRecord(e.Value())
	if err != nil || rec.AccountID != parts[0] || rec.ProjectID != parts[1] || rec.ID != id {
		c.log.Error("unreadable subscription ignored", "key", e.Key(), "err", err)
		delete(c.byProject[tenant], id)
		return
	}
	if c.byProject[tenant] == nil {
		c.byProject[tenant] = map[string]*Subscription{}
	}
	sub := rec.Subscription
	c.byProject[tenant][id] = &sub
}

// active returns the unpaused subscriptions of a project. The returned
// values are shared and must not be changed.
func (c *subCache) active(account, project string) []*Subscription {
	c.mu.RLock()
	defer c.mu.RUnlock()
	m := c.byProject[account+"."+project]
	if len(m) == 0 {
		return nil
	}
	out := make([]*Subscription, 0, len(m))
	for _, s := range m {
		if !s.Paused {
			out = append(out, s)
		}
	}
	return out
}
