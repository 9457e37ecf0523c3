package export

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/store"
)

// Limits are one project's export limits, taken from its tier. They apply
// to exports a tenant starts (the UI and its API); an operator's export
// from the command line passes no Gate.
type Limits struct {
	// Tier names the tier, for messages.
	Tier string
	// MaxRows is the most decisions one file may hold; 0 means the tier
	// offers no exports.
	MaxRows int64
	// MaxRange is the longest from-to span of one export.
	MaxRange time.Duration
	// Concurrent is how many of the project's exports may run at once in
	// this process.
	Concurrent int
	// PerDay is how many exports of the project may start per UTC day,
	// counted in the export log; 0 means no daily limit.
	PerDay int
}

// Why a Gate refused an export.
const (
	RefusedDisabled   = "disabled"   // the tier offers no exports
	RefusedRange      = "range"      // the range is longer than the tier allows
	RefusedRows       = "rows"       // the filter selects more rows than one file may hold
	RefusedConcurrent = "concurrent" // the project's exports are all running
	RefusedPerDay     = "per_day"    // the project used up today's exports
)

// LimitError is an export the tier does not allow. Msg is safe to show to
// the tenant: it names the limit and what to do.
type LimitError struct {
	Reason string // one of the Refused constants
	Msg    string
	// RetryAfter is when trying again may succeed; zero when it will not
	// without a change to the request.
	RetryAfter time.Duration
}

func (e *LimitError) Error() string { return "export: " + e.Msg }

// Gate admits exports within their project's tier limits and counts the
// exports of each project running in this process. It is safe for
// concurrent use.
type Gate struct {
	store *store.Store
	now   func() time.Time

	mu      sync.Mutex
	running map[string]int // by "account/project"
}

// NewGate returns a Gate that counts rows and daily exports in st. now is
// the clock; nil means time.Now.
func NewGate(st *store.Store, now func() time.Time) *Gate {
	if now == nil {
		now = time.Now
	}
	return &Gate{store: st, now: now, running: map[string]int{}}
}

// Admit checks a prepared job against lim, cheapest check first: exports
// offered at all, the range, a free slot of the project's concurrent
// exports, the exports already started today (from the export log, so
// the count holds across restarts and replicas), and finally the rows the
// filter selects, counted before anything is streamed. A refusal is a
// *LimitError. On success the job holds one of the project's slots until
// release is called, which must happen once the export has ended.
//
// Two replicas admitting at the same moment may each see one export left
// for the day; the daily count can then be passed by the number of
// replicas minus one.
func (g *Gate) Admit(ctx context.Context, j *Job, lim Limits) (release func(), err error) {
	if lim.MaxRows <= 0 {
		return nil, &LimitError{Reason: RefusedDisabled, Msg: fmt.Sprintf(
			"This project's tier (%s) includes no exports.", lim.Tier)}
	}
	if d := j.Filter.To.Sub(j.Filter.From); lim.MaxRange > 0 && d > lim.MaxRange {
		return nil, &LimitError{Reason: RefusedRange, Msg: fmt.Sprintf(
			"from: the range spans %s; this project's tier (%s) exports at most %s at "+
				"once. Narrow the range.", filter.SpanText(d), lim.Tier,
			filter.SpanText(lim.MaxRange))}
	}
	key := j.Scope.Account() + "/" + j.Scope.Project()
	if !g.acquire(key, lim.Concurrent) {
		return nil, &LimitError{Reason: RefusedConcurrent, RetryAfter: 30 * time.Second,
			Msg: fmt.Sprintf("This project's tier (%s) runs %d export%s at a time, and "+
				"that many are running. Try again when one has finished.", lim.Tier,
				lim.Concurrent, plural(lim.Concurrent))}
	}
	release = sync.OnceFunc(func() { g.release(key) })
	if err := g.check(ctx, j, lim); err != nil {
		release()
		return nil, err
	}
	return release, nil
}

// check counts today's exports and the rows the job selects.
func (g *Gate) check(ctx context.Context, j *Job, lim Limits) error {
	if lim.PerDay > 0 {
		now := g.now().UTC()
		day := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
		n, err := g.store.CountExportsSince(ctx, j.Scope, day)
		if err != nil {
			return fmt.Errorf("count today's exports: %w", err)
		}
		if n >= uint64(lim.PerDay) {
			next := day.Add(24 * time.Hour)
			return &LimitError{Reason: RefusedPerDay, RetryAfter: next.Sub(now),
				Msg: fmt.Sprintf("This project's tier (%s) allows %d export%s per day (UTC), "+
					"and %d started today. Exports are possible again after %s.",
					lim.Tier, lim.PerDay, plural(lim.PerDay), n,
					next.Format("2006-01-02 15:04 UTC"))}
		}
	}
	rows, err := g.store.Count(ctx, j.Scope, j.Filter)
	if err != nil {
		return fmt.Errorf("count the rows to export: %w", err)
	}
	if rows > uint64(lim.MaxRows) {
		return &LimitError{Reason: RefusedRows, Msg: fmt.Sprintf(
			"The filter selects %s decisions; this project's tier (%s) exports at most %s "+
				"in one file. Narrow the range or add filters, and export in parts.",
			group(rows), lim.Tier, group(uint64(lim.MaxRows)))}
	}
	return nil
}

func (g *Gate) acquire(key string, max int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if max > 0 && g.running[key] >= max {
		return false
	}
	g.running[key]++
	return true
}

func (g *Gate) release(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running[key]--; g.running[key] <= 0 {
		delete(g.running, key)
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// group writes n with thousands separators.
func group(n uint64) string {
	s := strconv.FormatUint(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
