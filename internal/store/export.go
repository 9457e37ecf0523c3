package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/ch-go/proto"

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

// ExportBlock is a run of consecutive rows of an export, column by column
// as ClickHouse sent them: the rows share two buffers and cost no
// allocation each. It is valid only during the call that receives it.
type ExportBlock struct {
	ids, raws proto.ColStr
}

// Rows is the number of rows in the block.
func (b *ExportBlock) Rows() int { return b.raws.Rows() }

// EventID is the id of row i.
func (b *ExportBlock) EventID(i int) []byte { return b.ids.RowBytes(i) }

// Raw is the event JSON of row i as stored.
func (b *ExportBlock) Raw(i int) []byte { return b.raws.RowBytes(i) }

// Export streams the decisions of the scope that match the query to fn, in
// the order (occurred_at, occurred_ms, event_id) ascending, each event id
// once, a block of rows at a time. It holds a bounded amount of memory
// whatever the number of rows: the range is cut into time windows of at
// most WindowRows rows each (single seconds holding more are read whole),
// and each window is read in blocks of at most exportBlockRows rows whose
// buffers are reused. fn must not keep the block or its bytes. An error of
// fn stops the export and is returned as is.
//
// Copies of one event share occurred_at, so the windows never split them.
func (s *Store) Export(ctx context.Context, sc Scope, q ExportQuery,
	fn func(*ExportBlock) error) error {
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
	if err != nil || len(windows) == 0 {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Two connections take turns: the next window's query runs on one
	// while this one's rows are read from the other. ClickHouse sorts a
	// window before its first row leaves, and this way the sort overlaps
	// the reading instead of stalling it.
	var conns [2]*exportConn
	defer func() {
		cancel()
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
	}()
	for i := range min(len(windows), len(conns)) {
		if conns[i], err = s.dialExport(ctx); err != nil {
			return err
		}
	}
	open := func(i int) (*windowRead, error) {
		body, err := s.windowQuery(sc, q, windows[i])
		if err != nil {
			return nil, err
		}
		return conns[i%len(conns)].start(ctx, windows[i], body), nil
	}
	next, err := open(0)
	if err != nil {
		return err
	}
	for i := range windows {
		cur := next
		next = nil
		if i+1 < len(windows) {
			if next, err = open(i + 1); err != nil {
				return err
			}
		}
		if err := cur.each(fn); err != nil {
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

// exportConn is an export's connection with the two blocks its reads
// alternate between: one is decoded into while fn reads the other.
type exportConn struct {
	nc    *nativeConn
	dec   ExportBlock       // decoded into
	spare chan *ExportBlock // holds the other block while fn does not
	done  chan struct{}     // closed when the last read has returned
}

func (s *Store) dialExport(ctx context.Context) (*exportConn, error) {
	nc, err := dialNative(ctx, s.cfg, s.db)
	if err != nil {
		return nil, fmt.Errorf("export decisions: connect to clickhouse %s: %w", s.cfg.Addr, err)
	}
	c := &exportConn{nc: nc, spare: make(chan *ExportBlock, 1), done: make(chan struct{})}
	c.spare <- &ExportBlock{}
	close(c.done)
	return c, nil
}

// close waits for the connection's read to end and closes it.
func (c *exportConn) close() {
	<-c.done
	c.nc.close()
}

// windowRead is the running query of one window.
type windowRead struct {
	w      window
	c      *exportConn
	blocks chan *ExportBlock
	err    error // the query's error, set before blocks is closed
}

// start runs a window's query in the background once the connection's
// previous read has ended, handing each block over in blocks.
func (c *exportConn) start(ctx context.Context, w window, body string) *windowRead {
	prev := c.done
	done := make(chan struct{})
	c.done = done
	wr := &windowRead{w: w, c: c, blocks: make(chan *ExportBlock)}
	go func() {
		defer close(done)
		defer close(wr.blocks)
		<-prev
		var seen lastID
		wr.err = c.nc.query(ctx, body, &c.dec, func() error {
			if c.dec.dropRepeats(&seen); c.dec.Rows() == 0 {
				return nil
			}
			var out *ExportBlock
			select {
			case out = <-c.spare:
			case <-ctx.Done():
				return ctx.Err()
			}
			// The filled buffers go out; the spare ones are decoded into
			// next.
			c.dec, *out = *out, c.dec
			select {
			case wr.blocks <- out:
				return nil
			case <-ctx.Done():
				c.spare <- out
				return ctx.Err()
			}
		})
	}()
	return wr
}

// each passes every block of the window to fn.
func (wr *windowRead) each(fn func(*ExportBlock) error) error {
	for b := range wr.blocks {
		err := fn(b)
		wr.c.spare <- b
		if err != nil {
			return err
		}
	}
	if wr.err != nil {
		return fmt.Errorf("export decisions %s..%s: %w", wr.w.start, wr.w.end, wr.err)
	}
	return nil
}

// windowQuery is the query text of one window, its values written in.
func (s *Store) windowQuery(sc Scope, q ExportQuery, w window) (string, error) {
	cond, args := exportCond(sc, q)
	cond += " AND occurred_at >= ? AND occurred_at < ?"
	args = append(args, w.start, w.end)
	cond, err := bindLiterals(cond, args)
	if err != nil {
		return "", fmt.Errorf("export decisions: %w", err)
	}
	// Copies of one event come one after the other, the first stored
	// first; dropRepeats keeps that one, as LIMIT 1 BY event_id would
	// without making the server copy every row once more. The block size
	// is a SETTINGS clause, which every server version reads the same way.
	return "SELECT event_id, raw FROM " + s.table() + " WHERE " + cond +
		" ORDER BY occurred_at, occurred_ms, event_id, ingested_at" +
		" SETTINGS max_block_size = " + strconv.Itoa(exportBlockRows), nil
}

// lastID is the event id of the last row kept so far.
type lastID struct {
	id  []byte
	set bool
}

// dropRepeats removes each row whose event id is that of the row kept
// before it: in the export's order, the copies of a redelivered event
// after its first stored one. Copies share their event's time, so they
// never straddle two windows.
func (b *ExportBlock) dropRepeats(last *lastID) {
	n := 0
	for i := range b.Rows() {
		id := b.EventID(i)
		if last.set && bytes.Equal(id, last.id) {
			continue
		}
		last.id, last.set = append(last.id[:0], id...), true
		b.ids.Pos[n], b.raws.Pos[n] = b.ids.Pos[i], b.raws.Pos[i]
		n++
	}
	b.ids.Pos, b.raws.Pos = b.ids.Pos[:n], b.raws.Pos[:n]
}

// bindLiterals replaces each ? of cond with its argument written as a
// ClickHouse literal, as clickhouse-go binds them: cond holds no other ?.
// Strings are quoted with \, ' and NUL escaped.
func bindLiterals(cond string, args []any) (string, error) {
	var b strings.Builder
	for i, a := range args {
		q := strings.IndexByte(cond, '?')
		if q < 0 {
			return "", fmt.Errorf("bind: %d arguments for %d placeholders", len(args), i)
		}
		b.WriteString(cond[:q])
		cond = cond[q+1:]
		switch v := a.(type) {
		case string:
			b.WriteByte('\'')
			b.WriteString(literalQuoter.Replace(v))
			b.WriteByte('\'')
		case time.Time:
			b.WriteString(v.UTC().Format("toDateTime('2006-01-02 15:04:05', 'UTC')"))
		case int8:
			b.WriteString(strconv.FormatInt(int64(v), 10))
		case uint16:
			b.WriteString(strconv.FormatUint(uint64(v), 10))
		case uint64:
			b.WriteString(strconv.FormatUint(v, 10))
		case float32:
			b.WriteString("toFloat32(" + strconv.FormatFloat(float64(v), 'g', -1, 32) + ")")
		default:
			return "", fmt.Errorf("bind: argument %d has unsupported type %T", i, a)
		}
	}
	if strings.IndexByte(cond, '?') >= 0 {
		return "", fmt.Errorf("bind: %d arguments for more placeholders", len(args))
	}
	b.WriteString(cond)
	return b.String(), nil
}

var literalQuoter = strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\x00", `\0`)

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
