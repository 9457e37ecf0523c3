// Package retention removes decisions older than their project's tier
// allows. A month partition that lies wholly before the cutoff is dropped;
// the rows of the month that straddles the cutoff are removed by a
// mutation filtered on the project's ids.
//
// Table TTL is not used, even on servers that have it: a TTL is one
// expression for the whole table, so a per-project retention that changes
// with the tier would mean rewriting the table's TTL on every tier change,
// and 18.16 (the tests' server) has none. Partition drops and mutations
// run the same on every version.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/tenant"
)

// Config tunes a Job. Zero fields take the defaults shown.
type Config struct {
	// DryRun reports what would be removed without removing it.
	DryRun bool
	// Now is the clock, default time.Now.
	Now func() time.Time
	// MutationTimeout bounds the wait for one project's delete mutation,
	// default 10m.
	MutationTimeout time.Duration
}

// ProjectReport is what one run removed from one project.
type ProjectReport struct {
	Account     string        `json:"account_id"`
	Project     string        `json:"project_id"`
	Tier        string        `json:"tier"`
	Provisioned bool          `json:"provisioned"` // false: default tier, no policy folder
	Retention   time.Duration `json:"retention"`
	Cutoff      time.Time     `json:"cutoff"` // rows that occurred before it are removed
	Partitions  int           `json:"partitions_dropped"`
	// PartitionRows and MutationRows are rows as stored, redelivered
	// copies included: the rows of the dropped partitions and the rows the
	// mutation removed.
	PartitionRows uint64 `json:"partition_rows"`
	MutationRows  uint64 `json:"mutation_rows"`
	Err           string `json:"error,omitempty"`
}

// Rows is every row removed from the project.
func (p ProjectReport) Rows() uint64 { return p.PartitionRows + p.MutationRows }

// Report is one run of the job.
type Report struct {
	Started  time.Time       `json:"started"`
	Took     time.Duration   `json:"took"`
	DryRun   bool            `json:"dry_run,omitempty"`
	Projects []ProjectReport `json:"projects"` // projects that had rows to remove, or failed
}

// Totals sums the rows and partitions removed by the run.
func (r Report) Totals() (rows uint64, partitions int) {
	for _, p := range r.Projects {
		rows += p.Rows()
		partitions += p.Partitions
	}
	return rows, partitions
}

// Job applies retention to every project with data.
type Job struct {
	st  *store.Store
	reg *tenant.Registry
	cfg Config
	m   *metrics
	log *slog.Logger
}

// New returns a job. reg may be nil to skip metrics registration.
func New(st *store.Store, tenants *tenant.Registry, cfg Config, reg prometheus.Registerer,
	log *slog.Logger) *Job {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MutationTimeout <= 0 {
		cfg.MutationTimeout = 10 * time.Minute
	}
	if log == nil {
		log = slog.Default()
	}
	return &Job{st: st, reg: tenants, cfg: cfg, m: newMetrics(reg),
		log: log.With("component", "retention")}
}

// Run applies retention once: to every provisioned project and every
// project that has rows, with its tier's retention (the default tier's for
// projects without a policy folder). A failure on one project is reported
// and the others still run.
func (j *Job) Run(ctx context.Context) (Report, error) {
	start := j.cfg.Now()
	rep := Report{Started: start.UTC(), DryRun: j.cfg.DryRun}
	snap := j.reg.Snapshot()

	keys := map[tenant.Key]bool{}
	for _, k := range snap.Keys() {
		keys[k] = true
	}
	data, err := j.st.DataProjects(ctx)
	if err != nil {
		j.m.runs.WithLabelValues("error").Inc()
		return rep, err
	}
	for _, p := range data {
		keys[tenant.Key{Account: p.Account, Project: p.Project}] = true
	}
	ordered := make([]tenant.Key, 0, len(keys))
	for k := range keys {
		ordered = append(ordered, k)
	}
	sort.Slice(ordered, func(a, b int) bool { return ordered[a].String() < ordered[b].String() })

	var errs []error
	for _, k := range ordered {
		tier, provisioned := snap.Tier(k)
		pr := ProjectReport{Account: k.Account, Project: k.Project, Tier: tier.Name,
			Provisioned: provisioned, Retention: tier.Retention.D(),
			Cutoff: start.Add(-tier.Retention.D()).UTC().Truncate(time.Second)}
		if err := j.project(ctx, &pr); err != nil {
			pr.Err = err.Error()
			errs = append(errs, fmt.Errorf("retention of %s: %w", k, err))
			j.log.Error("retention failed", "account_id", k.Account, "project_id", k.Project,
				"err", err)
		}
		if pr.Rows() > 0 || pr.Partitions > 0 || pr.Err != "" {
			rep.Projects = append(rep.Projects, pr)
			j.record(pr)
		}
	}
	rep.Took = j.cfg.Now().Sub(start)
	rows, parts := rep.Totals()
	j.m.lastRun.SetToCurrentTime()
	j.m.runSeconds.Observe(rep.Took.Seconds())
	result := "ok"
	if len(errs) > 0 {
		result = "error"
	}
	j.m.runs.WithLabelValues(result).Inc()
	j.log.Info("retention run", "projects", len(ordered), "rows", rows, "partitions", parts,
		"dry_run", j.cfg.DryRun, "took", rep.Took, "errors", len(errs))
	return rep, errors.Join(errs...)
}

// project removes what is past the cutoff from one project.
func (j *Job) project(ctx context.Context, pr *ProjectReport) error {
	sc, err := store.NewScope(pr.Account, pr.Project)
	if err != nil {
		return err
	}
	parts, err := j.st.Partitions(ctx, sc)
	if err != nil {
		return err
	}
	straddles := false
	for _, p := range parts {
		// Every row of the partition occurred before its month's end, so
		// rows inserted while this runs are past the cutoff too.
		if !p.End().After(pr.Cutoff) {
			if !j.cfg.DryRun {
				if err := j.st.DropPartition(ctx, sc, p.ID); err != nil {
					return err
				}
			}
			pr.Partitions++
			pr.PartitionRows += p.Rows
			continue
		}
		if p.MinTime.Before(pr.Cutoff) {
			straddles = true
		}
	}
	if !straddles {
		return nil
	}
	// The rows the mutation removes lie in the month of the cutoff: every
	// earlier month was dropped above.
	month := time.Date(pr.Cutoff.Year(), pr.Cutoff.Month(), 1, 0, 0, 0, 0, time.UTC)
	n, err := j.st.CountRange(ctx, sc, month, pr.Cutoff)
	if err != nil || n == 0 {
		return err
	}
	if !j.cfg.DryRun {
		mctx, cancel := context.WithTimeout(ctx, j.cfg.MutationTimeout)
		defer cancel()
		if err := j.st.DeleteBefore(mctx, sc, pr.Cutoff); err != nil {
			return err
		}
	}
	pr.MutationRows = n
	return nil
}

func (j *Job) record(pr ProjectReport) {
	if j.cfg.DryRun {
		return
	}
	j.m.rows.WithLabelValues(pr.Account, pr.Project).Add(float64(pr.Rows()))
	j.m.partitions.WithLabelValues(pr.Account, pr.Project).Add(float64(pr.Partitions))
	j.log.Info("retention applied", "account_id", pr.Account, "project_id", pr.Project,
		"tier", pr.Tier, "cutoff", pr.Cutoff, "partitions", pr.Partitions,
		"partition_rows", pr.PartitionRows, "mutation_rows", pr.MutationRows)
}

type metrics struct {
	rows       *prometheus.CounterVec
	partitions *prometheus.CounterVec
	runs       *prometheus.CounterVec
	runSeconds prometheus.Histogram
	lastRun    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "guard_retention_rows_removed_total",
			Help: "Decision rows removed by retention, per project, redelivered copies included.",
		}, []string{"account_id", "project_id"}),
		partitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "guard_retention_partitions_dropped_total",
			Help: "Month partitions dropped by retention, per project.",
		}, []string{"account_id", "project_id"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "guard_retention_runs_total",
			Help: "Retention runs, by result (ok, error).",
		}, []string{"result"}),
		runSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "guard_retention_run_seconds",
			Help:    "Time one retention run took.",
			Buckets: prometheus.ExponentialBuckets(0.05, 4, 8),
		}),
		lastRun: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "guard_retention_last_run_timestamp_seconds",
			Help: "When the last retention run ended.",
		}),
	}
	m.runs.WithLabelValues("ok")
	m.runs.WithLabelValues("error")
	if reg != nil {
		reg.MustRegister(m.rows, m.partitions, m.runs, m.runSeconds, m.lastRun)
	}
	return m
}
