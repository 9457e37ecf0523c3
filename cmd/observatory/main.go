// Command observatory serves the web UI over the decisions in ClickHouse,
// and carries the dev token and authorization tools.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
	_ "time/tzdata" // viewers' time zones, also where the host has no zoneinfo

	"github.com/alecthomas/kong"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/guardwatch/observatory/internal/alert"
	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/identity"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/tenant"
	"github.com/guardwatch/observatory/web"
)

type cli struct {
	Serve serveCmd `cmd:"" default:"withargs" help:"Serve the web UI."`
	Token tokenCmd `cmd:"" help:"Mint a dev sign-in token."`
	Authz authzCmd `cmd:"" help:"Authorization tools."`

	Export    exportCmd    `cmd:"" help:"Export a project's decisions to a file with a signed manifest."`
	Verify    verifyCmd    `cmd:"" help:"Check an export file against its signed manifest."`
	ExportKey exportKeyCmd `cmd:"" name:"export-key" help:"Make a key pair that signs export manifests."`
}

// serveCmd is the configuration of the web server.
type serveCmd struct {
	Listen    string `name:"listen" env:"GUARD_LISTEN" default:"127.0.0.1:8080" help:"Address to listen on."`
	CHAddr    string `name:"clickhouse-addr" env:"GUARD_CLICKHOUSE_ADDR" default:"127.0.0.1:9000" help:"ClickHouse native address."`
	CHDB      string `name:"clickhouse-db" env:"GUARD_CLICKHOUSE_DB" default:"observatory" help:"ClickHouse database."`
	CHUser    string `name:"clickhouse-user" env:"GUARD_CLICKHOUSE_USER" default:"default" help:"ClickHouse user."`
	CHPass    string `name:"clickhouse-password" env:"GUARD_CLICKHOUSE_PASSWORD" help:"ClickHouse password."`
	CHComp    string `name:"clickhouse-compression" env:"GUARD_CLICKHOUSE_COMPRESSION" default:"lz4" enum:"lz4,none" help:"Compression of result blocks on the wire: lz4, or none for a ClickHouse on the same host."`
	Policies  string `name:"policies" env:"GUARD_POLICIES" default:"policies" type:"existingdir" help:"Cedar policy folder; reloaded on change."`
	JWKSFile  string `name:"jwks-file" env:"GUARD_JWKS_FILE" help:"JWKS file of the token issuer."`
	JWKSURL   string `name:"jwks-url" env:"GUARD_JWKS_URL" help:"JWKS URL of the token issuer."`
	Issuer    string `name:"issuer" env:"GUARD_ISSUER" help:"Required token issuer (iss)."`
	Audience  string `name:"audience" env:"GUARD_AUDIENCE" help:"Required token audience (aud)."`
	DevKeyDir string `name:"dev-key-dir" env:"GUARD_DEV_KEY_DIR" help:"Dev signing key folder; its jwks.json is used when no JWKS is given, and a key is made if missing."`
	Insecure  bool   `name:"insecure-cookies" env:"GUARD_INSECURE_COOKIES" help:"Send cookies without Secure, for http://localhost development."`
	Secret    string `name:"session-secret" env:"GUARD_SESSION_SECRET" help:"Secret (32+ bytes) that signs sessions; default: random, so sessions end at restart."`

	NATSURL    string   `name:"nats-url" env:"GUARD_NATS_URL" help:"NATS server URL, for alert subscriptions; empty turns alerts off."`
	NATSCreds  string   `name:"nats-creds" env:"GUARD_NATS_CREDS" type:"existingfile" help:"NATS credentials file."`
	AllowCIDRs []string `name:"webhook-allow-cidr" env:"GUARD_WEBHOOK_ALLOW_CIDR" sep:"," help:"Address range alert webhooks may reach although it is loopback, private or link-local, e.g. 127.0.0.1/32; repeatable."`

	Tiers  string        `name:"tiers" env:"GUARD_TIERS" default:"deploy/tiers.yaml" help:"Tiers file: each project's query and export limits, by the tier its project.json in --policies names (docs/tenants.md)."`
	Reload time.Duration `name:"tenants-reload" env:"GUARD_TENANTS_RELOAD" default:"10s" help:"How often the tiers file and the projects' tiers are re-read."`

	Exports exportServeFlags `embed:""`
}

func main() {
	var c cli
	kctx := kong.Parse(&c, kong.Name("observatory"),
		kong.Description("Observatory: audit and observe AI guardrail decisions."))
	if err := kctx.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "observatory: %v\n", err)
		if errors.As(err, new(*configError)) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// configError is a setting that stops start-up; its message names the
// flag and its environment variable.
type configError struct {
	flag, env string
	err       error
}

func (e *configError) Error() string {
	return fmt.Sprintf("config: --%s (%s): %v", e.flag, e.env, e.err)
}

func (e *configError) Unwrap() error { return e.err }

// Run serves until SIGINT or SIGTERM.
func (c *serveCmd) Run() error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c, log); err != nil {
		log.Error("observatory stopped", "err", err)
		return err
	}
	return nil
}

func run(ctx context.Context, c *serveCmd, log *slog.Logger) error {
	if c.Reload < time.Second {
		return &configError{"tenants-reload", "GUARD_TENANTS_RELOAD",
			fmt.Errorf("%s: must be at least 1s", c.Reload)}
	}
	// Tiers and projects are re-read while serving, so a tier change in
	// project.json or the tiers file takes effect without a restart.
	tiers, err := tenant.OpenRegistry(c.Tiers, c.Policies, log)
	if err != nil {
		return &configError{"tiers", "GUARD_TIERS", err}
	}
	go tiers.Watch(ctx, c.Reload)

	secret := []byte(c.Secret)
	if len(secret) == 0 {
		secret = make([]byte, 32)
		_, _ = rand.Read(secret)
		log.Warn("no session secret given; sessions end when the server restarts")
	}
	jwks := c.JWKSFile
	if jwks == "" && c.JWKSURL == "" && c.DevKeyDir != "" {
		if err := identity.GenerateDevKey(c.DevKeyDir); err != nil {
			return fmt.Errorf("prepare dev key: %w", err)
		}
		jwks = filepath.Join(c.DevKeyDir, identity.DevJWKSFile)
		log.Warn("verifying tokens with the dev key", "dir", c.DevKeyDir)
	}
	verifier, err := identity.NewVerifier(ctx, identity.Config{JWKSFile: jwks,
		JWKSURL: c.JWKSURL, Issuer: c.Issuer, Audience: c.Audience})
	if err != nil {
		return fmt.Errorf("start token verifier: %w", err)
	}
	engine, err := authz.Load(c.Policies, log)
	if err != nil {
		return fmt.Errorf("load policies: %w", err)
	}
	if err := engine.Watch(ctx); err != nil {
		return fmt.Errorf("watch policies: %w", err)
	}
	st, err := store.Open(ctx, store.Config{Addr: c.CHAddr, Database: c.CHDB,
		User: c.CHUser, Password: c.CHPass, Compression: c.CHComp, Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()

	exp, err := c.Exports.exporter(st, c.DevKeyDir, log)
	if err != nil {
		return err
	}
	alerts, closeAlerts, err := c.alertDeps(ctx, log)
	if err != nil {
		return err
	}
	defer closeAlerts()
	h, err := web.NewServer(web.Deps{Store: st, Verifier: verifier, Authz: engine,
		SessionSecret: secret, InsecureCookies: c.Insecure, Logger: log, Exports: exp,
		Alerts: alerts, Tiers: tiers})
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: c.Listen, Handler: h, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second,
		IdleTimeout: 2 * time.Minute, BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("observatory listening", "addr", c.Listen)

	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", c.Listen, err)
	case <-ctx.Done():
	}
	// Live tails hold connections open; give ordinary requests 5 s.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}

// alertDeps opens the alert subscription buckets on NATS, when a URL is
// given. Test sends from the UI get a short retry budget: someone waits.
func (c *serveCmd) alertDeps(ctx context.Context, log *slog.Logger) (*web.AlertDeps, func(),
	error) {
	if c.NATSURL == "" {
		log.Info("alerts off: no --nats-url")
		return nil, func() {}, nil
	}
	allow, err := alert.ParseCIDRs(c.AllowCIDRs)
	if err != nil {
		return nil, nil, fmt.Errorf("--webhook-allow-cidr: %w", err)
	}
	opts := []nats.Option{nats.Name("guard-observatory"), nats.MaxReconnects(-1)}
	if c.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	}
	nc, err := nats.Connect(c.NATSURL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect nats %s: %w", c.NATSURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	guard := alert.NewGuard(allow)
	st, err := alert.OpenStore(ctx, js, alert.StoreConfig{Guard: guard})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	sender, err := alert.NewSender(alert.SenderConfig{Guard: guard, JS: js, Logger: log,
		Replica: "observatory", Retry: alert.RetryPolicy{MaxAttempts: 2,
			MaxElapsed: 10 * time.Second, AttemptTimeout: 5 * time.Second}})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return &web.AlertDeps{Store: st, Sender: sender}, nc.Close, nil
}
