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
// row, to pass to ListNewer again. Like List, it searches the keys in
// growing windows, forward in time from the cursor.
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
	keys, err := s.pageKeys(ctx, keySearch{cond: cond, args: args, anchor: at, bound: f.To,
		older: false, n: limit + 1, whole: burst(f)})
	if err != nil {
		return Page{}, fmt.Errorf("list newer decisions: %w", err)
	}

	var page Page
	if len(keys) > limit {
		keys = keys[:limit]
		page.More = true
	}
	if page.Rows, err = s.fetchRows(ctx, sc, keys); err != nil {
		return Page{}, fmt.Errorf("list newer decisions: %w", err)
	}
	slices.Reverse(page.Rows)
	if page.More && len(page.Rows) > 0 {
		first := page.Rows[0]
		page.Next = Cursor{At: first.OccurredAt, EventID: first.EventID}
	}
	return page, nil
}
