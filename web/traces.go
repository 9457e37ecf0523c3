package web

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/store"
)

// PageSize is the number of decisions on one page of the traces list.
const PageSize = 50

// TraceRow is one decision in a list.
type TraceRow struct {
	ID          string
	Href        string // empty when the id cannot be linked
	Time        TimeView
	Outcome     string
	Decision    string
	Mode        string
	Severity    string
	EventType   string
	Action      string
	Source      string
	Categories  []string
	Policies    []string
	User        string
	Agent       string
	Application string
	Session     string
	SessionHref string
	Reason      string
	Score       string
	Latency     string
}

// TracesView is the traces page.
type TracesView struct {
	Chrome
	Filter    FilterView
	Facets    []FacetView
	Total     string
	Rows      []TraceRow
	NewerHref string // empty on the newest page
	OlderHref string // empty on the oldest page
	FirstHref string // the newest page, when not on it
	TailURL   string // the live tail's event stream, on the newest page only
	// ExportHref opens the export of everything the filter selects; empty
	// when the viewer may not export.
	ExportHref string
	// ExportOff, when set, says why the project offers no exports (its
	// tier has none); the export button is shown disabled with it.
	ExportOff string
}

func projectPath(project string, parts ...string) string {
	p := "/p/" + url.PathEscape(project)
	for _, s := range parts {
		p += "/" + url.PathEscape(s)
	}
	return p
}

func (s *server) traces(w http.ResponseWriter, r *http.Request) error {
	sc, f, loc, content, err := s.listRequest(r, authz.ListTraces)
	if err != nil {
		return err
	}
	project := sc.Project()
	size, err := s.pageSize(r, sc, PageSize, store.MaxPageSize)
	if err != nil {
		return err
	}
	after, before, err := pageCursors(r)
	if err != nil {
		return err
	}

	done, err := s.beginQuery(sc)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(r.Context(), s.QueryTimeout)
	defer cancel()
	// The page and the facets are independent queries: run them at once.
	// The facets' outcome counts give the total.
	var page store.Page
	var listErr error
	var wg sync.WaitGroup
	wg.Go(func() { page, listErr = s.listPage(ctx, sc, f, after, before, size) })
	facets, err := s.Store.Facets(ctx, sc, f)
	wg.Wait()
	if listErr != nil {
		return listErr
	}
	if err != nil {
		return err
	}
	total := facets.Total()
	done()

	path := projectPath(project, "traces")
	v := TracesView{
		Chrome: s.chrome(r, project),
		Filter: filterView(path, f, loc, content, s.maxRange(sc)),
		Facets: facetViews(path, f, facets),
		Total:  count(total),
	}
	v.Section = "traces"
	v.Filter.Limit = r.URL.Query().Get("limit")
	now := s.Now()
	for _, d := range page.Rows {
		row := traceRow(project, d, loc, now)
		if !v.CanSessions {
			row.SessionHref = ""
		}
		v.Rows = append(v.Rows, row)
	}
	v.NewerHref, v.OlderHref, v.FirstHref = pageLinks(path, f, page, !after.IsZero(),
		!before.IsZero())
	v.NewerHref, v.OlderHref = keepLimit(r, v.NewerHref), keepLimit(r, v.OlderHref)
	v.FirstHref = keepLimit(r, v.FirstHref)
	if after.IsZero() && before.IsZero() {
		v.TailURL = href(projectPath(project, "tail"), f.Values())
	}
	v.ExportHref, v.ExportOff = s.exportHref(r.Context(), sc, f)
	return s.render(w, r, http.StatusOK, TracesPage(v))
}

// pageCursors reads the "after" and "before" cursors of a list request;
// at most one may be given.
func pageCursors(r *http.Request) (after, before store.Cursor, err error) {
	q := r.URL.Query()
	if after, err = decodeCursor("after", q.Get("after")); err != nil {
		return store.Cursor{}, store.Cursor{}, err
	}
	if before, err = decodeCursor("before", q.Get("before")); err != nil {
		return store.Cursor{}, store.Cursor{}, err
	}
	if !after.IsZero() && !before.IsZero() {
		return store.Cursor{}, store.Cursor{}, badParam("before", "cannot be combined with after")
	}
	return after, before, nil
}

// listPage reads one page of decisions: older than after, or newer than
// before, or the newest.
func (s *server) listPage(ctx context.Context, sc store.Scope, f filter.Filter, after,
	before store.Cursor, size int) (store.Page, error) {
	if before.IsZero() {
		return s.Store.List(ctx, sc, f, after, size)
	}
	return s.Store.ListNewer(ctx, sc, f, before, size)
}

// pageLinks returns the newer, older and first-page links. A page reached
// with "after" has newer rows above it; one reached with "before" has
// older rows below it and more newer rows when the store says so.
func pageLinks(path string, f filter.Filter, page store.Page, viaAfter,
	viaBefore bool) (newer, older, first string) {
	n := len(page.Rows)
	if n == 0 {
		if viaAfter || viaBefore {
			first = href(path, f.Values())
		}
		return "", "", first
	}
	top := store.Cursor{At: page.Rows[0].OccurredAt, EventID: page.Rows[0].EventID}
	bottom := store.Cursor{At: page.Rows[n-1].OccurredAt, EventID: page.Rows[n-1].EventID}
	switch {
	case viaBefore:
		older = href(path, with(f, "after", encodeCursor(bottom)))
		if page.More {
			newer = href(path, with(f, "before", encodeCursor(top)))
			first = href(path, f.Values())
		}
	case viaAfter:
		newer = href(path, with(f, "before", encodeCursor(top)))
		first = href(path, f.Values())
		if page.More {
			older = href(path, with(f, "after", encodeCursor(bottom)))
		}
	default:
		if page.More {
			older = href(path, with(f, "after", encodeCursor(bottom)))
		}
	}
	return newer, older, first
}

func traceRow(project string, d store.Decision, loc *time.Location, now time.Time) TraceRow {
	row := TraceRow{
		ID: clean(d.EventID, 0), Time: timeView(d.OccurredAt, loc, now),
		Outcome: d.Outcome, Decision: d.Decision, Mode: d.Mode,
		Severity: d.HighestSeverity, EventType: d.EventType,
		Action: clean(d.Action, 40), Source: d.Source,
		Categories: cleanAll(d.ThreatCategories, 40), Policies: cleanAll(d.PolicyIDs, 40),
		User: clean(d.UserID, 40), Agent: clean(d.AgentID, 40),
		Application: clean(d.ApplicationID, 40), Session: clean(d.SessionID, 40),
		Reason: clean(d.Reason, 140), Latency: ms(float64(d.LatencyMS)),
	}
	if validRef(d.EventID) {
		row.Href = projectPath(project, "traces", d.EventID) +
			"?at=" + strconv.FormatInt(d.OccurredAt.UnixMilli(), 10)
	}
	if validRef(d.SessionID) {
		row.SessionHref = projectPath(project, "sessions", d.SessionID)
	}
	if d.MaxScore != nil {
		row.Score = strconv.FormatFloat(float64(*d.MaxScore), 'f', 1, 32)
	}
	return row
}
