package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/guardwatch/observatory/internal/quota"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/tenant"
)

// lanesFlags turn on per-project lanes: with a tiers file, each project of
// the policy folder is read through a durable consumer of its own, with its
// tier's ingest quota, so that one tenant's flood does not delay another's
// events. Without --tiers the ingester reads the one shared consumer.
type lanesFlags struct {
	Tiers      string        `name:"tiers" env:"GUARD_TIERS" help:"Tiers file; turns on a lane and an ingest quota per project (docs/tenants.md)."`
	Policies   string        `name:"policies" env:"GUARD_POLICIES" default:"policies" help:"Policy folder whose projects/<account>/<project>/project.json name each project's tier."`
	Reload     time.Duration `name:"tenants-reload" env:"GUARD_TENANTS_RELOAD" default:"10s" help:"How often tiers and projects are re-read."`
	UsageFlush time.Duration `name:"quota-usage-flush" env:"GUARD_QUOTA_USAGE_FLUSH" default:"10s" help:"How often per-project quota counts are written to ClickHouse."`
}

// start returns the consumer the ingester reads: rest itself without
// --tiers, else lanes over it, which let two of the ingester's batches of
// over-quota events (batchSize rows each) out at a time. The returned func
// stops the reloads and waits for the last flush of quota counts.
func (f lanesFlags) start(ctx context.Context, st jetstream.Stream, rest jetstream.Consumer,
	db *store.Store, reg prometheus.Registerer, batchSize int,
	log *slog.Logger) (jetstream.Consumer, func(), error) {
	if f.Tiers == "" {
		return rest, func() {}, nil
	}
	if f.Reload < time.Second {
		return nil, nil, badSetting("tenants-reload", "GUARD_TENANTS_RELOAD",
			"%s: must be at least 1s", f.Reload)
	}
	if f.UsageFlush < time.Second {
		return nil, nil, badSetting("quota-usage-flush", "GUARD_QUOTA_USAGE_FLUSH",
			"%s: must be at least 1s", f.UsageFlush)
	}
	tenants, err := tenant.OpenRegistry(f.Tiers, f.Policies, log)
	if err != nil {
		return nil, nil, &configError{"tiers", "GUARD_TIERS", err}
	}
	usage := quota.NewUsage(db, reg, log)
	lanes, err := quota.NewLanes(ctx, st, rest, tenants, usage,
		quota.LanesConfig{OverQuotaHeld: 2 * batchSize}, log)
	if err != nil {
		return nil, nil, err
	}
	reg.MustRegister(lanes.Collectors()...)

	bg, stop := context.WithCancel(ctx)
	go tenants.Watch(bg, f.Reload)
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		usage.Run(bg, f.UsageFlush)
	}()
	log.Info("per-project lanes", "projects", len(lanes.Lanes()), "tiers", f.Tiers,
		"policies", f.Policies)
	return lanes, func() { stop(); <-flushed }, nil
}
