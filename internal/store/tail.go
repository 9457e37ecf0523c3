package store

import (
	"context"
	"fmt"
	"time"

	"github.com/guardwatch/observatory/internal/filter"
)

// Arrival is a decision and the time ClickHouse stored it.
type Arrival struct {
	Decision
	IngestedAt uint64 // unix milliseconds
}

// MaxArrivals bounds one Arrivals call.
const MaxArrivals = 200

// Arrivals returns decisions of the scope that match the filter and were
// stored after sinceMS (unix milliseconds), in order of arrival, each event
// id once. A decision that already had a copy stored at or before sinceMS
// is a redelivery and left out, so a live tail opened at sinceMS shows
// only decisions that are new to the viewer. The filter's time range
// bounds the read as in List.
func (s *Store) Arrivals(ctx context.Context, sc Scope, f filter.Filter, sinceMS uint64,
	limit int) ([]Arrival, error) {
	if err := sc.check(); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > MaxArrivals {
		limit = MaxArrivals
	}

	cond, args := where(sc, f)
	q := "SELECT " + listColumns + ", ingested_at FROM " + s.table() + " WHERE " + cond +
		" AND ingested_at > ? ORDER BY ingested_at, occurred_at, occurred_ms, event_id" +
		fmt.Sprintf(" LIMIT 1 BY event_id LIMIT %d", limit)
	args = append(args, sinceMS)
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list arrivals: %w", err)
	}
	defer rows.Close()

	var out []Arrival
	for rows.Next() {
		var a Arrival
		if a.Decision, err = scanDecision(arrivalScanner{rows, &a.IngestedAt}); err != nil {
			return nil, fmt.Errorf("list arrivals: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list arrivals: %w", err)
	}
	if len(out) == 0 {
		return nil, nil
	}

	seen, err := s.storedBefore(ctx, sc, out, sinceMS)
	if err != nil {
		return nil, err
	}
	fresh := out[:0]
	for _, a := range out {
		if !seen[a.EventID] {
			fresh = append(fresh, a)
		}
	}
	return fresh, nil
}

// arrivalScanner appends the ingested_at destination to scanDecision's.
type arrivalScanner struct {
	r   scanner
	dst *uint64
}

func (a arrivalScanner) Scan(dest ...any) error { return a.r.Scan(append(dest, a.dst)...) }

// storedBefore reports which of the arrivals' event ids had a copy stored
// at or before sinceMS. Copies share occurred_at, which bounds the read.
func (s *Store) storedBefore(ctx context.Context, sc Scope, as []Arrival,
	sinceMS uint64) (map[string]bool, error) {
	ids := make([]string, len(as))
	lo, hi := as[0].OccurredAt, as[0].OccurredAt
	for i, a := range as {
		ids[i] = a.EventID
		lo, hi = minTime(lo, a.OccurredAt), maxTime(hi, a.OccurredAt)
	}
	q := "SELECT DISTINCT event_id FROM " + s.table() +
		" WHERE account_id = ? AND project_id = ? AND occurred_at >= ? AND occurred_at <= ?" +
		" AND has(?, event_id) AND ingested_at <= ?"
	rows, err := s.conn.Query(ctx, q, sc.account, sc.project,
		lo.Truncate(time.Second), hi.Truncate(time.Second), ids, sinceMS)
	if err != nil {
		return nil, fmt.Errorf("check redelivered arrivals: %w", err)
	}
	defer rows.Close()

	seen := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("check redelivered arrivals: %w", err)
		}
		seen[id] = true
	}
	return seen, rows.Err()
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
