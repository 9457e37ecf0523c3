package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/guardwatch/observatory/internal/retention"
)

type retentionCmd struct {
	clickHouse
	Every    time.Duration `name:"every" help:"Run on this schedule until stopped (e.g. 1h); default: once."`
	DryRun   bool          `name:"dry-run" help:"Report what would be removed; remove nothing."`
	JSON     bool          `name:"json" help:"Print each run's report as JSON."`
	HTTPAddr string        `name:"http-addr" env:"GUARD_RETENTION_HTTP" default:"127.0.0.1:9466" help:"Address of /metrics while running on a schedule."`
	Reload   time.Duration `name:"tenants-reload" default:"10s" help:"How often tiers and projects are re-read while running on a schedule."`
}

// Validate checks the schedule.
func (r *retentionCmd) Validate() error {
	if r.Every < 0 || r.Every > 0 && r.Every < time.Minute {
		return errors.New("--every must be at least 1m")
	}
	return nil
}

func (r *retentionCmd) run(ctx context.Context, e *env) error {
	reg, err := e.registry()
	if err != nil {
		return err
	}
	db, err := r.open(ctx, e.log)
	if err != nil {
		return err
	}
	defer db.Close()

	metrics := prometheus.NewRegistry()
	job := retention.New(db, reg, retention.Config{DryRun: r.DryRun}, metrics, e.log)
	if r.Every == 0 {
		rep, err := job.Run(ctx)
		printRetention(e.out, rep, r.JSON)
		return err
	}

	metrics.MustRegister(collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
	hs := &http.Server{Addr: r.HTTPAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := hs.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("http server", "addr", r.HTTPAddr, "err", err)
		}
	}()
	defer hs.Close()
	go reg.Watch(ctx, r.Reload)

	e.log.Info("retention scheduled", "every", r.Every, "dry_run", r.DryRun,
		"metrics", r.HTTPAddr)
	t := time.NewTicker(r.Every)
	defer t.Stop()
	for {
		rep, err := job.Run(ctx)
		printRetention(e.out, rep, r.JSON)
		if err != nil {
			e.log.Error("retention run", "err", err) // the next run tries again
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func printRetention(w io.Writer, rep retention.Report, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(rep)
		fmt.Fprintf(w, "%s\n", b)
		return
	}
	verb := "removed"
	if rep.DryRun {
		verb = "would remove"
	}
	rows, parts := rep.Totals()
	fmt.Fprintf(w, "retention %s: %s %d rows, %d partitions dropped, in %s\n",
		rep.Started.Format(time.RFC3339), verb, rows, parts, rep.Took.Round(time.Millisecond))
	for _, p := range rep.Projects {
		line := fmt.Sprintf("  %s/%s (%s, %s, before %s): %d rows, %d partitions",
			p.Account, p.Project, p.Tier, retentionText(p.Retention),
			p.Cutoff.Format(time.RFC3339), p.Rows(), p.Partitions)
		if !p.Provisioned {
			line += ", no policy folder: default tier"
		}
		if p.Err != "" {
			line += ", error: " + p.Err
		}
		fmt.Fprintln(w, line)
	}
}

func retentionText(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}
