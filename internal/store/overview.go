package store

import (
	"context"
	"fmt"
	"time"

	"github.com/guardwatch/observatory/internal/filter"
)

// OutcomeBucket counts distinct decisions per outcome in one time bucket.
type OutcomeBucket struct {
	Start  time.Time
	Counts map[string]uint64 // outcome -> decisions
}

// MaxBuckets bounds the buckets of one OutcomeSeries call.
const MaxBuckets = 500

// OutcomeSeries counts the decisions in the scope that match the filter
// per outcome and per step-long bucket, oldest bucket first. Buckets
// without decisions are left out. The filter must have a time range that
// spans at most MaxBuckets steps.
func (s *Store) OutcomeSeries(ctx context.Context, sc Scope, f filter.Filter,
	step time.Duration) ([]OutcomeBucket, error) {
	if err := sc.check(); err != nil {
		return nil, err
	}
	sec := int64(step / time.Second)
	if sec <= 0 || f.From.IsZero() || f.To.IsZero() ||
		f.To.Sub(f.From)/step > MaxBuckets {
		return nil, fmt.Errorf("outcome series: step %s and range %s..%s give too many buckets",
			step, f.From, f.To)
	}

	cond, args := where(sc, f)
	q := fmt.Sprintf(`SELECT intDiv(toUInt32(occurred_at), %d) * %d AS b,
 toString(outcome) AS o, uniqExact(event_id)
 FROM %s WHERE %s GROUP BY b, o ORDER BY b`, sec, sec, s.table(), cond)
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("outcome series: %w", err)
	}
	defer rows.Close()

	var out []OutcomeBucket
	for rows.Next() {
		var b uint64
		var outcome string
		var n uint64
		if err := rows.Scan(&b, &outcome, &n); err != nil {
			return nil, fmt.Errorf("outcome series: %w", err)
		}
		start := time.Unix(int64(b), 0).UTC()
		if len(out) == 0 || !out[len(out)-1].Start.Equal(start) {
			out = append(out, OutcomeBucket{Start: start, Counts: map[string]uint64{}})
		}
		out[len(out)-1].Counts[outcome] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outcome series: %w", err)
	}
	return out, nil
}

// Latency is the guard latency of the decisions that match a filter.
type Latency struct {
	Decisions uint64
	P50MS     float64
	P95MS     float64
}

// LatencyQuantiles returns the median and 95th percentile of the guard's
// total latency over the decisions in the scope that match the filter,
// counting each event id once.
func (s *Store) LatencyQuantiles(ctx context.Context, sc Scope, f filter.Filter) (Latency,
	error) {
	if err := sc.check(); err != nil {
		return Latency{}, err
	}
	cond, args := where(sc, f)
	q := `SELECT count(), quantiles(0.5, 0.95)(latency_ms)
 FROM (SELECT latency_ms FROM ` + s.table() + ` WHERE ` + cond + ` LIMIT 1 BY event_id)`
	var l Latency
	var qs []float32
	if err := s.conn.QueryRow(ctx, q, args...).Scan(&l.Decisions, &qs); err != nil {
		return Latency{}, fmt.Errorf("latency quantiles: %w", err)
	}
	if l.Decisions > 0 && len(qs) == 2 {
		l.P50MS, l.P95MS = float64(qs[0]), float64(qs[1])
	}
	return l, nil
}
