package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/guardwatch/observatory/internal/export"
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/tenant"
)

// Tier limits. Every limit is applied after the authorization check, to a
// project the viewer may see, so a limit message never tells anything
// about another tenant's project: those get the uniform not found first.
// Without a tiers registry (Deps.Tiers nil) only the store's own bounds
// apply.

// tier returns the project's current tier, or nil when the server runs
// without tiers. A project without a policy folder gets the default tier,
// though the policy engine denies such projects before this is asked.
func (s *server) tier(sc store.Scope) *tenant.Tier {
	if s.Tiers == nil {
		return nil
	}
	t, _ := s.Tiers.Snapshot().Tier(tenant.Key{Account: sc.Account(), Project: sc.Project()})
	return t
}

// maxRange is the longest time range the project's tier lets one query
// span, or 0 for no tier limit.
func (s *server) maxRange(sc store.Scope) time.Duration {
	if t := s.tier(sc); t != nil {
		return t.Query.MaxRange.D()
	}
	return 0
}

// checkRange refuses a filter whose range is longer than the project's
// tier allows, naming the parameter that set it and the limit.
func (s *server) checkRange(sc store.Scope, f filter.Filter) error {
	t := s.tier(sc)
	if t == nil || f.To.Sub(f.From) <= t.Query.MaxRange.D() {
		return nil
	}
	param := "from"
	if f.Preset != "" {
		param = "range"
	}
	return badParam(param, "the time range may span at most %s on this project's tier (%s)",
		filter.SpanText(t.Query.MaxRange.D()), t.Name)
}

// scopedFilter reads the filter of a request about the project of sc: a
// request that names no range gets the default preset, or the widest
// preset the tier allows when the default is longer, and a range longer
// than the tier allows is refused.
func (s *server) scopedFilter(r *http.Request, sc store.Scope) (filter.Filter, *time.Location,
	error) {
	q := r.URL.Query()
	if max := s.maxRange(sc); max > 0 && !q.Has("range") && !q.Has("from") && !q.Has("to") {
		q.Set("range", presetWithin(filter.DefaultPreset, max))
	}
	loc := viewerZone(r)
	f, err := filter.Parse(q, s.Now(), loc)
	var fe *filter.Error
	if errors.As(err, &fe) && fe.TooLong {
		if t := s.tier(sc); t != nil {
			// Longer than any filter may be is longer than the tier's limit
			// too: name the limit that applies to this project.
			return filter.Filter{}, nil, badParam("from", "the time range may span at most "+
				"%s on this project's tier (%s)", filter.SpanText(t.Query.MaxRange.D()), t.Name)
		}
	}
	if err != nil {
		return filter.Filter{}, nil, err
	}
	if err := s.checkRange(sc, f); err != nil {
		return filter.Filter{}, nil, err
	}
	return f, loc, nil
}

// presetWithin returns want when its span is within max (0: no limit),
// else the widest preset within max, else the narrowest preset.
func presetWithin(want string, max time.Duration) string {
	best := filter.Presets[0].Name
	for _, p := range filter.Presets {
		if max > 0 && p.Dur > max {
			break
		}
		best = p.Name
		if p.Name == want {
			break
		}
	}
	return best
}

// pageSize reads the optional "limit" parameter, the rows of one page:
// def when it is absent, never more than the project's tier allows per
// page (rows_per_page) nor than the store's bound for the list.
func (s *server) pageSize(r *http.Request, sc store.Scope, def, storeMax int) (int, error) {
	limit, why := storeMax, "per page"
	if t := s.tier(sc); t != nil && t.Query.RowsPerPage < limit {
		limit, why = t.Query.RowsPerPage, "per page on this project's tier ("+t.Name+")"
	}
	v := r.URL.Query().Get("limit")
	if v == "" {
		return min(def, limit), nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, badParam("limit", "must be a whole number of rows from 1 to %d", limit)
	}
	if n > limit {
		return 0, badParam("limit", "may be at most %d rows %s", limit, why)
	}
	return n, nil
}

// keepLimit carries an explicit "limit" parameter into a page link.
func keepLimit(r *http.Request, link string) string {
	v := r.URL.Query().Get("limit")
	if link == "" || v == "" {
		return link
	}
	sep := "?"
	if strings.Contains(link, "?") {
		sep = "&"
	}
	return link + sep + "limit=" + url.QueryEscape(v)
}

// queryGate counts the ClickHouse-reading requests of each project that
// are running in this observatory process. The limit is per process:
// replicas behind a load balancer each allow a project its tier's
// query.concurrent, so a project may run that many times the number of
// replicas at once in all.
type queryGate struct {
	mu      sync.Mutex
	running map[tenant.Key]int
}

func newQueryGate() *queryGate { return &queryGate{running: map[tenant.Key]int{}} }

func (g *queryGate) acquire(k tenant.Key, max int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running[k] >= max {
		return false
	}
	g.running[k]++
	return true
}

func (g *queryGate) release(k tenant.Key) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running[k]--; g.running[k] <= 0 {
		delete(g.running, k)
	}
}

// beginQuery takes one of the project's query slots, sized from its
// current tier (query.concurrent), so that one project's viewers cannot
// keep ClickHouse busy for everyone. A request over the limit is refused
// at once with 429 and Retry-After rather than queued. done gives the
// slot back; calling it again does nothing, so handlers may both call it
// when their reads are over and defer it.
func (s *server) beginQuery(sc store.Scope) (done func(), err error) {
	t := s.tier(sc)
	if t == nil {
		return func() {}, nil
	}
	k := tenant.Key{Account: sc.Account(), Project: sc.Project()}
	if !s.queries.acquire(k, t.Query.Concurrent) {
		return nil, &userError{Status: http.StatusTooManyRequests, RetryAfter: time.Second,
			Msg: fmt.Sprintf("This project's tier (%s) runs at most %d %s at once, and "+
				"that many are running. Try again in a moment.", t.Name, t.Query.Concurrent,
				queriesWord(t.Query.Concurrent))}
	}
	return sync.OnceFunc(func() { s.queries.release(k) }), nil
}

func queriesWord(n int) string {
	if n == 1 {
		return "query"
	}
	return "queries"
}

// exportLimits are the project's export limits; ok is false when the
// server runs without tiers, and exports then have no tier limits. An
// export's range is held to the shorter of export.max_range and
// query.max_range: an export is a query too.
func (s *server) exportLimits(sc store.Scope) (export.Limits, bool) {
	t := s.tier(sc)
	if t == nil {
		return export.Limits{}, false
	}
	return export.Limits{Tier: t.Name, MaxRows: t.Export.MaxRows,
		MaxRange:   min(t.Export.MaxRange.D(), t.Query.MaxRange.D()),
		Concurrent: t.Export.Concurrent, PerDay: t.Export.PerDay}, true
}

// retryAfter writes a Retry-After header of whole seconds, at least one.
func retryAfter(w http.ResponseWriter, d time.Duration) {
	if d <= 0 {
		return
	}
	secs := int64((d + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
}
