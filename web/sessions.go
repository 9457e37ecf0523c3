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
	after, err := decodeSessionCursor("after", r.URL.Query().Get("after"))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.QueryTimeout)
	defer cancel()
	page, err := s.Store.Sessions(ctx, sc, f, after, SessionPageSize)
	if err != nil {
		return err
	}

	path := projectPath(project, "sessions")
	v := SessionsView{Chrome: s.chrome(r, project), Filter: filterView(path, f, loc, content)}
	v.Section = "sessions"
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
		v.OlderHref = href(path, with(f, "after", encodeSessionCursor(page.Next)))
	}
	if !after.IsZero() {
		v.FirstHref = href(path, f.Values())
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

// timelineLimit bounds the decisions a session page shows.
const timelineLimit = 500

func (s *server) session(w http.ResponseWriter, r *http.Request) error {
	project, id := r.PathValue("project"), r.PathValue("session")
	sc, err := s.authorize(r.Context(), authz.ViewSession, authz.KindSession, project, id)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if !q.Has("range") && !q.Has("from") {
		q.Set("range", "90d")
	}
	f, err := filter.Parse(q, s.Now(), viewerZone(r))
	if err != nil {
		return err
	}
	loc := viewerZone(r)
	f = rangeOf(f)
	f.SessionID = id

	ctx, cancel := context.WithTimeout(r.Context(), s.QueryTimeout)
	defer cancel()
	page, err := s.Store.List(ctx, sc, f, store.Cursor{}, timelineLimit)
	if err != nil {
		return err
	}
	if len(page.Rows) == 0 {
		// A session is known only by its decisions: none in this project
		// is the same answer as a session of another tenant.
		return errNotFound
	}
	slices.Reverse(page.Rows)

	path := projectPath(project, "sessions", id)
	v := TimelineView{Chrome: s.chrome(r, project), ID: clean(id, 0),
		Filter: filterView(path, f, loc, false), Truncated: page.More,
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
