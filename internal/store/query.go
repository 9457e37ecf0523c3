package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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
func (s *Store) List(ctx context.Context, sc Scope, f filter.Filter, after Cursor,
	limit int) (Page, error) {
	if err := sc.check(); err != nil {
		return Page{}, err
	}
	if limit <= 0 || limit > MaxPageSize {
		limit = MaxPageSize
	}

	cond, args := where(sc, f)
	if !after.IsZero() {
		at := after.At.UTC()
		sec := at.Truncate(time.Second)
		// The redundant upper bound lets the primary index prune.
		cond += ` AND occurred_at <= ? AND (occurred_at < ? OR (occurred_at = ? AND
 (occurred_ms < ? OR (occurred_ms = ? AND event_id < ?))))`
		args = append(args, sec, sec, sec, msOf(at), msOf(at), after.EventID)
	}
	q := "SELECT " + listColumns + " FROM " + s.table() + " WHERE " + cond +
		" ORDER BY occurred_at DESC, occurred_ms DESC, event_id DESC" +
		fmt.Sprintf(" LIMIT 1 BY event_id LIMIT %d", limit+1)

	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return Page{}, fmt.Errorf("list decisions: %w", err)
	}
	defer rows.Close()

	var page Page
	for rows.Next() {
		d, err := scanDecision(rows)
		if err != nil {
			return Page{}, fmt.Errorf("list decisions: %w", err)
		}
		page.Rows = append(page.Rows, d)
	}
	if err := rows.Err(); err != nil {
		return Page{}, fmt.Errorf("list decisions: %w", err)
	}
	if len(page.Rows) > limit {
		page.Rows = page.Rows[:limit]
		page.More = true
	}
	if n := len(page.Rows); n > 0 && page.More {
		last := page.Rows[n-1]
		page.Next = Cursor{At: last.OccurredAt, EventID: last.EventID}
	}
	return page, nil
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
