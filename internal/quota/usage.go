package quota

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/tenant"
)

// Usage counts, per project and minute of publish time, the events the
// lanes scheduled and how many were over quota, and writes the counts to
// the store's usage table, where the tenant can read them. A message that
// is redelivered is counted again.
type Usage struct {
	st  *store.Store // nil keeps counts in metrics only
	log *slog.Logger

	mu     sync.Mutex
	counts map[usageKey]*usageCount

	events *prometheus.CounterVec
	total  atomic.Uint64
	over   atomic.Uint64
}

type usageKey struct {
	k      tenant.Key
	minute int64 // unix seconds of the minute
}

type usageCount struct{ events, over uint64 }

// maxPendingCounts bounds the counts kept while the store cannot take
// them; older minutes are then dropped from the table (not from metrics).
const maxPendingCounts = 100_000

// NewUsage returns a usage counter. st and reg may be nil.
func NewUsage(st *store.Store, reg prometheus.Registerer, log *slog.Logger) *Usage {
	if log == nil {
		log = slog.Default()
	}
	u := &Usage{st: st, log: log.With("component", "quota"),
		counts: map[usageKey]*usageCount{},
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "guard_quota_events_total",
			Help: "Decision events scheduled for storage per project, by class: " +
				"within quota, or over it (stored after the others).",
		}, []string{"account_id", "project_id", "class"}),
	}
	if reg != nil {
		reg.MustRegister(u.events)
	}
	return u
}

// Add counts one event of k published at t.
func (u *Usage) Add(k tenant.Key, t time.Time, within bool) {
	class := "within"
	if !within {
		class = "over"
	}
	u.events.WithLabelValues(k.Account, k.Project, class).Inc()
	u.total.Add(1)
	if !within {
		u.over.Add(1)
	}

	key := usageKey{k: k, minute: t.Unix() / 60 * 60}
	u.mu.Lock()
	defer u.mu.Unlock()
	c := u.counts[key]
	if c == nil {
		if len(u.counts) >= maxPendingCounts {
			return
		}
		c = &usageCount{}
		u.counts[key] = c
	}
	c.events++
	if !within {
		c.over++
	}
}

// Totals returns every event counted since the start and how many of them
// were over quota, all projects together.
func (u *Usage) Totals() (events, over uint64) { return u.total.Load(), u.over.Load() }

// Flush writes the counts gathered since the last flush. On failure they
// are kept for the next one.
func (u *Usage) Flush(ctx context.Context) error {
	u.mu.Lock()
	counts := u.counts
	u.counts = map[usageKey]*usageCount{}
	u.mu.Unlock()
	if len(counts) == 0 || u.st == nil {
		return nil
	}

	rows := make([]store.QuotaCount, 0, len(counts))
	for k, c := range counts {
		rows = append(rows, store.QuotaCount{Account: k.k.Account, Project: k.k.Project,
			Minute: time.Unix(k.minute, 0).UTC(), Events: c.events, OverQuota: c.over})
	}
	if err := u.st.RecordQuotaUsage(ctx, rows); err != nil {
		u.mu.Lock()
		for k, c := range counts {
			if cur := u.counts[k]; cur != nil {
				cur.events += c.events
				cur.over += c.over
			} else if len(u.counts) < maxPendingCounts {
				u.counts[k] = c
			}
		}
		u.mu.Unlock()
		return err
	}
	return nil
}

// Run flushes every interval until ctx ends, and once more after.
func (u *Usage) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := u.Flush(fctx); err != nil {
				u.log.Error("flush quota usage", "err", err)
			}
			cancel()
			return
		case <-t.C:
			if err := u.Flush(ctx); err != nil {
				u.log.Warn("flush quota usage", "err", err)
			}
		}
	}
}
