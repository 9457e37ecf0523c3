package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/filter"
)

// ErrNotFound is returned when no decision matches within the scope. It is
// the same whether the id exists in another tenant or nowhere.
var ErrNotFound = errors.New("store: not found")

// MaxPageSize bounds one page of a list.
const MaxPageSize = 500

// Decision is the list view of one stored decision.
type Decision struct {
	AccountID        string
	ProjectID        string
	EventID          string
	OccurredAt       time.Time
	Source           string
	EventType        string
	Action           string
	Mode             string
	Decision         string
	Outcome          string
	HighestSeverity  string
	Reason           string
	ApplicationID    string
	TraceID          string
	SessionID        string
	ThreatCategories []string
	PolicyIDs        []string
	Detectors        []string
	MaxScore         *float32
	UserID           string
	AgentID          string
	LatencyMS        float32
}

// Cursor marks a position in the newest-first order: the last row of the
// previous page. The zero Cursor starts at the newest row.
type Cursor struct {
	At      time.Time // occurred_at with milliseconds
	EventID string
}

// IsZero reports whether the cursor is the start of the list.
func (c Cursor) IsZero() bool { return c.At.IsZero() && c.EventID == "" }

// Page is one page of decisions and the cursor for the next, if any.
type Page struct {
	Rows []Decision
	Next Cursor
	More bool
}

const listColumns = `account_id, project_id, event_id, occurred_at, occurred_ms,
 toString(source), toString(event_type), action, toString(mode), toString(decision),
 toString(outcome), toString(highest_severity), reason, application_id, trace_id, session_id,
 threat_categories, policy_ids, detectors, max_score, user_id, agent_id, latency_ms`

// where renders the scope and filter as a WHERE clause with bound args.
// The scope is always its first condition.
func where(sc Scope, f filter.Filter) (string, []any) {
	conds := []string{"account_id = ?", "project_id = ?"}
	args := []any{sc.account, sc.project}
	add := func(cond string, a ...any) {
		conds = append(conds, cond)
		args = append(args, a...)
	}

	if !f.From.IsZero() {
		// occurred_at has whole seconds; the ms column refines both ends.
		from := f.From.UTC()
		add("(occurred_at > ? OR (occurred_at = ? AND occurred_ms >= ?))",
			from.Truncate(time.Second), from.Truncate(time.Second), msOf(from))
	}
	if !f.To.IsZero() {
		to := f.To.UTC()
		add("(occurred_at < ? OR (occurred_at = ? AND occurred_ms < ?))",
			to.Truncate(time.Second), to.Truncate(time.Second), msOf(to))
	}
	inList := func(col string, vals []string) {
		if len(vals) == 0 {
			return
		}
		ph := strings.TrimSuffix(strings.Repeat("?, ", len(vals)), ", ")
		a := make([]any, len(vals))
		for i, v := range vals {
			a[i] = v
		}
		add("toString("+col+") IN ("+ph+")", a...)
	}
	inList("outcome", f.Outcomes)
	inList("decision", f.Decisions)
	inList("mode", f.Modes)
	inList("event_type", f.EventTypes)
	if r := events.SeverityRank(f.MinSeverity); r > 0 {
		add("toInt8(highest_severity) >= ?", int8(r+1))
	}
	if f.MinScore > 0 {
		add("max_score >= ?", float32(f.MinScore))
	}
	eq := []struct{ col, v string }{
		{"user_id", f.UserID}, {"agent_id", f.AgentID}, {"session_id", f.SessionID},
		{"application_id", f.Application}, {"trace_id", f.TraceID},
	}
	for _, e := range eq {
		if e.v != "" {
			add(e.col+" = ?", e.v)
		}
	}
	if f.Category != "" {
		add("has(threat_categories, ?)", f.Category)
	}
	if f.PolicyID != "" {
		add("has(policy_ids, ?)", f.PolicyID)
	}
	if f.Detector != "" {
		add("has(detectors, ?)", f.Detector)
	}
	switch {
	case f.Text != "" && f.ReasonOnly:
		add("positionCaseInsensitiveUTF8(reason, ?) > 0", f.Text)
	case f.Text != "":
		add("(positionCaseInsensitiveUTF8(reason, ?) > 0 OR "+
			"positionCaseInsensitiveUTF8(content_preview, ?) > 0)", f.Text, f.Text)
	}
	return strings.Join(conds, " AND "), args
}

func msOf(t time.Time) uint16 { return uint16(t.Nanosecond() / 1e6) }

// List returns one page of decisions in the scope that match the filter,
// newest first, each event id once. Keyset pagination on (time, event id)
// neither skips nor repeats rows when timestamps tie or new rows arrive.
//
// ClickHouse 18.16 cannot read in key order, and LIMIT BY turns off its
// partial sort: a single query would read and fully sort every column of
// every row in the range. So the page is found in two steps: the keys of
// the page, searched in growing time windows back from the cursor (most
// pages are found in the first hour), then the displayed columns of only
// those rows. A filter on a session or trace is searched in one window:
// its rows are few and close together, wherever they are.
func (s *Store) List(ctx context.Context, sc Scope, f filter.Filter, after Cursor,
	limit int) (Page, error) {
	if err := sc.check(); err != nil {
		return Page{}, err
	}
	if limit <= 0 || limit > MaxPageSize {
		limit = MaxPageSize
	}

	cond, args := where(sc, f)
	anchor := f.To
	if !after.IsZero() {
		at := after.At.UTC()
		sec := at.Truncate(time.Second)
		// The redundant upper bound lets the primary index prune.
		cond += ` AND occurred_at <= ? AND (occurred_at < ? OR (occurred_at = ? AND
 (occurred_ms < ? OR (occurred_ms = ? AND event_id < ?))))`
		args = append(args, sec, sec, sec, msOf(at), msOf(at), after.EventID)
		anchor = at
	}
	keys, err := s.pageKeys(ctx, keySearch{cond: cond, args: args, anchor: anchor,
		bound: f.From, older: true, n: limit + 1, whole: burst(f)})
	if err != nil {
		return Page{}, fmt.Errorf("list decisions: %w", err)
	}

	var page Page
	if len(keys) > limit {
		keys = keys[:limit]
		page.More = true
	}
	if page.Rows, err = s.fetchRows(ctx, sc, keys); err != nil {
		return Page{}, fmt.Errorf("list decisions: %w", err)
	}
	if n := len(page.Rows); n > 0 && page.More {
		last := page.Rows[n-1]
		page.Next = Cursor{At: last.OccurredAt, EventID: last.EventID}
	}
	return page, nil
}

// rowKey is the sort key of one decision row.
type rowKey struct {
	sec int64 // occurred_at, unix seconds
	ms  uint16
	id  string
}

// keySearch is a search for the first n keys, in one direction, of the
// rows matching cond.
type keySearch struct {
	cond   string
	args   []any
	anchor time.Time // where the search starts; zero for now
	bound  time.Time // the filter's far end in the direction, if any
	older  bool      // newest first from the anchor; else oldest first
	n      int
	// whole searches the range in one query, for filters whose rows come
	// in one short burst anywhere in the range (a session, a trace):
	// windows would only chase them with more queries.
	whole bool
}

// burst reports whether the filter selects one session's or trace's rows.
func burst(f filter.Filter) bool { return f.SessionID != "" || f.TraceID != "" }

// keyWindows are the ends of the windows searched in turn, as distances
// from the anchor: each window is six times the span of the one before,
// so a sparse filter costs a few more queries, not a read of more rows.
var keyWindows = []time.Duration{time.Hour, 6 * time.Hour, 36 * time.Hour, 9 * 24 * time.Hour}

// pageKeys returns the keys of the first n distinct decisions of the
// search in its order. The windows split the range on whole seconds and
// redelivered copies share their time, so copies fall in one window and
// LIMIT 1 BY drops them there; ids seen in an earlier window are dropped
// here as well.
func (s *Store) pageKeys(ctx context.Context, ks keySearch) ([]rowKey, error) {
	anchor := ks.anchor
	if anchor.IsZero() {
		anchor = time.Now()
	}
	anchor = anchor.UTC().Truncate(time.Second)
	order := "DESC"
	if !ks.older {
		order = "ASC"
	}
	var keys []rowKey
	seen := map[string]bool{}
	var near time.Duration // the window's end nearest the anchor
	for i := 0; len(keys) < ks.n; i++ {
		cond, args := ks.cond, ks.args
		// The first window is open towards the anchor, the last one away
		// from it; the search's own conditions bound both ends.
		if i > 0 {
			cond, args = windowEdge(cond, args, ks.older, false, anchor, near)
		}
		last := ks.whole || i == len(keyWindows)
		if !last {
			far := keyWindows[i]
			edge := shift(anchor, far, ks.older)
			if !ks.bound.IsZero() && !beyond(edge, ks.bound, ks.older) {
				last = true
			} else {
				cond, args = windowEdge(cond, args, ks.older, true, anchor, far)
			}
			near = far
		}
		found, err := s.windowKeys(ctx, cond, args, order, ks.n-len(keys), seen)
		if err != nil {
			return nil, err
		}
		keys = append(keys, found...)
		if last {
			break
		}
	}
	return keys, nil
}

// shift moves t by d away from the anchor's side: back in time for a
// newest-first search.
func shift(t time.Time, d time.Duration, older bool) time.Time {
	if older {
		return t.Add(-d)
	}
	return t.Add(d)
}

// beyond reports whether edge lies strictly inside the range that ends
// at bound, seen from the anchor.
func beyond(edge, bound time.Time, older bool) bool {
	if older {
		return edge.After(bound)
	}
	return edge.Before(bound)
}

// windowEdge adds one edge of a window d away from the anchor: its far
// edge, or the near edge of a later window. An edge's own second belongs
// to the window on its newer side, so that consecutive windows neither
// overlap nor leave a gap.
func windowEdge(cond string, args []any, older, far bool, anchor time.Time,
	d time.Duration) (string, []any) {
	op := "<"
	if older == far {
		op = ">="
	}
	args = append(slices.Clip(args), shift(anchor, d, older))
	return cond + " AND occurred_at " + op + " ?", args
}

// windowKeys returns up to n keys of distinct decisions in one window
// whose ids are not in seen, and adds them to seen. It asks for more rows
// while ids seen in earlier windows fill the answer.
func (s *Store) windowKeys(ctx context.Context, cond string, args []any, order string, n int,
	seen map[string]bool) ([]rowKey, error) {
	for ask := n; ; {
		q := "SELECT occurred_at, occurred_ms, event_id FROM " + s.table() + " WHERE " + cond +
			" ORDER BY occurred_at " + order + ", occurred_ms " + order + ", event_id " + order +
			fmt.Sprintf(" LIMIT 1 BY event_id LIMIT %d", ask)
		rows, err := s.conn.Query(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		var keys []rowKey
		got := 0
		for rows.Next() {
			var k rowKey
			var sec time.Time
			if err := rows.Scan(&sec, &k.ms, &k.id); err != nil {
				rows.Close()
				return nil, err
			}
			k.sec = sec.Unix()
			got++
			if !seen[k.id] && len(keys) < n {
				keys = append(keys, k)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		if len(keys) == n || got < ask {
			for _, k := range keys {
				seen[k.id] = true
			}
			return keys, nil
		}
		ask += n - len(keys)
	}
}

// fetchRows reads the list columns of the rows with the keys, in the
// keys' order. The keys' time span bounds the read and the ids select the
// rows within it, so only the granules holding the page are read in full.
// A key whose row is gone meanwhile (a tenant deletion) is left out.
func (s *Store) fetchRows(ctx context.Context, sc Scope, keys []rowKey) ([]Decision, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	lo, hi := keys[0].sec, keys[0].sec
	ids := make([]any, len(keys))
	for i, k := range keys {
		lo, hi = min(lo, k.sec), max(hi, k.sec)
		ids[i] = k.id
	}
	q := "SELECT " + listColumns + " FROM " + s.table() +
		" PREWHERE event_id IN (" + strings.TrimSuffix(strings.Repeat("?, ", len(ids)), ", ") +
		") WHERE account_id = ? AND project_id = ? AND occurred_at >= ? AND occurred_at <= ?" +
		" LIMIT 1 BY occurred_at, occurred_ms, event_id"
	args := append(ids, sc.account, sc.project, time.Unix(lo, 0).UTC(), time.Unix(hi, 0).UTC())
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	byKey := make(map[rowKey]Decision, len(keys))
	for rows.Next() {
		d, err := scanDecision(rows)
		if err != nil {
			return nil, err
		}
		byKey[rowKeyOf(d)] = d
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]Decision, 0, len(keys))
	for _, k := range keys {
		if d, ok := byKey[k]; ok {
			out = append(out, d)
		}
	}
	return out, nil
}

func rowKeyOf(d Decision) rowKey {
	return rowKey{sec: d.OccurredAt.Unix(), ms: msOf(d.OccurredAt), id: d.EventID}
}

type scanner interface {
	Scan(dest ...any) error
}

func scanDecision(r scanner) (Decision, error) {
	var d Decision
	var sec time.Time
	var ms uint16
	err := r.Scan(&d.AccountID, &d.ProjectID, &d.EventID, &sec, &ms, &d.Source, &d.EventType,
		&d.Action, &d.Mode, &d.Decision, &d.Outcome, &d.HighestSeverity, &d.Reason,
		&d.ApplicationID, &d.TraceID, &d.SessionID, &d.ThreatCategories, &d.PolicyIDs,
		&d.Detectors, &d.MaxScore, &d.UserID, &d.AgentID, &d.LatencyMS)
	d.OccurredAt = sec.UTC().Add(time.Duration(ms) * time.Millisecond)
	return d, err
}

// Get returns the full event with the id in the scope, or ErrNotFound.
func (s *Store) Get(ctx context.Context, sc Scope, eventID string) (*events.Event, error) {
	if err := sc.check(); err != nil {
		return nil, err
	}
	q := "SELECT raw FROM " + s.table() +
		" WHERE account_id = ? AND project_id = ? AND event_id = ? LIMIT 1"
	var raw string
	err := s.conn.QueryRow(ctx, q, sc.account, sc.project, eventID).Scan(&raw)
	if err != nil {
		if isNoRows(err) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("get decision: %w", err)
	}
	return decodeRaw(raw)
}

// GetNear is Get with a hint of the decision's time, as lists know it.
// The hint bounds the read to one second of the sort key instead of the
// project's whole range; a wrong hint falls back to Get, so it can only
// make a lookup faster, never change its answer.
func (s *Store) GetNear(ctx context.Context, sc Scope, eventID string,
	at time.Time) (*events.Event, error) {
	if err := sc.check(); err != nil {
		return nil, err
	}
	q := "SELECT raw FROM " + s.table() + " WHERE account_id = ? AND project_id = ?" +
		" AND occurred_at = ? AND event_id = ? LIMIT 1"
	var raw string
	err := s.conn.QueryRow(ctx, q, sc.account, sc.project, at.UTC().Truncate(time.Second),
		eventID).Scan(&raw)
	switch {
	case isNoRows(err):
		return s.Get(ctx, sc, eventID)
	case err != nil:
		return nil, fmt.Errorf("get decision: %w", err)
	}
	return decodeRaw(raw)
}

func decodeRaw(raw string) (*events.Event, error) {
	var ev events.Event
	if err := json.Unmarshal([]byte(raw), &ev); err != nil {
		return nil, fmt.Errorf("decode stored event: %w", err)
	}
	ev.OccurredAt = ev.OccurredAt.UTC()
	if ev.Outcome == "" {
		ev.Outcome = events.DeriveOutcome(ev.Mode, ev.Decision, ev.ActualDecision)
	}
	ev.Raw = []byte(raw)
	return &ev, nil
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// Count returns how many distinct decisions in the scope match the filter.
func (s *Store) Count(ctx context.Context, sc Scope, f filter.Filter) (uint64, error) {
	if err := sc.check(); err != nil {
		return 0, err
	}
	cond, args := where(sc, f)
	var n uint64
	q := "SELECT uniqExact(event_id) FROM " + s.table() + " WHERE " + cond
	if err := s.conn.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count decisions: %w", err)
	}
	return n, nil
}
