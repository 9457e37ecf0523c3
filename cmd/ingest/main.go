// Command ingest consumes guard decision events from NATS JetStream and
// stores them in ClickHouse. Without --nats-url it runs an embedded NATS
// server, which is how the one-command demo starts.
//
// A setting that is wrong stops start-up with exit status 2 and a message
// naming the flag and its environment variable; a failure after start-up
// exits with status 1.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
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
	AckWait       time.Duration `name:"ack-wait" env:"GUARD_ACK_WAIT" default:"60s" help:"Time a delivered message may go unacknowledged before redelivery."`

	ClickHouseAddr string `name:"clickhouse-addr" env:"GUARD_CLICKHOUSE_ADDR" default:"127.0.0.1:9000" help:"ClickHouse native address."`
	ClickHouseDB   string `name:"clickhouse-db" env:"GUARD_CLICKHOUSE_DB" default:"observatory" help:"ClickHouse database."`
	ClickHouseUser string `name:"clickhouse-user" env:"GUARD_CLICKHOUSE_USER" default:"default" help:"ClickHouse user."`
	ClickHousePass string `name:"clickhouse-password" env:"GUARD_CLICKHOUSE_PASSWORD" help:"ClickHouse password."`
	ClickHouseComp string `name:"clickhouse-compression" env:"GUARD_CLICKHOUSE_COMPRESSION" default:"lz4" enum:"lz4,none" help:"Compression of insert blocks on the wire: lz4, or none for a ClickHouse on the same host."`

	BatchSize     int           `name:"batch-size" env:"GUARD_BATCH_SIZE" default:"5000" help:"Rows per insert."`
	BatchWait     time.Duration `name:"batch-wait" env:"GUARD_BATCH_WAIT" default:"500ms" help:"Longest time a row waits for its batch."`
	RetryDelay    time.Duration `name:"retry-delay" env:"GUARD_RETRY_DELAY" default:"1s" help:"First wait after a failed insert; it doubles per attempt."`
	MaxRetryDelay time.Duration `name:"max-retry-delay" env:"GUARD_MAX_RETRY_DELAY" default:"30s" help:"Longest wait between insert attempts."`
	MaxFuture     time.Duration `name:"max-future" env:"GUARD_MAX_FUTURE" default:"5m" help:"Reject events dated further ahead than this."`
	MaxPast       time.Duration `name:"max-past" env:"GUARD_MAX_PAST" default:"720h" help:"Reject events dated further back than this."`
	MaxBytes      int           `name:"max-event-bytes" env:"GUARD_MAX_EVENT_BYTES" default:"65536" help:"Largest accepted event payload."`
	MaxLag        uint64        `name:"max-lag" env:"GUARD_MAX_LAG" default:"100000" help:"Backlog, in undelivered messages, above which /readyz fails; 0 disables."`

	HTTPAddr string `name:"http-addr" env:"GUARD_INGEST_HTTP" default:"127.0.0.1:9464" help:"Address of /metrics, /healthz and /readyz."`
	Pprof    bool   `name:"pprof" env:"GUARD_INGEST_PPROF" help:"Serve Go profiles under /debug/pprof/ on --http-addr."`
	LogLevel string `name:"log-level" env:"GUARD_LOG_LEVEL" default:"info" enum:"debug,info,warn,error" help:"Log level."`

	Lanes lanesFlags `embed:""`
}

// configError is a setting that stops start-up. Its message names the
// flag and the environment variable that set it, when known.
type configError struct {
	flag, env string
	err       error
}

func (e *configError) Error() string {
	if e.flag == "" {
		return fmt.Sprintf("config: %v (see --help)", e.err)
	}
	return fmt.Sprintf("config: --%s (%s): %v", e.flag, e.env, e.err)
}

func (e *configError) Unwrap() error { return e.err }

func badSetting(flag, env, format string, args ...any) error {
	return &configError{flag: flag, env: env, err: fmt.Errorf(format, args...)}
}

// maxSkew bounds --max-past and --max-future: ten years keeps every
// accepted time inside ClickHouse's DateTime range (1970 to 2106).
const maxSkew = 10 * 365 * 24 * time.Hour

// Validate names the setting that is wrong and what is wrong with it.
func (c *cli) Validate() error {
	switch {
	case c.BatchSize < 1 || c.BatchSize > 1_000_000:
		return badSetting("batch-size", "GUARD_BATCH_SIZE",
			"%d is out of range: must be between 1 and 1000000", c.BatchSize)
	case c.BatchWait <= 0:
		return badSetting("batch-wait", "GUARD_BATCH_WAIT", "%s: must be positive", c.BatchWait)
	case c.RetryDelay <= 0:
		return badSetting("retry-delay", "GUARD_RETRY_DELAY", "%s: must be positive", c.RetryDelay)
	case c.MaxRetryDelay < c.RetryDelay:
		return badSetting("max-retry-delay", "GUARD_MAX_RETRY_DELAY",
			"%s: must be at least --retry-delay (%s)", c.MaxRetryDelay, c.RetryDelay)
	case c.AckWait < time.Second:
		return badSetting("ack-wait", "GUARD_ACK_WAIT", "%s: must be at least 1s", c.AckWait)
	case c.StreamMaxAge < time.Minute:
		return badSetting("stream-max-age", "GUARD_STREAM_MAX_AGE",
			"%s: must be at least 1m", c.StreamMaxAge)
	case c.MaxBytes < 1024:
		return badSetting("max-event-bytes", "GUARD_MAX_EVENT_BYTES",
			"%d: must be at least 1024", c.MaxBytes)
	case c.MaxFuture <= 0 || c.MaxFuture > maxSkew:
		return badSetting("max-future", "GUARD_MAX_FUTURE",
			"%s: must be positive and at most %s", c.MaxFuture, maxSkew)
	case c.MaxPast <= 0 || c.MaxPast > maxSkew:
		return badSetting("max-past", "GUARD_MAX_PAST",
			"%s: must be positive and at most %s", c.MaxPast, maxSkew)
	case !events.ValidID(c.Stream):
		return badSetting("stream", "GUARD_STREAM",
			"%q: must be 1-64 letters, digits, _ or -", c.Stream)
	case !events.ValidID(c.Durable):
		return badSetting("durable", "GUARD_DURABLE",
			"%q: must be 1-64 letters, digits, _ or -", c.Durable)
	case !validDatabase(c.ClickHouseDB):
		return badSetting("clickhouse-db", "GUARD_CLICKHOUSE_DB",
			"%q: must be 1-64 letters, digits or _", c.ClickHouseDB)
	}
	if err := checkHostPort(c.ClickHouseAddr); err != nil {
		return &configError{"clickhouse-addr", "GUARD_CLICKHOUSE_ADDR", err}
	}
	if err := checkHostPort(c.HTTPAddr); err != nil {
		return &configError{"http-addr", "GUARD_INGEST_HTTP", err}
	}
	if c.NATSURL == "" {
		if err := checkHostPort(c.EmbedListen); err != nil {
			return &configError{"embed-nats-listen", "GUARD_EMBED_NATS_LISTEN", err}
		}
	} else if err := checkNATSURL(c.NATSURL); err != nil {
		return &configError{"nats-url", "GUARD_NATS_URL", err}
	}
	return nil
}

func main() {
	code := 0
	if err := mainErr(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "ingest: %v\n", err)
		code = 1
		if errors.As(err, new(*configError)) || errors.As(err, new(*kong.ParseError)) {
			code = 2
		}
	}
	os.Exit(code)
}

func mainErr(args []string) error {
	var c cli
	parser, err := kong.New(&c, kong.Description(
		"Consume guard decisions from NATS into ClickHouse."))
	if err != nil {
		return err
	}
	if _, err := parser.Parse(args); err != nil {
		var ce *configError
		if errors.As(err, &ce) {
			return ce
		}
		// kong's message names the flag, and the variable when it came
		// from the environment.
		return &configError{err: err}
	}
	log := newLogger(c.LogLevel)
	slog.SetDefault(log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c, log); err != nil {
		log.Error("ingest stopped", "err", err)
		return err
	}
	return nil
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func run(ctx context.Context, c cli, log *slog.Logger) error {
	// Bind the HTTP port first: a taken port is a setting to fix, and it
	// is better found before anything else starts.
	ln, err := net.Listen("tcp", c.HTTPAddr)
	if err != nil {
		return &configError{"http-addr", "GUARD_INGEST_HTTP", err}
	}
	defer ln.Close()

	url := c.NATSURL
	if url == "" {
		srv, err := natsembed.StartNATS(natsembed.NATSOptions{
			Listen: c.EmbedListen, StoreDir: c.EmbedStoreDir, ConfigFile: c.EmbedConfig,
		})
		if err != nil {
			return &configError{"embed-nats-listen", "GUARD_EMBED_NATS_LISTEN", err}
		}
		defer srv.Shutdown()
		url = srv.ClientURL()
		log.Info("embedded nats running", "url", url, "store", c.EmbedStoreDir)
	}

	opts := []nats.Option{nats.Name("guard-ingest"), nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("nats", "err", err)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
	}
	if c.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		if errors.Is(err, nats.ErrAuthorization) {
			return &configError{"nats-creds", "GUARD_NATS_CREDS", err}
		}
		return fmt.Errorf("connect nats %s (--nats-url): %w", url, err)
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
	cons, err := bus.EnsureConsumer(ctx, st, bus.ConsumerConfig{Durable: c.Durable,
		AckWait: c.AckWait})
	if err != nil {
		return err
	}

	db, err := openStore(ctx, c, log)
	if err != nil {
		return err
	}
	defer db.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(
		collectors.ProcessCollectorOpts{}))
	source, lanesDone, err := c.Lanes.start(ctx, st, cons, db, reg, c.BatchSize, log)
	if err != nil {
		return err
	}
	defer lanesDone()
	ing := ingest.New(ingest.Config{
		BatchSize: c.BatchSize, BatchWait: c.BatchWait,
		RetryDelay: c.RetryDelay, MaxDelay: c.MaxRetryDelay, MaxLag: c.MaxLag,
		Limits: events.Limits{MaxBytes: c.MaxBytes, MaxFuture: c.MaxFuture, MaxPast: c.MaxPast},
	}, js, source, db, reg, log)

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("GET /healthz", healthChecks(nc, db, ing, false).Handler())
	mux.Handle("GET /readyz", healthChecks(nc, db, ing, true).Handler())
	if c.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "addr", c.HTTPAddr, "err", err)
		}
	}()
	defer hs.Close()

	log.Info("ingesting", "stream", c.Stream, "durable", c.Durable,
		"clickhouse", c.ClickHouseAddr, "http", ln.Addr().String())
	return ing.Run(ctx)
}

// openStore waits for ClickHouse, which may still be starting (the stream
// keeps events meanwhile), but stops at once when the server refuses the
// credentials.
func openStore(ctx context.Context, c cli, log *slog.Logger) (*store.Store, error) {
	db, err := backoff.Retry(ctx, func() (*store.Store, error) {
		s, err := store.Open(ctx, store.Config{Addr: c.ClickHouseAddr, Database: c.ClickHouseDB,
			User: c.ClickHouseUser, Password: c.ClickHousePass, Compression: c.ClickHouseComp,
			Logger: log})
		if err == nil {
			return s, nil
		}
		var ex *clickhouse.Exception
		if errors.As(err, &ex) && authFailure(ex.Code) {
			return nil, backoff.Permanent(&configError{"clickhouse-user",
				"GUARD_CLICKHOUSE_USER", fmt.Errorf(
					"%s refused user %q (check --clickhouse-password too): %w",
					c.ClickHouseAddr, c.ClickHouseUser, err)})
		}
		log.Warn("clickhouse not ready", "addr", c.ClickHouseAddr, "err", err)
		return nil, err
	}, backoff.WithBackOff(backoff.NewExponentialBackOff()), backoff.WithMaxElapsedTime(0))
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return db, nil
}

// authFailure reports ClickHouse error codes for a login the server
// refuses: unknown user, wrong password, password required, and the
// single code newer servers use for all of them.
func authFailure(code int32) bool {
	switch code {
	case 192, 193, 194, 516:
		return true
	}
	return false
}

// healthChecks names each dependency. Liveness (/healthz) asks whether
// NATS, ClickHouse and the consumer work; readiness (/readyz) also fails
// while the backlog is over --max-lag.
func healthChecks(nc *nats.Conn, db *store.Store, ing *ingest.Ingester,
	withLag bool) health.Checks {
	return health.Checks{
		"nats": func(context.Context) error {
			if !nc.IsConnected() {
				return fmt.Errorf("not connected (%s)", nc.Status())
			}
			return nil
		},
		"clickhouse": db.Ping,
		"consumer": func(ctx context.Context) error {
			s := ing.Status(ctx)
			if !withLag {
				s.Lagging = false
			}
			return s.Err()
		},
	}
}

func validDatabase(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
