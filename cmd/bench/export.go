package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/export"
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/store"
)

// exportCmd loads one project with generated decisions and exports it in
// each format, each in a fresh child process so that its peak RSS is its
// own.
type exportCmd struct {
	Rows        int    `name:"rows" default:"5000000" help:"Decisions to load into the project."`
	Batch       int    `name:"batch" default:"50000" help:"Rows per store.Insert."`
	Days        int    `name:"days" default:"30" help:"Days the decisions are spread over."`
	Formats     string `name:"formats" default:"csv,ndjson,parquet" help:"Formats to export."`
	Gzip        bool   `name:"gzip" help:"Also export each format gzipped."`
	Database    string `name:"database" help:"Use this database as loaded by an earlier run (--keep)."`
	Keep        bool   `name:"keep" help:"Keep the loaded database for another run."`
	MemLimit    int64  `name:"memory-limit" default:"104857600" help:"Each export process's soft memory limit, as observatory export sets it; 0 keeps Go's defaults."`
	Compression string `name:"clickhouse-compression" default:"lz4" enum:"lz4,none" help:"Compression of the exports' blocks on the wire: lz4, or none for a ClickHouse on the same host."`
	WindowRows  int    `name:"window-rows" help:"Rows ClickHouse sorts per query (export.Config.WindowRows); 0 keeps the default."`
	Profile     string `name:"profile" help:"Write each export's CPU and allocation profiles into this folder."`
	ServerPID   int    `name:"server-pid" help:"PID of a ClickHouse server on this machine, to report the CPU time it spends on each export."`

	Child string `name:"child" hidden:"" help:"Run one export in this process: format[.gz]."`
}

const (
	benchAccount = "acme"
	benchProject = "proj_prod"
)

// exportFigures are one child's measurements.
type exportFigures struct {
	Format  string  `json:"format"`
	Rows    int64   `json:"rows"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	CPU     float64 `json:"cpu_seconds"` // user + system of the export process
	PeakRSS int64   `json:"peak_rss_kb"` // VmHWM
}

func (c *exportCmd) Run(root *cli) error {
	ctx := context.Background()
	if c.Child != "" {
		return c.runChild(ctx, root)
	}
	db := c.Database
	if db == "" {
		db = fmt.Sprintf("bench_export_%d", time.Now().Unix())
		if err := c.load(ctx, root.ClickHouseAddr, db); err != nil {
			return err
		}
	}
	if !c.Keep && c.Database == "" {
		defer dropBenchDB(ctx, root.ClickHouseAddr, db)
	}
	var runs []string
	for _, f := range strings.Split(c.Formats, ",") {
		runs = append(runs, strings.TrimSpace(f))
		if c.Gzip {
			runs = append(runs, strings.TrimSpace(f)+".gz")
		}
	}
	gc := "Go defaults"
	if c.MemLimit > 0 {
		gc = fmt.Sprintf("GOGC 200, memory limit %d MiB, as observatory export", c.MemLimit>>20)
	}
	fmt.Printf("\nexport of one project from %s; garbage collector: %s; blocks on the wire: %s\n",
		db, gc, c.Compression)
	fmt.Printf("| format | rows | bytes | seconds | rows/s | export CPU s | CPU s per M rows |" +
		" server CPU s | peak RSS MB | load avg |\n")
	fmt.Printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	var done []exportFigures
	for _, f := range runs {
		srv0 := serverCPU(c.ServerPID)
		fig, err := c.child(ctx, root, db, f)
		if err != nil {
			return fmt.Errorf("export %s: %w", f, err)
		}
		srv := "-"
		if srv1 := serverCPU(c.ServerPID); srv0 >= 0 && srv1 >= 0 {
			srv = fmt.Sprintf("%.1f", srv1-srv0)
		}
		fmt.Printf("| %s | %d | %d | %.1f | %.0f | %.1f | %.2f | %s | %.1f | %s |\n", fig.Format,
			fig.Rows, fig.Bytes, fig.Seconds, float64(fig.Rows)/fig.Seconds, fig.CPU,
			fig.CPU/float64(max(fig.Rows, 1))*1e6, srv, float64(fig.PeakRSS)/1024, loadAvg())
		done = append(done, fig)
	}
	fmt.Println()
	for _, fig := range done {
		rate, mb := float64(fig.Rows)/fig.Seconds, float64(fig.PeakRSS)/1024
		summary(fmt.Sprintf("export: %s, %d rows", fig.Format, fig.Rows),
			fmt.Sprintf("%.0f rows/s, peak RSS %.0f MB", rate, mb),
			"≥ 100,000 rows/s, < 150 MB", rate >= 100_000 && mb < 150)
	}
	if c.Keep {
		fmt.Printf("kept database %s; rerun with --database %s\n", db, db)
	}
	return nil
}

// load inserts c.Rows generated decisions into one project, spread evenly
// over the last c.Days days.
func (c *exportCmd) load(ctx context.Context, addr, db string) error {
	st, err := store.Open(ctx, store.Config{Addr: addr, Database: db,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer st.Close()
	tn := gen.Tenant{Account: benchAccount, Project: benchProject}
	g := gen.New(11, []gen.Tenant{tn}, nil)
	span := time.Duration(c.Days) * 24 * time.Hour
	start := time.Now().UTC().Add(-span)
	step := span / time.Duration(max(c.Rows, 1))
	began := time.Now()
	batch := make([]*events.Event, 0, c.Batch)
	for i := range c.Rows {
		ev := g.NextFor(tn)
		ev.EventID = fmt.Sprintf("bench-%09d", i)
		ev.OccurredAt = start.Add(time.Duration(i) * step).Truncate(time.Millisecond)
		batch = append(batch, ev)
		if len(batch) == c.Batch || i == c.Rows-1 {
			if err := st.Insert(ctx, batch); err != nil {
				return fmt.Errorf("load rows: %w", err)
			}
			batch = batch[:0]
		}
	}
	secs := time.Since(began).Seconds()
	fmt.Printf("loaded %d rows in %.1f s (%.0f rows/s)\n", c.Rows, secs, float64(c.Rows)/secs)
	return nil
}

// child runs one export in a new process of this program and reads its
// figures from the last line of its output.
func (c *exportCmd) child(ctx context.Context, root *cli, db, format string) (exportFigures,
	error) {
	self, err := os.Executable()
	if err != nil {
		return exportFigures{}, err
	}
	cmd := exec.CommandContext(ctx, self, "--clickhouse-addr", root.ClickHouseAddr, "export",
		"--database", db, "--days", fmt.Sprint(c.Days), "--memory-limit", fmt.Sprint(c.MemLimit),
		"--window-rows", fmt.Sprint(c.WindowRows), "--clickhouse-compression", c.Compression,
		"--profile", c.Profile, "--child", format)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return exportFigures{}, fmt.Errorf("child: %w: %s", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var fig exportFigures
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &fig); err != nil {
		return exportFigures{}, fmt.Errorf("read child figures: %w", err)
	}
	return fig, nil
}

// runChild exports the project once to a counting sink and prints its
// figures as JSON.
func (c *exportCmd) runChild(ctx context.Context, root *cli) error {
	if c.MemLimit > 0 {
		// The garbage collector as observatory export sets it.
		debug.SetGCPercent(200)
		debug.SetMemoryLimit(c.MemLimit)
	}
	name, gz := strings.CutSuffix(c.Child, ".gz")
	format, err := export.ParseFormat(name)
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, store.Config{Addr: root.ClickHouseAddr, Database: c.Database,
		Compression: c.Compression, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer st.Close()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	// Nothing is inserted meanwhile, so the bound need not lag: the rows
	// just loaded are all in.
	exp, err := export.New(export.Config{Store: st, SigningKey: key, Settle: time.Millisecond,
		Logger: slog.New(slog.DiscardHandler), WindowRows: c.WindowRows})
	if err != nil {
		return err
	}
	sc, err := store.NewScope(benchAccount, benchProject)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	f := filter.Filter{From: now.Add(-time.Duration(c.Days+1) * 24 * time.Hour), To: now}
	job, err := exp.NewJob(export.Request{Scope: sc, Filter: f, Format: format, Gzip: gz,
		Actor: "bench", ContentPreviews: true})
	if err != nil {
		return err
	}
	stop, err := c.startProfile()
	if err != nil {
		return err
	}
	var sink countingSink
	began := time.Now()
	res, err := exp.Run(ctx, job, &sink)
	if err != nil {
		return err
	}
	if err := stop(); err != nil {
		return err
	}
	fig := exportFigures{Format: c.Child, Rows: res.Manifest.Rows, Bytes: sink.n,
		Seconds: time.Since(began).Seconds(), CPU: cpuSeconds(), PeakRSS: peakRSS()}
	return json.NewEncoder(os.Stdout).Encode(fig)
}

// startProfile starts this child's CPU profile when --profile names a
// folder; the function it returns stops it and writes the allocation
// profile.
func (c *exportCmd) startProfile() (func() error, error) {
	if c.Profile == "" {
		return func() error { return nil }, nil
	}
	if err := os.MkdirAll(c.Profile, 0o755); err != nil {
		return nil, fmt.Errorf("create profile folder: %w", err)
	}
	base := filepath.Join(c.Profile, c.Child)
	f, err := os.Create(base + ".cpu.pprof")
	if err != nil {
		return nil, fmt.Errorf("create cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("start cpu profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return fmt.Errorf("write cpu profile: %w", err)
		}
		a, err := os.Create(base + ".allocs.pprof")
		if err != nil {
			return fmt.Errorf("create allocation profile: %w", err)
		}
		defer a.Close()
		if err := pprof.Lookup("allocs").WriteTo(a, 0); err != nil {
			return fmt.Errorf("write allocation profile: %w", err)
		}
		return nil
	}, nil
}

// serverCPU is the CPU seconds process pid has used, or -1 when pid is 0
// or unreadable.
func serverCPU(pid int) float64 {
	if pid <= 0 {
		return -1
	}
	s, err := procCPU(pid)
	if err != nil {
		return -1
	}
	return s
}

// countingSink discards what it is given, counting bytes.
type countingSink struct{ n int64 }

func (s *countingSink) Write(p []byte) (int, error) {
	s.n += int64(len(p))
	return len(p), nil
}

// cpuSeconds is the user and system time this process has used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// peakRSS reads this process's peak resident set size (VmHWM) in kB, or
// -1 when it cannot be read.
func peakRSS() int64 {
	kb, err := procPeakRSS(os.Getpid())
	if err != nil {
		return -1
	}
	return kb
}

func dropBenchDB(ctx context.Context, addr, db string) {
	st, err := store.Open(ctx, store.Config{Addr: addr, Database: db,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return
	}
	defer st.Close()
	_ = st.Conn().Exec(ctx, "DROP DATABASE IF EXISTS "+db)
}
