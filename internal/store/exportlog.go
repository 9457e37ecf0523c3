package store

import (
	"context"
	"fmt"
	"time"
)

// Export statuses in the export log.
const (
	ExportStarted  = "started"  // the file is being written, or the writer died
	ExportComplete = "complete" // every row was written and the manifest signed
	ExportFailed   = "failed"   // the export stopped part-way; some rows may have left
)

var exportStatuses = []string{ExportStarted, ExportComplete, ExportFailed}

// MaxExportRecords bounds one ListExports call.
const MaxExportRecords = 500

// ExportRecord is one entry of a project's export log: who took which
// decisions out, when, in which file.
type ExportRecord struct {
	ExportID  string
	StartedAt time.Time // UTC, seconds
	Actor     string    // the token subject, or the operator of the CLI
	Format    string
	Gzip      bool
	Filter    string // the filter as a query string, without the range
	From, To  time.Time
	StoredBy  time.Time // the export's upper bound on ingested_at
	Status    string    // ExportStarted, ExportComplete or ExportFailed
	Rows      uint64
	Bytes     uint64
	SHA256    string // hex, of the file as delivered; empty unless complete
	Manifest  string // the signed manifest JSON; empty unless complete
}

// exportsDDL is the export log. An export writes a row when it starts and
// another when it ends; both share the sorting key, so the engine folds
// them to the latest and reads take the latest per export id.
func exportsDDL(table string) string {
	return `CREATE TABLE IF NOT EXISTS ` + table + ` (
    account_id   String,
    project_id   String,
    export_id    String,
    started_at   DateTime('UTC'),
    actor        String,
    format       String,
    gzip         UInt8,
    filter       String,
    range_from   UInt64,
    range_to     UInt64,
    stored_by    UInt64,
    status       ` + enum8(exportStatuses) + `,
    rows         UInt64,
    bytes        UInt64,
    sha256       String,
    manifest     String,
    updated_ms   UInt64
) ENGINE = ReplacingMergeTree(updated_ms)
PARTITION BY (account_id, project_id, toYYYYMM(started_at))
ORDER BY (account_id, project_id, started_at, export_id)`
}

func (s *Store) exportsTable() string { return s.db + ".exports" }

const exportColumns = `export_id, started_at, actor, format, gzip, filter, range_from,
 range_to, stored_by, toString(status), rows, bytes, sha256, manifest`

const exportInsertColumns = `account_id, project_id, export_id, started_at, actor, format,
 gzip, filter, range_from, range_to, stored_by, status, rows, bytes, sha256, manifest,
 updated_ms`

// RecordExport writes the current state of an export to the scope's
// export log. Call it when the export starts and again when it ends.
func (s *Store) RecordExport(ctx context.Context, sc Scope, r ExportRecord) error {
	if err := sc.check(); err != nil {
		return err
	}
	b, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.exportsTable()+
		" ("+exportInsertColumns+")")
	if err != nil {
		return fmt.Errorf("record export %s: %w", r.ExportID, err)
	}
	defer b.Abort()
	err = b.Append(sc.account, sc.project, r.ExportID, r.StartedAt.UTC().Truncate(time.Second),
		r.Actor, r.Format, r.Gzip, r.Filter, unixMS(r.From), unixMS(r.To), unixMS(r.StoredBy),
		r.Status, r.Rows, r.Bytes, r.SHA256, r.Manifest, uint64(time.Now().UnixNano()))
	if err != nil {
		return fmt.Errorf("record export %s: %w", r.ExportID, err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("record export %s: %w", r.ExportID, err)
	}
	return nil
}

// ListExports returns the scope's export log, newest first, at most limit
// entries. A non-empty actor keeps only that actor's exports.
func (s *Store) ListExports(ctx context.Context, sc Scope, actor string,
	limit int) ([]ExportRecord, error) {
	if err := sc.check(); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > MaxExportRecords {
		limit = MaxExportRecords
	}
	cond, args := "account_id = ? AND project_id = ?", []any{sc.account, sc.project}
	if actor != "" {
		cond += " AND actor = ?"
		args = append(args, actor)
	}
	q := "SELECT " + exportColumns + " FROM " + s.exportsTable() + " WHERE " + cond +
		" ORDER BY started_at DESC, export_id DESC, updated_ms DESC LIMIT 1 BY export_id" +
		fmt.Sprintf(" LIMIT %d", limit)
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list exports: %w", err)
	}
	defer rows.Close()
	var out []ExportRecord
	for rows.Next() {
		r, err := scanExport(rows)
		if err != nil {
			return nil, fmt.Errorf("list exports: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list exports: %w", err)
	}
	return out, nil
}

// CountExportsSince returns how many exports of the scope started at or
// after since, whatever their status and actor. The export log is shared
// by every observatory replica and survives restarts, so a daily export
// limit counted here holds across both.
func (s *Store) CountExportsSince(ctx context.Context, sc Scope, since time.Time) (uint64,
	error) {
	if err := sc.check(); err != nil {
		return 0, err
	}
	var n uint64
	q := "SELECT uniqExact(export_id) FROM " + s.exportsTable() +
		" WHERE account_id = ? AND project_id = ? AND started_at >= ?"
	err := s.conn.QueryRow(ctx, q, sc.account, sc.project,
		since.UTC().Truncate(time.Second)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count exports: %w", err)
	}
	return n, nil
}

// GetExport returns the latest state of one export of the scope, or
// ErrNotFound.
func (s *Store) GetExport(ctx context.Context, sc Scope, exportID string) (ExportRecord,
	error) {
	if err := sc.check(); err != nil {
		return ExportRecord{}, err
	}
	q := "SELECT " + exportColumns + " FROM " + s.exportsTable() +
		" WHERE account_id = ? AND project_id = ? AND export_id = ?" +
		" ORDER BY updated_ms DESC LIMIT 1"
	r, err := scanExport(s.conn.QueryRow(ctx, q, sc.account, sc.project, exportID))
	if err != nil {
		if isNoRows(err) {
			return ExportRecord{}, ErrNotFound
		}
		return ExportRecord{}, fmt.Errorf("get export: %w", err)
	}
	return r, nil
}

func scanExport(r scanner) (ExportRecord, error) {
	var e ExportRecord
	var from, to, by uint64
	var gz uint8
	err := r.Scan(&e.ExportID, &e.StartedAt, &e.Actor, &e.Format, &gz, &e.Filter, &from, &to,
		&by, &e.Status, &e.Rows, &e.Bytes, &e.SHA256, &e.Manifest)
	e.StartedAt = e.StartedAt.UTC()
	e.Gzip = gz != 0
	e.From, e.To, e.StoredBy = fromMS(from), fromMS(to), fromMS(by)
	return e, err
}

func unixMS(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixMilli())
}

func fromMS(ms uint64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(ms)).UTC()
}
