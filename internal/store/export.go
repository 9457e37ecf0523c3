package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/guardwatch/observatory/internal/filter"
)

// ErrExportRange is returned by Export for a filter without both ends of
// its time range.
var ErrExportRange = errors.New("store: an export needs a time range with from and to")

// DefaultExportWindowRows is the default for ExportQuery.WindowRows.
const DefaultExportWindowRows = 50_000

// exportBlockRows caps the rows of one block that ClickHouse sends, so the
// client holds a few MB of a result at a time however long it is.
const exportBlockRows = 1024

// ExportQuery says which decisions an export reads.
type ExportQuery struct {
	// Filter selects the decisions; its From and To are required. The
	// range is half-open: From inclusive, To exclusive.
	Filter filter.Filter
	// StoredBy is the export's upper bound in unix milliseconds: only
	// copies stored with ingested_at <= StoredBy are read, so rows that
	// arrive while the export runs are left out. Zero means no bound.
	StoredBy uint64
	// WindowRows caps the rows ClickHouse sorts in one query; the range is
	// read in consecutive time windows of at most about this many rows.
	// Default DefaultExportWindowRows.
	WindowRows int
}

// ExportRow is one decision of an export: its id and the event JSON as
// stored.
type ExportRow struct {
	EventID string
	Raw     string
}

// Export streams the decisions of the scope that match the query to fn, in
// the order (occurred_at, occurred_ms, event_id) ascending, each event id
// once. It holds a bounded amount of memory whatever the number of rows:
// the range is cut into time windows of at most WindowRows rows each
// (single seconds holding more are read whole), and each window is read in
// blocks. The row passed to fn is reused; fn must not keep it. An error of
// fn stops the export and is returned as is.
//
// Copies of one event share occurred_at, so the windows never split them.
func (s *Store) Export(ctx context.Context, sc Scope, q ExportQuery,
	fn func(*ExportRow) error) error {
	if err := sc.check(); err != nil {
		return err
	}
	if q.Filter.From.IsZero() || q.Filter.To.IsZero() {
		return ErrExportRange
	}
	if q.WindowRows <= 0 {
		q.WindowRows = DefaultExportWindowRows
	}
	windows, err := s.exportWindows(ctx, sc, q)
	if err != nil {
		return err
	}
	ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{
		"max_block_size": exportBlockRows,
	}))
	// The next window's query runs while this one is read: ClickHouse
	// sorts a window before its first row leaves, and this way the sort
	// overlaps the reading instead of stalling it.
	var row ExportRow
	var next *windowRows
	defer func() {
		if next != nil {
			next.close()
		}
	}()
	for i, w := range windows {
		cur := next
		if cur == nil {
			cur = s.openWindow(ctx, sc, q, w)
		}
		next = nil
		if i+1 < len(windows) {
			next = s.openWindow(ctx, sc, q, windows[i+1])
		}
		if err := cur.each(&row, fn); err != nil {
			return err
		}
	}
	return nil
}

// exportCond is the scope, filter and upper bound of an export.
func exportCond(sc Scope, q ExportQuery) (string, []any) {
	cond, args := where(sc, q.Filter)
	if q.StoredBy > 0 {
		cond += " AND ingested_at <= ?"
		args = append(args, q.StoredBy)
	}
	return cond, args
}

// windowRows is the open result of one window, or the error opening it.
type windowRows struct {
	w    window
	rows driver.Rows
	err  error
}

func (s *Store) openWindow(ctx context.Context, sc Scope, q ExportQuery, w window) *windowRows {
	cond, args := exportCond(sc, q)
	cond += " AND occurred_at >= ? AND occurred_at < ?"
	args = append(args, w.start, w.end)
	// Among copies of one event the first stored one is kept.
	query := "SELECT event_id, raw FROM " + s.table() +
		" WHERE " + cond +
		" ORDER BY occurred_at, occurred_ms, event_id, ingested_at LIMIT 1 BY event_id"
	rows, err := s.conn.Query(ctx, query, args...)
	return &windowRows{w: w, rows: rows, err: err}
}

func (wr *windowRows) close() {
	if wr.rows != nil {
		wr.rows.Close()
	}
}

// each passes every row of the window to fn and closes the result.
func (wr *windowRows) each(row *ExportRow, fn func(*ExportRow) error) error {
	defer wr.close()
	if wr.err != nil {
		return fmt.Errorf("export decisions %s..%s: %w", wr.w.start, wr.w.end, wr.err)
	}
	for wr.rows.Next() {
		if err := wr.rows.Scan(&row.EventID, &row.Raw); err != nil {
			return fmt.Errorf("export decisions %s..%s: %w", wr.w.start, wr.w.end, err)
		}
		if err := fn(row); err != nil {
			return err
		}
	}
	if err := wr.rows.Err(); err != nil {
		return fmt.Errorf("export decisions %s..%s: %w", wr.w.start, wr.w.end, err)
	}
	return nil
}

// window is a half-open range of whole seconds of occurred_at.
type window struct{ start, end time.Time }

// bucketSteps are the bucket lengths in seconds the planner counts rows
// in, coarsest first: hours, then minutes and seconds inside the buckets
// that hold more rows than one window may.
var bucketSteps = []int64{3600, 60, 1}

type bucket struct {
	start int64 // unix seconds
	rows  uint64
}

// exportWindows cuts the export's range into consecutive windows of at
// most q.WindowRows rows, from counts of the matching rows per bucket.
func (s *Store) exportWindows(ctx context.Context, sc Scope, q ExportQuery) ([]window,
	error) {
	limit := uint64(q.WindowRows)
	var out []window
	var cur window
	var curRows uint64
	emit := func(start, step int64, rows uint64) {
		end := time.Unix(start+step, 0).UTC()
		if !cur.start.IsZero() && curRows+rows <= limit {
			cur.end, curRows = end, curRows+rows
			return
		}
		if !cur.start.IsZero() {
			out = append(out, cur)
		}
		cur, curRows = window{start: time.Unix(start, 0).UTC(), end: end}, rows
	}
	if err := s.walkBuckets(ctx, sc, q, 0, nil, limit, emit); err != nil {
		return nil, err
	}
	if !cur.start.IsZero() {
		out = append(out, cur)
	}
	return out, nil
}

// walkBuckets counts rows per bucket of bucketSteps[level] inside the
// parent bucket (nil: the whole range) and hands each to emit in time
// order, descending into the buckets that hold more than limit rows.
func (s *Store) walkBuckets(ctx context.Context, sc Scope, q ExportQuery, level int,
	parent *window, limit uint64, emit func(start, step int64, rows uint64)) error {
	step := bucketSteps[level]
	buckets, err := s.countBuckets(ctx, sc, q, step, parent)
	if err != nil {
		return err
	}
	for _, b := range buckets {
		if b.rows <= limit || level == len(bucketSteps)-1 {
			emit(b.start, step, b.rows)
			continue
		}
		in := &window{start: time.Unix(b.start, 0).UTC(), end: time.Unix(b.start+step, 0).UTC()}
		if err := s.walkBuckets(ctx, sc, q, level+1, in, limit, emit); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) countBuckets(ctx context.Context, sc Scope, q ExportQuery, step int64,
	parent *window) ([]bucket, error) {
	cond, args := exportCond(sc, q)
	if parent != nil {
		cond += " AND occurred_at >= ? AND occurred_at < ?"
		args = append(args, parent.start, parent.end)
	}
	query := fmt.Sprintf(`SELECT intDiv(toUInt32(occurred_at), %d) * %d AS b, count()
 FROM %s WHERE %s GROUP BY b ORDER BY b`, step, step, s.table(), cond)
	rows, err := s.conn.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("plan export windows: %w", err)
	}
	defer rows.Close()
	var out []bucket
	for rows.Next() {
		var b uint64
		var n uint64
		if err := rows.Scan(&b, &n); err != nil {
			return nil, fmt.Errorf("plan export windows: %w", err)
		}
		out = append(out, bucket{start: int64(b), rows: n})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("plan export windows: %w", err)
	}
	return out, nil
}
