package export

import (
	"fmt"
	"strings"
)

// Format is an export file format.
type Format string

// Formats.
const (
	CSV     Format = "csv"     // RFC 4180, header row, flattened columns
	NDJSON  Format = "ndjson"  // one stored event per line, as published
	Parquet Format = "parquet" // flat schema, typed columns, Snappy
)

// Formats lists every format.
var Formats = []Format{CSV, NDJSON, Parquet}

// ParseFormat reads a format name, case-insensitively.
func ParseFormat(s string) (Format, error) {
	f := Format(strings.ToLower(strings.TrimSpace(s)))
	if !f.valid() {
		return "", fmt.Errorf("%w: format must be csv, ndjson or parquet", ErrRequest)
	}
	return f, nil
}

func (f Format) valid() bool { return f == CSV || f == NDJSON || f == Parquet }

// Ext is the file name extension of the format, with ".gz" when gzipped.
func (f Format) Ext(gzip bool) string {
	ext := "." + string(f)
	if gzip {
		ext += ".gz"
	}
	return ext
}

// ContentType is the media type of the format's files.
func (f Format) ContentType(gzip bool) string {
	switch {
	case gzip:
		return "application/gzip"
	case f == CSV:
		return "text/csv; charset=utf-8; header=present"
	case f == NDJSON:
		return "application/x-ndjson"
	default:
		return "application/vnd.apache.parquet"
	}
}
