// Package export takes one project's decisions out of the observatory as
// audit files an auditor's tools read: CSV, NDJSON or Parquet, gzipped on
// request. A file is streamed from ClickHouse with bounded memory
// whatever its size, in a stable order and up to a fixed upper bound, and
// comes with a manifest signed with Ed25519 that proves later that the
// file was not changed. Every export is written to the project's export
// log. README.md documents the formats.
package export

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/store"
)

// ErrBusy is returned by Run when too many exports are running, in the
// process or for the account.
var ErrBusy = errors.New("export: too many exports running; try again later")

// ErrRequest is a request that cannot be exported; the wrapped text says
// why and is safe to show.
var ErrRequest = errors.New("export: invalid request")

// Config configures an Exporter. Store and SigningKey are required.
type Config struct {
	Store      *store.Store
	SigningKey ed25519.PrivateKey
	Logger     *slog.Logger     // default slog.Default()
	Now        func() time.Time // default time.Now
	// Settle is how far before its start an export's upper bound lies:
	// the export reads rows stored (ingested_at) at or before start minus
	// Settle, so inserts stamped just before the start that become
	// visible a moment later are neither missed nor half-read. Inserts
	// must become visible within Settle of their stamp, and the clocks of
	// ingesters and exporter agree within it. Default 30s.
	Settle time.Duration
	// Workers encode rows in parallel; default GOMAXPROCS.
	Workers int
	// MaxRunning caps exports running at once in this process, default 4;
	// MaxPerAccount caps those of one account, default 2.
	MaxRunning    int
	MaxPerAccount int
	// WindowRows is store.ExportQuery.WindowRows; default the store's.
	WindowRows int
}

// Exporter writes exports. It is safe for concurrent use.
type Exporter struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	running   int
	byAccount map[string]int
}

// New returns an Exporter.
func New(cfg Config) (*Exporter, error) {
	if cfg.Store == nil || len(cfg.SigningKey) != ed25519.PrivateKeySize {
		return nil, errors.New("export: a store and an Ed25519 signing key are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 30 * time.Second
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.MaxRunning <= 0 {
		cfg.MaxRunning = 4
	}
	if cfg.MaxPerAccount <= 0 {
		cfg.MaxPerAccount = 2
	}
	return &Exporter{cfg: cfg, log: cfg.Logger.With("component", "export"),
		byAccount: map[string]int{}}, nil
}

// Settle returns how far before an export's start its upper bound lies.
func (e *Exporter) Settle() time.Duration { return e.cfg.Settle }

// PublicKey returns the public key that verifies this exporter's
// manifests.
func (e *Exporter) PublicKey() ed25519.PublicKey {
	return e.cfg.SigningKey.Public().(ed25519.PublicKey)
}

// Request is what to export and for whom.
type Request struct {
	Scope  store.Scope   // from an allowed export_audit decision
	Filter filter.Filter // From and To required
	Format Format
	Gzip   bool
	Actor  string // who exports: the token subject, or the CLI operator
	// ContentPreviews keeps content previews in the file; give it only to
	// actors allowed view_content. Without it previews are removed.
	ContentPreviews bool
}

// Job is a prepared export. NewJob fixes its id, upper bound and file
// name, so a caller can announce them before the first byte is written.
type Job struct {
	Request
	ID        string
	StartedAt time.Time // UTC, milliseconds
	StoredBy  time.Time // the upper bound on ingested_at, inclusive
	FileName  string
}

// NewJob checks a request and prepares its export. Errors wrap ErrRequest.
func (e *Exporter) NewJob(r Request) (*Job, error) {
	switch {
	case !r.Scope.Valid():
		return nil, fmt.Errorf("%w: no project scope", ErrRequest)
	case r.Filter.From.IsZero() || r.Filter.To.IsZero() || !r.Filter.From.Before(r.Filter.To):
		return nil, fmt.Errorf("%w: a time range with from before to is required", ErrRequest)
	case !r.Format.valid():
		return nil, fmt.Errorf("%w: unknown format %q", ErrRequest, r.Format)
	case r.Actor == "":
		return nil, fmt.Errorf("%w: the actor is required", ErrRequest)
	}
	var rnd [10]byte
	_, _ = rand.Read(rnd[:])
	now := e.cfg.Now().UTC().Truncate(time.Millisecond)
	j := &Job{Request: r, ID: "exp_" + hex.EncodeToString(rnd[:]), StartedAt: now,
		StoredBy: now.Add(-e.cfg.Settle)}
	j.FileName = fmt.Sprintf("%s_%s_%s_%s_%s%s", r.Scope.Account(), r.Scope.Project(),
		r.Filter.From.UTC().Format("20060102T150405Z"),
		r.Filter.To.UTC().Format("20060102T150405Z"), j.ID, r.Format.Ext(r.Gzip))
	return j, nil
}

// Result is a finished export.
type Result struct {
	Manifest Manifest
	Signed   []byte // the manifest file
}

// Run writes the job's file to w and returns its signed manifest. The
// export is recorded in the project's export log before the first byte
// and again at the end, complete or failed; an export that cannot be
// recorded is not run. It returns ErrBusy when too many are running.
func (e *Exporter) Run(ctx context.Context, j *Job, w io.Writer) (*Result, error) {
	if !e.acquire(j.Scope.Account()) {
		return nil, ErrBusy
	}
	defer e.release(j.Scope.Account())
	rec := j.record()
	if err := e.record(ctx, j, rec); err != nil {
		return nil, err
	}
	log := e.log.With("export_id", j.ID, "account", j.Scope.Account(),
		"project", j.Scope.Project(), "actor", j.Actor, "format", string(j.Format))
	start := time.Now()

	hw := &hashWriter{w: w, h: sha256.New()}
	rows, err := e.write(ctx, j, hw)
	rec.Rows, rec.Bytes = uint64(rows), uint64(hw.n)
	if err != nil {
		rec.Status = store.ExportFailed
		if rerr := e.record(ctx, j, rec); rerr != nil {
			log.Error("record failed export", "err", rerr)
		}
		log.Warn("export failed", "rows", rows, "bytes", hw.n, "err", err)
		return nil, err
	}

	m := j.manifest(rows, hw.n, hex.EncodeToString(hw.h.Sum(nil)))
	signed, err := m.Sign(e.cfg.SigningKey)
	if err != nil {
		return nil, err
	}
	rec.Status, rec.SHA256, rec.Manifest = store.ExportComplete, m.SHA256, string(signed)
	if err := e.record(ctx, j, rec); err != nil {
		return nil, err
	}
	log.Info("export complete", "rows", rows, "bytes", hw.n,
		"duration", time.Since(start).Round(time.Millisecond))
	return &Result{Manifest: m, Signed: signed}, nil
}

// write streams the file and returns the rows written.
func (e *Exporter) write(ctx context.Context, j *Job, hw io.Writer) (int64, error) {
	body := hw
	var gz *gzip.Writer
	if j.Gzip {
		gz, _ = gzip.NewWriterLevel(hw, gzip.BestSpeed)
		gz.Name = j.FileName[:len(j.FileName)-len(".gz")]
		gz.ModTime = j.StartedAt
		body = gz
	}
	enc, err := j.encoder(body)
	if err != nil {
		return 0, err
	}
	p := newPipeline(ctx, enc, e.cfg.Workers)
	q := store.ExportQuery{Filter: j.Filter, StoredBy: uint64(j.StoredBy.UnixMilli()),
		WindowRows: e.cfg.WindowRows}
	err = e.cfg.Store.Export(p.ctx, j.Scope, q, p.addBlock)
	rows, err := p.finish(err)
	if err != nil {
		return rows, err
	}
	if gz != nil {
		if err := gz.Close(); err != nil {
			return rows, fmt.Errorf("finish gzip: %w", err)
		}
	}
	return rows, nil
}

func (j *Job) encoder(w io.Writer) (encoder, error) {
	switch j.Format {
	case CSV:
		return newCSVEncoder(w, j.ContentPreviews)
	case NDJSON:
		return &ndjsonEncoder{out: w, previews: j.ContentPreviews}, nil
	default:
		return newParquetEncoder(w, j.ContentPreviews, map[string]string{
			"observatory.export_id":  j.ID,
			"observatory.account_id": j.Scope.Account(),
			"observatory.project_id": j.Scope.Project(),
		}), nil
	}
}

func (e *Exporter) acquire(account string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.running >= e.cfg.MaxRunning || e.byAccount[account] >= e.cfg.MaxPerAccount {
		return false
	}
	e.running++
	e.byAccount[account]++
	return true
}

func (e *Exporter) release(account string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.running--
	if e.byAccount[account]--; e.byAccount[account] <= 0 {
		delete(e.byAccount, account)
	}
}

// record writes the export's state to the log. It outlives a cancelled
// request, so that an export whose reader went away is still logged.
func (e *Exporter) record(ctx context.Context, j *Job, r store.ExportRecord) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := e.cfg.Store.RecordExport(ctx, j.Scope, r); err != nil {
		return fmt.Errorf("record export in the export log: %w", err)
	}
	return nil
}

// hashWriter counts and hashes what passes through it.
type hashWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (hw *hashWriter) Write(p []byte) (int, error) {
	n, err := hw.w.Write(p)
	hw.h.Write(p[:n])
	hw.n += int64(n)
	return n, err
}
