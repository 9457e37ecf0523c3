// Command alerter evaluates alert subscriptions against guard decisions as
// they arrive and sends the alerts they fire. Run two or more for
// availability: replicas share the consumer, the windows and the claims,
// so each decision counts once and each alert is sent once.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/guardwatch/observatory/internal/alert"
	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/health"
)

type cli struct {
	NATSURL   string `name:"nats-url" env:"GUARD_NATS_URL" default:"nats://127.0.0.1:4222" help:"NATS server URL."`
	NATSCreds string `name:"nats-creds" env:"GUARD_NATS_CREDS" type:"existingfile" help:"NATS credentials file."`
	Stream    string `name:"stream" env:"GUARD_STREAM" default:"GUARD" help:"Decisions stream."`
	Durable   string `name:"durable" env:"GUARD_ALERTER_DURABLE" default:"alerter" help:"Durable consumer shared by alerter replicas."`
	Replica   string `name:"replica" env:"GUARD_ALERTER_REPLICA" help:"Name of this replica in claims and delivery records; default host-pid."`

	AllowCIDRs []string `name:"webhook-allow-cidr" env:"GUARD_WEBHOOK_ALLOW_CIDR" sep:"," help:"Address range webhooks may reach although it is loopback, private or link-local, e.g. 127.0.0.1/32; repeatable."`
	PublicURL  string   `name:"public-url" env:"GUARD_PUBLIC_URL" help:"Observatory URL, for links in alerts."`

	MaxAttempts    int           `name:"retry-max-attempts" env:"GUARD_ALERT_RETRY_MAX_ATTEMPTS" default:"6" help:"Attempts per notification before it is recorded as failed."`
	RetryInitial   time.Duration `name:"retry-initial" env:"GUARD_ALERT_RETRY_INITIAL" default:"500ms" help:"First wait between attempts; it doubles, with jitter."`
	RetryMax       time.Duration `name:"retry-max" env:"GUARD_ALERT_RETRY_MAX" default:"30s" help:"Longest wait between attempts."`
	RetryElapsed   time.Duration `name:"retry-max-elapsed" env:"GUARD_ALERT_RETRY_MAX_ELAPSED" default:"2m" help:"Longest time spent on one notification."`
	AttemptTimeout time.Duration `name:"attempt-timeout" env:"GUARD_ALERT_ATTEMPT_TIMEOUT" default:"10s" help:"Longest one request may take."`
	Workers        int           `name:"workers" env:"GUARD_ALERT_WORKERS" default:"32" help:"Notifications sent at once."`
	PerProject     int           `name:"per-project" env:"GUARD_ALERT_PER_PROJECT" default:"4" help:"Notifications of one project sent at once."`

	HTTPAddr string `name:"http-addr" env:"GUARD_ALERTER_HTTP" default:"127.0.0.1:9465" help:"Address of /metrics and /healthz."`
	LogLevel string `name:"log-level" env:"GUARD_LOG_LEVEL" default:"info" enum:"debug,info,warn,error" help:"Log level."`
}

// Validate names the setting that is wrong; kong stops start-up with it.
func (c *cli) Validate() error {
	switch {
	case !events.ValidID(c.Stream):
		return errors.New("--stream must be letters, digits, _ or -")
	case !events.ValidID(c.Durable):
		return errors.New("--durable must be letters, digits, _ or -")
	case c.MaxAttempts < 1 || c.MaxAttempts > 100:
		return errors.New("--retry-max-attempts must be between 1 and 100")
	case c.RetryInitial <= 0 || c.RetryMax < c.RetryInitial || c.RetryElapsed <= 0:
		return errors.New("--retry-initial, --retry-max and --retry-max-elapsed must be " +
			"positive, with --retry-max at least --retry-initial")
	case c.AttemptTimeout <= 0:
		return errors.New("--attempt-timeout must be positive")
	case c.Workers < 1 || c.PerProject < 1:
		return errors.New("--workers and --per-project must be at least 1")
	}
	if _, err := alert.ParseCIDRs(c.AllowCIDRs); err != nil {
		return fmt.Errorf("--webhook-allow-cidr: %w", err)
	}
	return nil
}

func main() {
	var c cli
	kong.Parse(&c, kong.Description("Evaluate alert subscriptions and send alerts."))
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.LogLevel))
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c, log); err != nil {
		log.Error("alerter stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c cli, log *slog.Logger) error {
	opts := []nats.Option{nats.Name("guard-alerter"), nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second)}
	if c.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	}
	nc, err := nats.Connect(c.NATSURL, opts...)
	if err != nil {
		return fmt.Errorf("connect nats %s: %w", c.NATSURL, err)
	}
	defer nc.Drain()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}

	allow, _ := alert.ParseCIDRs(c.AllowCIDRs)
	if len(allow) > 0 {
		log.Warn("webhooks may reach allow-listed internal ranges", "ranges", c.AllowCIDRs)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(
		collectors.ProcessCollectorOpts{}))
	cfg := alert.Config{Stream: c.Stream, Durable: c.Durable, Replica: c.Replica,
		Guard: alert.NewGuard(allow), PublicURL: c.PublicURL,
		Workers: c.Workers, PerProject: c.PerProject,
		Retry: alert.RetryPolicy{MaxAttempts: c.MaxAttempts, Initial: c.RetryInitial,
			Max: c.RetryMax, MaxElapsed: c.RetryElapsed, AttemptTimeout: c.AttemptTimeout}}

	// The ingester creates the decisions stream; wait for it.
	a, err := backoff.Retry(ctx, func() (*alert.Alerter, error) {
		a, err := alert.New(ctx, cfg, js, reg, log)
		if errors.Is(err, alert.ErrNoStream) {
			log.Warn("waiting for the decisions stream", "stream", c.Stream)
			return nil, err
		}
		if err != nil {
			return nil, backoff.Permanent(err)
		}
		return a, nil
	}, backoff.WithBackOff(backoff.NewExponentialBackOff()), backoff.WithMaxElapsedTime(0))
	if err != nil {
		return fmt.Errorf("start alerter: %w", err)
	}

	checks := health.Checks{"nats": func(context.Context) error {
		if !nc.IsConnected() {
			return errors.New("not connected")
		}
		return nil
	}}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("GET /healthz", checks.Handler())
	hs := &http.Server{Addr: c.HTTPAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := hs.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "addr", c.HTTPAddr, "err", err)
		}
	}()
	defer hs.Close()
	log.Info("alerter starting", "nats", c.NATSURL, "stream", c.Stream, "durable", c.Durable,
		"http", c.HTTPAddr)
	return a.Run(ctx)
}
