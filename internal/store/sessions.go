package store

import (
	"context"
	"fmt"
	"time"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/filter"
)

// Session summarises the decisions of one session of a project that match
// a filter. Session ids are namespaced by project: the scope is part of
// the session's identity.
type Session struct {
	SessionID   string
	Decisions   uint64 // distinct decisions
	Turns       uint64 // distinct conversation turns; Decisions when none recorded
	FirstSeen   time.Time
	LastSeen    time.Time
	Users       []string // up to 5
	Agents      []string // up to 5
	Violations  uint64   // decisions whose policy said deny, enforced or not
	MaxSeverity string
	// Risk is the cumulative risk: the sum of each decision's highest
	// signal score, divided by 100.
	Risk float64
}

// SessionCursor marks a position in the most-recently-active-first order of
// sessions: the last row of the previous page.
type SessionCursor struct {
	LastSeen  time.Time
	SessionID string
}

// IsZero reports whether the cursor is the start of the list.
func (c SessionCursor) IsZero() bool { return c.LastSeen.IsZero() && c.SessionID == "" }

// SessionPage is one page of sessions and the cursor for the next, if any.
type SessionPage struct {
	Rows []Session
	Next SessionCursor
	More bool
}

// MaxSessionPage bounds one page of sessions.
const MaxSessionPage = 200

// Sessions lists the sessions with decisions in the scope that match the
// filter, most recently active first, aggregating only those decisions.
// Redelivered copies are counted once.
func (s *Store) Sessions(ctx context.Context, sc Scope, f filter.Filter, after SessionCursor,
	limit int) (SessionPage, error) {
	if err := sc.check(); err != nil {
		return SessionPage{}, err
	}
	if limit <= 0 || limit > MaxSessionPage {
		limit = MaxSessionPage
	}

	cond, args := where(sc, f)
	having := ""
	if !after.IsZero() {
		ms := uint64(after.LastSeen.UnixMilli())
		having = " HAVING last_ms < ? OR (last_ms = ? AND session_id < ?)"
		args = append(args, ms, ms, after.SessionID)
	}
	q := `SELECT session_id, count() AS decisions,
 uniqExactIf(conversation_turn, isNotNull(conversation_turn)) AS turns,
 min(ts_ms) AS first_ms, max(ts_ms) AS last_ms,
 arraySlice(arrayFilter(x -> x != '', groupUniqArray(user_id)), 1, 5) AS users,
 arraySlice(arrayFilter(x -> x != '', groupUniqArray(agent_id)), 1, 5) AS agents,
 countIf(toString(actual_decision) = 'deny') AS violations,
 max(toInt8(highest_severity)) AS sev,
 sum(ifNull(max_score, 0)) / 100 AS risk
 FROM (SELECT session_id, event_id, conversation_turn,
  toUInt64(occurred_at) * 1000 + occurred_ms AS ts_ms, user_id, agent_id,
  actual_decision, highest_severity, max_score
  FROM ` + s.table() + ` WHERE ` + cond + ` AND session_id != ''
  LIMIT 1 BY event_id)
 GROUP BY session_id` + having + `
 ORDER BY last_ms DESC, session_id DESC
 LIMIT ` + fmt.Sprint(limit+1)

	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return SessionPage{}, fmt.Errorf("list sessions: %w", err)
	}
	defer rows.Close()

	var page SessionPage
	for rows.Next() {
		var r Session
		var first, last uint64
		var sev int8
		if err := rows.Scan(&r.SessionID, &r.Decisions, &r.Turns, &first, &last, &r.Users,
			&r.Agents, &r.Violations, &sev, &r.Risk); err != nil {
			return SessionPage{}, fmt.Errorf("list sessions: %w", err)
		}
		if r.Turns == 0 {
			r.Turns = r.Decisions
		}
		r.FirstSeen = time.UnixMilli(int64(first)).UTC()
		r.LastSeen = time.UnixMilli(int64(last)).UTC()
		if int(sev) >= 1 && int(sev) <= len(events.Severities) {
			r.MaxSeverity = events.Severities[sev-1]
		}
		page.Rows = append(page.Rows, r)
	}
	if err := rows.Err(); err != nil {
		return SessionPage{}, fmt.Errorf("list sessions: %w", err)
	}
	if len(page.Rows) > limit {
		page.Rows = page.Rows[:limit]
		page.More = true
		last := page.Rows[limit-1]
		page.Next = SessionCursor{LastSeen: last.LastSeen, SessionID: last.SessionID}
	}
	return page, nil
}
