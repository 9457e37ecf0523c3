package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/guardwatch/observatory/internal/export"
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/store"
)

// clickHouseFlags say how to reach ClickHouse, as serve's do.
type clickHouseFlags struct {
	CHAddr string `name:"clickhouse-addr" env:"GUARD_CLICKHOUSE_ADDR" default:"127.0.0.1:9000" help:"ClickHouse native address."`
	CHDB   string `name:"clickhouse-db" env:"GUARD_CLICKHOUSE_DB" default:"observatory" help:"ClickHouse database."`
	CHUser string `name:"clickhouse-user" env:"GUARD_CLICKHOUSE_USER" default:"default" help:"ClickHouse user."`
	CHPass string `name:"clickhouse-password" env:"GUARD_CLICKHOUSE_PASSWORD" help:"ClickHouse password."`
	CHComp string `name:"clickhouse-compression" env:"GUARD_CLICKHOUSE_COMPRESSION" default:"lz4" enum:"lz4,none" help:"Compression of result blocks on the wire: lz4, or none for a ClickHouse on the same host."`
}

// exportCmd writes one project's decisions to a file with a signed
// manifest next to it.
type exportCmd struct {
	clickHouseFlags `embed:""`

	Account string `name:"account" required:"" help:"Account id."`
	Project string `name:"project" required:"" help:"Project id."`
	From    string `name:"from" required:"" help:"Start, inclusive: RFC 3339, or a date or local time in --tz."`
	To      string `name:"to" required:"" help:"End, exclusive: RFC 3339, or a date (its end) or local time in --tz."`
	TZ      string `name:"tz" default:"UTC" help:"Zone of --from and --to without one."`
	Query   string `name:"query" help:"Filter as the traces page's query string, e.g. 'outcome=blocked&severity=high'."`

	Outcome     []string `name:"outcome" help:"Outcomes (allowed, blocked, monitored, alerted)."`
	Decision    []string `name:"decision" help:"Decisions (allow, deny)."`
	Mode        []string `name:"mode" help:"Modes (enforce, monitor, alert)."`
	EventType   []string `name:"event-type" help:"Event types."`
	Severity    string   `name:"severity" help:"Minimum severity."`
	MinScore    string   `name:"min-score" help:"Minimum signal score, 0-100."`
	Category    string   `name:"category" help:"Threat category."`
	Policy      string   `name:"policy" help:"Determining policy id."`
	Detector    string   `name:"detector" help:"Detector."`
	User        string   `name:"user" help:"User id."`
	Agent       string   `name:"agent" help:"Agent id."`
	Session     string   `name:"session" help:"Session id."`
	Application string   `name:"application" help:"Application id."`
	Trace       string   `name:"trace" help:"Trace id."`
	Text        string   `name:"text" help:"Text in reasons or content previews, case-insensitive."`

	Format     string        `name:"format" required:"" enum:"csv,ndjson,parquet" help:"csv, ndjson or parquet."`
	Gzip       bool          `name:"gzip" help:"Gzip the file."`
	Out        string        `name:"out" required:"" help:"File to write; the manifest goes to FILE.manifest.json."`
	Manifest   string        `name:"manifest" help:"Manifest path; default FILE.manifest.json."`
	SigningKey string        `name:"signing-key" env:"GUARD_EXPORT_SIGNING_KEY" required:"" type:"existingfile" help:"Ed25519 private key (PKCS #8 PEM) that signs the manifest."`
	Actor      string        `name:"actor" help:"Who exports, for the manifest and the export log; default cli:<OS user>."`
	NoPreviews bool          `name:"no-content-previews" help:"Leave content previews out."`
	Settle     time.Duration `name:"settle" default:"30s" help:"How far before the start the upper bound on stored time lies."`
	MemLimit   int64         `name:"memory-limit" default:"104857600" help:"Soft memory limit of this process in bytes; garbage is collected as it nears it."`
}

// Help is the detailed help of `observatory export --help`.
func (c *exportCmd) Help() string {
	return "An operator's tool: it reads ClickHouse directly with the scope the flags name, " +
		"and is not held to the project's tier limits (rows, range, concurrent and daily " +
		"exports), which apply to exports started from the UI and its API. Its exports are " +
		"recorded in the project's export log like any other, and so count toward the " +
		"exports the tenant may start that day."
}

// filterParams are the query parameters a filter reads; --query may use
// only these, so that a misspelt one is not silently ignored.
var filterParams = []string{"outcome", "decision", "mode", "event_type", "severity",
	"min_score", "category", "policy", "detector", "user", "agent", "session",
	"application", "trace", "q"}

// filter builds the filter from --from/--to, --query and the filter flags;
// a flag replaces the same parameter from --query.
func (c *exportCmd) filter(now time.Time) (filter.Filter, error) {
	loc, err := time.LoadLocation(c.TZ)
	if err != nil {
		return filter.Filter{}, fmt.Errorf("--tz: %w", err)
	}
	q, err := url.ParseQuery(c.Query)
	if err != nil {
		return filter.Filter{}, fmt.Errorf("--query: %w", err)
	}
	for k := range q {
		if !slices.Contains(filterParams, k) {
			return filter.Filter{}, fmt.Errorf("--query: unknown parameter %q (known: %s)", k,
				strings.Join(filterParams, ", "))
		}
	}
	lists := map[string][]string{"outcome": c.Outcome, "decision": c.Decision,
		"mode": c.Mode, "event_type": c.EventType}
	for k, v := range lists {
		if len(v) > 0 {
			q[k] = []string{strings.Join(v, ",")}
		}
	}
	texts := map[string]string{"severity": c.Severity, "min_score": c.MinScore,
		"category": c.Category, "policy": c.Policy, "detector": c.Detector, "user": c.User,
		"agent": c.Agent, "session": c.Session, "application": c.Application,
		"trace": c.Trace, "q": c.Text}
	for k, v := range texts {
		if v != "" {
			q.Set(k, v)
		}
	}
	q.Set("from", c.From)
	q.Set("to", c.To)
	return filter.Parse(q, now, loc)
}

// Run exports. The file is written under a temporary name and renamed
// only when complete, so a failed export leaves no file that looks whole.
func (c *exportCmd) Run() error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// This process only exports: collect at three times the live heap, not
	// at twice, and hold the whole process under a soft limit. A tighter
	// limit costs time returning and re-faulting Parquet's page buffers.
	debug.SetGCPercent(200)
	debug.SetMemoryLimit(c.MemLimit)

	sc, err := store.NewScope(c.Account, c.Project)
	if err != nil {
		return err
	}
	f, err := c.filter(time.Now())
	if err != nil {
		return err
	}
	format, err := export.ParseFormat(c.Format)
	if err != nil {
		return err
	}
	key, err := export.LoadSigningKey(c.SigningKey)
	if err != nil {
		return err
	}
	actor, err := c.actor()
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, store.Config{Addr: c.CHAddr, Database: c.CHDB,
		User: c.CHUser, Password: c.CHPass, Compression: c.CHComp, Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()
	exp, err := export.New(export.Config{Store: st, SigningKey: key, Logger: log,
		Settle: c.Settle})
	if err != nil {
		return err
	}
	job, err := exp.NewJob(export.Request{Scope: sc, Filter: f, Format: format, Gzip: c.Gzip,
		Actor: actor, ContentPreviews: !c.NoPreviews})
	if err != nil {
		return err
	}
	res, err := c.write(ctx, exp, job)
	if err != nil {
		return err
	}
	m := res.Manifest
	fmt.Printf("exported %d decisions of %s/%s to %s (%d bytes, sha256 %s)\n", m.Rows,
		m.AccountID, m.ProjectID, c.Out, m.Bytes, m.SHA256)
	fmt.Printf("range %s (inclusive) to %s (exclusive) UTC; rows stored by %s\n",
		m.Range.From, m.Range.To, m.UpperBound.StoredBy)
	fmt.Printf("manifest %s, export id %s\n", c.manifestPath(), m.ExportID)
	return nil
}

func (c *exportCmd) actor() (string, error) {
	if c.Actor != "" {
		return c.Actor, nil
	}
	u, err := user.Current()
	if err != nil {
		return "", fmt.Errorf("name the exporter with --actor: %w", err)
	}
	return "cli:" + u.Username, nil
}

func (c *exportCmd) manifestPath() string {
	if c.Manifest != "" {
		return c.Manifest
	}
	return c.Out + ".manifest.json"
}

// write runs the export into a temporary file beside --out, then moves
// it and writes the manifest.
func (c *exportCmd) write(ctx context.Context, exp *export.Exporter,
	job *export.Job) (*export.Result, error) {
	tmp, err := os.CreateTemp(filepath.Dir(c.Out), "."+filepath.Base(c.Out)+".*.partial")
	if err != nil {
		return nil, fmt.Errorf("create output: %w", err)
	}
	defer os.Remove(tmp.Name())
	res, err := exp.Run(ctx, job, tmp)
	if err != nil {
		tmp.Close()
		return nil, fmt.Errorf("export %s: %w", job.ID, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write output: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write output: %w", err)
	}
	if err := os.Rename(tmp.Name(), c.Out); err != nil {
		return nil, fmt.Errorf("move output into place: %w", err)
	}
	if err := os.WriteFile(c.manifestPath(), res.Signed, 0o644); err != nil {
		return nil, fmt.Errorf("write manifest: %w", err)
	}
	return res, nil
}

// verifyCmd checks a file against its signed manifest.
type verifyCmd struct {
	File      string `name:"file" required:"" type:"existingfile" help:"Export file."`
	Manifest  string `name:"manifest" required:"" type:"existingfile" help:"Its manifest."`
	PublicKey string `name:"public-key" required:"" type:"existingfile" help:"Ed25519 public key (PKIX PEM)."`
}

// errVerify is the exit of a failed verification; the reason is printed.
var errVerify = errors.New("verification failed")

// Run verifies and prints the manifest's facts, or why it fails.
func (c *verifyCmd) Run() error {
	pub, err := export.LoadPublicKey(c.PublicKey)
	if err != nil {
		return err
	}
	mb, err := os.ReadFile(c.Manifest)
	if err != nil {
		return fmt.Errorf("read manifest: %w", err)
	}
	f, err := os.Open(c.File)
	if err != nil {
		return fmt.Errorf("open file: %w", err)
	}
	defer f.Close()
	m, err := export.Verify(f, mb, pub)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return errVerify
	}
	fmt.Printf("OK: %s is export %s of %s/%s\n", c.File, m.ExportID, m.AccountID, m.ProjectID)
	fmt.Printf("%d decisions from %s (inclusive) to %s (exclusive) UTC, stored by %s\n",
		m.Rows, m.Range.From, m.Range.To, m.UpperBound.StoredBy)
	fmt.Printf("filter %q, exported by %s at %s\n", m.Filter, m.ExportedBy, m.ExportedAt)
	return nil
}

// exportKeyCmd makes a manifest signing key pair.
type exportKeyCmd struct {
	Dir string `name:"dir" required:"" help:"Folder for export-signing-key.pem and export-public-key.pem."`
}

// Run makes the key pair, keeping an existing private key.
func (c *exportKeyCmd) Run() error {
	if err := export.GenerateKey(c.Dir); err != nil {
		return err
	}
	fmt.Printf("signing key %s\n", filepath.Join(c.Dir, export.SigningKeyFile))
	fmt.Printf("public key %s\n", filepath.Join(c.Dir, export.PublicKeyFile))
	return nil
}

// exportServeFlags configure the UI's exports. Without a key, serve makes
// one in --dev-key-dir when given; without either, exports are off.
type exportServeFlags struct {
	ExportKey string `name:"export-signing-key" env:"GUARD_EXPORT_SIGNING_KEY" help:"Ed25519 private key (PKCS #8 PEM) that signs export manifests."`
}

// exporter builds the UI's exporter, or nil when exports are off.
func (c exportServeFlags) exporter(st *store.Store, devKeyDir string,
	log *slog.Logger) (*export.Exporter, error) {
	path := c.ExportKey
	if path == "" && devKeyDir != "" {
		if err := export.GenerateKey(devKeyDir); err != nil {
			return nil, fmt.Errorf("prepare dev export key: %w", err)
		}
		path = filepath.Join(devKeyDir, export.SigningKeyFile)
		log.Warn("signing export manifests with the dev key", "dir", devKeyDir)
	}
	if path == "" {
		log.Warn("exports are off: no --export-signing-key")
		return nil, nil
	}
	key, err := export.LoadSigningKey(path)
	if err != nil {
		return nil, err
	}
	return export.New(export.Config{Store: st, SigningKey: key, Logger: log})
}
