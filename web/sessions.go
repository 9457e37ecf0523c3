package web

import (
	"context"
	"net/http"
	"slices"
	"strconv"

	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/store"
)

// SessionPageSize is the number of sessions on one page.
const SessionPageSize = 50

// SessionRow is one session in the list.
type SessionRow struct {
	ID, Href    string
	Turns       string
	Decisions   string
	First, Last TimeView
	Duration    string
	Users       []string
	Agents      []string
	Violations  uint64
	Severity    string
	Risk        string
	RiskShare   float64 // of the riskiest session on the page
}

// SessionsView is the sessions page.
type SessionsView struct {
	Chrome
	Filter    FilterView
	Rows      []SessionRow
	OlderHref string
	FirstHref string
}

func (s *server) sessions(w http.ResponseWriter, r *http.Request) error {
	sc, f, loc, content, err := s.listRequest(r, authz.ViewSession)
	if err != nil {
		return err
	}
	project := sc.Project()
	size, err := s.pageSize(r, sc, SessionPageSize, store.MaxSessionPage)
	if err != nil {
		return err
	}
	after, err := decodeSessionCursor("after", r.URL.Query().Get("after"))
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
	page, err := s.Store.Sessions(ctx, sc, f, after, size)
	if err != nil {
		return err
	}
	done()

	path := projectPath(project, "sessions")
	v := SessionsView{Chrome: s.chrome(r, project),
		Filter: filterView(path, f, loc, content, s.maxRange(sc))}
	v.Section = "sessions"
	v.Filter.Limit = r.URL.Query().Get("limit")
	now := s.Now()
	top := 0.0
	for _, x := range page.Rows {
		top = max(top, x.Risk)
	}
	for _, x := range page.Rows {
		row := SessionRow{ID: clean(x.SessionID, 60), Turns: count(x.Turns),
			Decisions: count(x.Decisions), First: timeView(x.FirstSeen, loc, now),
			Last: timeView(x.LastSeen, loc, now), Duration: duration(x.LastSeen.Sub(x.FirstSeen)),
			Users: cleanAll(x.Users, 40), Agents: cleanAll(x.Agents, 40),
			Violations: x.Violations, Severity: x.MaxSeverity,
			Risk: strconv.FormatFloat(x.Risk, 'f', 2, 64)}
		if top > 0 {
			row.RiskShare = x.Risk / top
		}
		if validRef(x.SessionID) {
			row.Href = href(projectPath(project, "sessions", x.SessionID), rangeOf(f).Values())
		}
		v.Rows = append(v.Rows, row)
	}
	if page.More {
		v.OlderHref = keepLimit(r, href(path, with(f, "after", encodeSessionCursor(page.Next))))
	}
	if !after.IsZero() {
		v.FirstHref = keepLimit(r, href(path, f.Values()))
	}
	return s.render(w, r, http.StatusOK, SessionsPage(v))
}

func rangeOf(f filter.Filter) filter.Filter {
	return filter.Filter{Preset: f.Preset, From: f.From, To: f.To}
}

// TimelineView is the page of one session: its decisions, oldest first.
type TimelineView struct {
	Chrome
	ID         string
	Filter     FilterView
	Rows       []TraceRow
	Truncated  bool // more decisions than one page holds
	Summary    []KV
	TracesHref string
	ListHref   string
}

// timelineLimit bounds the decisions a session page shows; the project's
// tier may bound them further (rows per page).
const timelineLimit = 500

func (s *server) session(w http.ResponseWriter, r *http.Request) error {
	project, id := r.PathValue("project"), r.PathValue("session")
	sc, err := s.authorize(r.Context(), authz.ViewSession, authz.KindSession, project, id)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if !q.Has("range") && !q.Has("from") && !q.Has("to") {
		// The widest look back the tier allows, up to 90 days.
		q.Set("range", presetWithin("90d", s.maxRange(sc)))
	}
	loc := viewerZone(r)
	f, err := filter.Parse(q, s.Now(), loc)
	if err != nil {
		return err
	}
	if err := s.checkRange(sc, f); err != nil {
		return err
	}
	f = rangeOf(f)
	f.SessionID = id
	size, err := s.pageSize(r, sc, timelineLimit, timelineLimit)
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
	page, err := s.Store.List(ctx, sc, f, store.Cursor{}, size)
	if err != nil {
		return err
	}
	done()
	if len(page.Rows) == 0 {
		// A session is known only by its decisions: none in this project
		// is the same answer as a session of another tenant.
		return errNotFound
	}
	slices.Reverse(page.Rows)

	path := projectPath(project, "sessions", id)
	v := TimelineView{Chrome: s.chrome(r, project), ID: clean(id, 0),
		Filter: filterView(path, f, loc, false, s.maxRange(sc)), Truncated: page.More,
		TracesHref: href(projectPath(project, "traces"), with(f, "session", id)),
		ListHref:   projectPath(project, "sessions")}
	v.Section = "sessions"
	now := s.Now()
	var blocked, flagged int
	for _, d := range page.Rows {
		v.Rows = append(v.Rows, traceRow(project, d, loc, now))
		switch d.Outcome {
		case "blocked":
			blocked++
		case "alerted", "monitored":
			flagged++
		}
	}
	first, last := page.Rows[0].OccurredAt, page.Rows[len(page.Rows)-1].OccurredAt
	v.Summary = []KV{
		{Key: "Decisions", Value: strconv.Itoa(len(page.Rows))},
		{Key: "Blocked", Value: strconv.Itoa(blocked)},
		{Key: "Alerted or monitored", Value: strconv.Itoa(flagged)},
		{Key: "First seen", Value: timeView(first, loc, now).Local},
		{Key: "Last seen", Value: timeView(last, loc, now).Local},
		{Key: "Duration", Value: duration(last.Sub(first))},
	}
	return s.render(w, r, http.StatusOK, TimelinePage(v))
}
