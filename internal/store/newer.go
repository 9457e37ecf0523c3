package store

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/guardwatch/observatory/internal/filter"
)

// ListNewer returns the page of decisions just newer than before, newest
// first, each event id once: the page a "newer" link shows when the
// viewer steps back towards the head of the list. More reports whether
// still newer rows exist; Next is then the cursor of the page's first
// row, to pass to ListNewer again.
func (s *Store) ListNewer(ctx context.Context, sc Scope, f filter.Filter, before Cursor,
	limit int) (Page, error) {
	if err := sc.check(); err != nil {
		return Page{}, err
	}
	if before.IsZero() {
		return s.List(ctx, sc, f, Cursor{}, limit)
	}
	if limit <= 0 || limit > MaxPageSize {
		limit = MaxPageSize
	}

	cond, args := where(sc, f)
	at := before.At.UTC()
	sec := at.Truncate(time.Second)
	// The redundant lower bound lets the primary index prune.
	cond += ` AND occurred_at >= ? AND (occurred_at > ? OR (occurred_at = ? AND
 (occurred_ms > ? OR (occurred_ms = ? AND event_id > ?))))`
	args = append(args, sec, sec, sec, msOf(at), msOf(at), before.EventID)
	q := "SELECT " + listColumns + " FROM " + s.table() + " WHERE " + cond +
		" ORDER BY occurred_at ASC, occurred_ms ASC, event_id ASC" +
		fmt.Sprintf(" LIMIT 1 BY event_id LIMIT %d", limit+1)

	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return Page{}, fmt.Errorf("list newer decisions: %w", err)
	}
	defer rows.Close()

	var page Page
	for rows.Next() {
		d, err := scanDecision(rows)
		if err != nil {
			return Page{}, fmt.Errorf("list newer decisions: %w", err)
		}
		page.Rows = append(page.Rows, d)
	}
	if err := rows.Err(); err != nil {
		return Page{}, fmt.Errorf("list newer decisions: %w", err)
	}
	if len(page.Rows) > limit {
		page.Rows = page.Rows[:limit]
		page.More = true
	}
	slices.Reverse(page.Rows)
	if page.More {
		first := page.Rows[0]
		page.Next = Cursor{At: first.OccurredAt, EventID: first.EventID}
	}
	return page, nil
}
