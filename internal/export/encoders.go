package export

import (
	"fmt"
	"io"
	"slices"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/snappy"
	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"
)

// Row groups of Parquet files end at whichever comes first; the writer
// holds one row group in memory. Variables so tests can make them small.
var (
	rowGroupRows  = 16_384
	rowGroupBytes = 16 << 20 // of stored event JSON, a proxy for the group's size
)

// csvEncoder writes CSV: a header row, then one row per decision.
type csvEncoder struct {
	out      io.Writer
	previews bool
}

func newCSVEncoder(out io.Writer, previews bool) (*csvEncoder, error) {
	header, err := csvHeader()
	if err != nil {
		return nil, err
	}
	if _, err := out.Write(header); err != nil {
		return nil, fmt.Errorf("write csv header: %w", err)
	}
	return &csvEncoder{out: out, previews: previews}, nil
}

func (e *csvEncoder) encode(c *chunk, ws *workerState) error {
	ws.fl.previews = e.previews
	r := &ws.row
	for i, raw := range c.raws {
		ws.fl.arena = ws.fl.arena[:0] // the previous row is written
		if err := ws.fl.flatten(validUTF8(raw), r); err != nil {
			return fmt.Errorf("event %s: %w", c.ids[i], err)
		}
		c.out = appendCSVRecord(c.out, r, &ws.tmp)
	}
	*r = flatRow{} // no references into the chunk once it is written
	return nil
}

func (e *csvEncoder) write(c *chunk) error {
	_, err := e.out.Write(c.out)
	return err
}

func (e *csvEncoder) close() error { return nil }

// ndjsonEncoder writes one stored event per line, compacted.
type ndjsonEncoder struct {
	out      io.Writer
	previews bool
}

func (e *ndjsonEncoder) encode(c *chunk, _ *workerState) error {
	var err error
	for i, raw := range c.raws {
		if c.out, err = appendLine(c.out, raw, e.previews); err != nil {
			return fmt.Errorf("event %s: %w", c.ids[i], err)
		}
	}
	return nil
}

func (e *ndjsonEncoder) write(c *chunk) error {
	_, err := e.out.Write(c.out)
	return err
}

func (e *ndjsonEncoder) close() error { return nil }

// parquetEncoder writes a Parquet file of flat rows, Snappy-compressed,
// ending each row group at rowGroupRows rows or rowGroupBytes of input.
type parquetEncoder struct {
	pw       *parquet.GenericWriter[flatRow]
	previews bool
	rows     int // in the open row group
	bytes    int
}

func newParquetEncoder(out io.Writer, previews bool, meta map[string]string) *parquetEncoder {
	opts := []parquet.WriterOption{
		parquet.Compression(fastSnappy{}),
		parquet.CreatedBy("guardwatch observatory", "1", ""),
	}
	for k, v := range meta {
		opts = append(opts, parquet.KeyValueMetadata(k, v))
	}
	return &parquetEncoder{pw: parquet.NewGenericWriter[flatRow](out, opts...),
		previews: previews}
}

func (e *parquetEncoder) encode(c *chunk, ws *workerState) error {
	c.rows = slices.Grow(c.rows[:0], len(c.raws))[:len(c.raws)]
	ws.fl.previews = e.previews
	// The rows' text stays in the chunk until it is written.
	ws.fl.arena = c.text[:0]
	defer func() { c.text, ws.fl.arena = ws.fl.arena, nil }()
	for i, raw := range c.raws {
		if err := ws.fl.flatten(validUTF8(raw), &c.rows[i]); err != nil {
			return fmt.Errorf("event %s: %w", c.ids[i], err)
		}
	}
	return nil
}

func (e *parquetEncoder) write(c *chunk) error {
	if _, err := e.pw.Write(c.rows); err != nil {
		return fmt.Errorf("write parquet rows: %w", err)
	}
	e.rows += len(c.raws)
	for _, raw := range c.raws {
		e.bytes += len(raw)
	}
	if e.rows >= rowGroupRows || e.bytes >= rowGroupBytes {
		e.rows, e.bytes = 0, 0
		if err := e.pw.Flush(); err != nil {
			return fmt.Errorf("flush parquet row group: %w", err)
		}
	}
	return nil
}

func (e *parquetEncoder) close() error { return e.pw.Close() }

// fastSnappy is Parquet's SNAPPY codec with the fast encoder: its output
// is plain Snappy that any reader decodes, made in about half the time of
// the stronger encoder parquet-go uses by default.
type fastSnappy struct{}

func (fastSnappy) String() string { return "SNAPPY" }

func (fastSnappy) CompressionCodec() format.CompressionCodec { return format.Snappy }

func (fastSnappy) Encode(dst, src []byte) ([]byte, error) {
	return s2.EncodeSnappy(dst[:cap(dst)], src), nil
}

func (fastSnappy) Decode(dst, src []byte) ([]byte, error) {
	return snappy.Decode(dst[:cap(dst)], src)
}
