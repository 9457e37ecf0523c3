// Command ingest consumes guard decision events from NATS JetStream and
// stores them in ClickHouse. Without --nats-url it runs an embedded NATS
// server, which is how the one-command demo starts.
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

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/health"
	"github.com/guardwatch/observatory/internal/ingest"
	"github.com/guardwatch/observatory/internal/natsembed"
	"github.com/guardwatch/observatory/internal/store"
)

type cli struct {
	NATSURL       string        `name:"nats-url" env:"GUARD_NATS_URL" help:"NATS server URL; empty runs an embedded server."`
	NATSCreds     string        `name:"nats-creds" env:"GUARD_NATS_CREDS" help:"NATS credentials file." type:"existingfile"`
	EmbedListen   string        `name:"embed-nats-listen" env:"GUARD_EMBED_NATS_LISTEN" default:"127.0.0.1:4222" help:"Listen address of the embedded NATS server."`
	EmbedStoreDir string        `name:"embed-nats-store" env:"GUARD_EMBED_NATS_STORE" default:".demo/nats" help:"JetStream storage folder of the embedded NATS server."`
	EmbedConfig   string        `name:"embed-nats-config" env:"GUARD_EMBED_NATS_CONFIG" type:"existingfile" help:"nats-server config file for the embedded server (accounts, users)."`
	Stream        string        `name:"stream" env:"GUARD_STREAM" default:"GUARD" help:"JetStream stream name."`
	StreamMaxAge  time.Duration `name:"stream-max-age" env:"GUARD_STREAM_MAX_AGE" default:"168h" help:"How long the stream keeps messages."`
	Durable       string        `name:"durable" env:"GUARD_DURABLE" default:"ingest" help:"Durable consumer name, shared by ingester replicas."`

	ClickHouseAddr string `name:"clickhouse-addr" env:"GUARD_CLICKHOUSE_ADDR" default:"127.0.0.1:9000" help:"ClickHouse native address."`
	ClickHouseDB   string `name:"clickhouse-db" env:"GUARD_CLICKHOUSE_DB" default:"observatory" help:"ClickHouse database."`
	ClickHouseUser string `name:"clickhouse-user" env:"GUARD_CLICKHOUSE_USER" default:"default" help:"ClickHouse user."`
	ClickHousePass string `name:"clickhouse-password" env:"GUARD_CLICKHOUSE_PASSWORD" help:"ClickHouse password."`

	BatchSize int           `name:"batch-size" env:"GUARD_BATCH_SIZE" default:"5000" help:"Rows per insert."`
	BatchWait time.Duration `name:"batch-wait" env:"GUARD_BATCH_WAIT" default:"500ms" help:"Longest time a row waits for its batch."`
	MaxFuture time.Duration `name:"max-future" env:"GUARD_MAX_FUTURE" default:"5m" help:"Reject events dated further ahead than this."`
	MaxPast   time.Duration `name:"max-past" env:"GUARD_MAX_PAST" default:"720h" help:"Reject events dated further back than this."`
	MaxBytes  int           `name:"max-event-bytes" env:"GUARD_MAX_EVENT_BYTES" default:"65536" help:"Largest accepted event payload."`

	HTTPAddr string `name:"http-addr" env:"GUARD_INGEST_HTTP" default:"127.0.0.1:9464" help:"Address of /metrics and /healthz."`
	LogLevel string `name:"log-level" env:"GUARD_LOG_LEVEL" default:"info" enum:"debug,info,warn,error" help:"Log level."`
}

// Validate names the setting that is wrong; kong stops start-up with it.
func (c *cli) Validate() error {
	switch {
	case c.BatchSize < 1 || c.BatchSize > 1_000_000:
		return errors.New("--batch-size must be between 1 and 1000000")
	case c.BatchWait <= 0:
		return errors.New("--batch-wait must be positive")
	case c.StreamMaxAge < time.Minute:
		return errors.New("--stream-max-age must be at least 1m")
	case c.MaxBytes < 1024:
		return errors.New("--max-event-bytes must be at least 1024")
	case c.MaxFuture <= 0 || c.MaxPast <= 0:
		return errors.New("--max-future and --max-past must be positive")
	case c.Stream == "" || !events.ValidID(c.Stream):
		return errors.New("--stream must be letters, digits, _ or -")
	case c.Durable == "" || !events.ValidID(c.Durable):
		return errors.New("--durable must be letters, digits, _ or -")
	}
	return nil
}

func main() {
	var c cli
	kong.Parse(&c, kong.Description("Consume guard decisions from NATS into ClickHouse."))
	log := newLogger(c.LogLevel)
	slog.SetDefault(log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c, log); err != nil {
		log.Error("ingest stopped", "err", err)
		os.Exit(1)
	}
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func run(ctx context.Context, c cli, log *slog.Logger) error {
	url := c.NATSURL
	if url == "" {
		srv, err := natsembed.StartNATS(natsembed.NATSOptions{
			Listen: c.EmbedListen, StoreDir: c.EmbedStoreDir, ConfigFile: c.EmbedConfig,
		})
		if err != nil {
			return fmt.Errorf("start embedded nats: %w", err)
		}
		defer srv.Shutdown()
		url = srv.ClientURL()
		log.Info("embedded nats running", "url", url, "store", c.EmbedStoreDir)
	}

	opts := []nats.Option{nats.Name("guard-ingest"), nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second)}
	if c.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return fmt.Errorf("connect nats %s: %w", url, err)
	}
	defer nc.Drain()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	st, err := bus.EnsureStream(ctx, js, bus.StreamConfig{Name: c.Stream, MaxAge: c.StreamMaxAge})
	if err != nil {
		return err
	}
	cons, err := bus.EnsureConsumer(ctx, st, bus.ConsumerConfig{Durable: c.Durable})
	if err != nil {
		return err
	}

	// ClickHouse may still be starting; the stream keeps events meanwhile.
	db, err := backoff.Retry(ctx, func() (*store.Store, error) {
		s, err := store.Open(ctx, store.Config{Addr: c.ClickHouseAddr, Database: c.ClickHouseDB,
			User: c.ClickHouseUser, Password: c.ClickHousePass, Logger: log})
		if err != nil {
			log.Warn("clickhouse not ready", "addr", c.ClickHouseAddr, "err", err)
		}
		return s, err
	}, backoff.WithBackOff(backoff.NewExponentialBackOff()), backoff.WithMaxElapsedTime(0))
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer db.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(
		collectors.ProcessCollectorOpts{}))
	ing := ingest.New(ingest.Config{
		BatchSize: c.BatchSize, BatchWait: c.BatchWait,
		Limits: events.Limits{MaxBytes: c.MaxBytes, MaxFuture: c.MaxFuture, MaxPast: c.MaxPast},
	}, js, cons, db, reg, log)

	checks := health.Checks{
		"nats": func(context.Context) error {
			if !nc.IsConnected() {
				return errors.New("not connected")
			}
			return nil
		},
		"clickhouse": db.Ping,
		"consumer": func(ctx context.Context) error {
			s := ing.Status(ctx)
			if s.ConsumerError != "" {
				return errors.New(s.ConsumerError)
			}
			if s.LastError != "" {
				return fmt.Errorf("%s (pending %d)", s.LastError, s.Pending)
			}
			return nil
		},
	}
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

	log.Info("ingesting", "stream", c.Stream, "durable", c.Durable,
		"clickhouse", c.ClickHouseAddr, "http", c.HTTPAddr)
	return ing.Run(ctx)
}
