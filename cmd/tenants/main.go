// Command tenants runs the lifecycle of accounts and projects:
//
//	tenants provision  --account A --project P --tier pro
//	tenants nats-user  --account A            print the producer's NATS user
//	tenants nats-users                        print every producer's NATS user
//	tenants retention  [--every 1h] [--dry-run]
//	tenants usage      --account A --project P [--since 24h]
//	tenants offboard   --account A [--project P] [--yes]
//
// Tiers come from --tiers (deploy/tiers.yaml), projects and their tier from
// the policy folder (--policies), producer nkey seeds from --creds-dir.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/guardwatch/observatory/internal/cmdline"
	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/tenant"
)

type cli struct {
	Tiers    string `name:"tiers" env:"GUARD_TIERS" default:"deploy/tiers.yaml" help:"Tiers file."`
	Policies string `name:"policies" env:"GUARD_POLICIES" default:"policies" help:"Cedar policy folder; projects live in projects/<account>/<project>/."`
	CredsDir string `name:"creds-dir" env:"GUARD_CREDS_DIR" default:".tenants/creds" help:"Folder of the producers' nkey seeds (<account>.nk)."`
	LogLevel string `name:"log-level" env:"GUARD_LOG_LEVEL" default:"info" enum:"debug,info,warn,error" help:"Log level."`

	Provision provisionCmd `cmd:"" help:"Create a project (policy folder with its tier) or change its tier; makes the account's producer key if missing."`
	NATSUser  natsUserCmd  `cmd:"" name:"nats-user" help:"Print the NATS user block of an account's producer."`
	NATSUsers natsUsersCmd `cmd:"" name:"nats-users" help:"Print the NATS user blocks of every account with a producer key."`
	Retention retentionCmd `cmd:"" help:"Remove decisions past their project's retention, once or on a schedule."`
	Usage     usageCmd     `cmd:"" help:"Print a project's events per minute and how many were over its ingest quota."`
	Offboard  offboardCmd  `cmd:"" help:"Remove a project or a whole account everywhere, and record it."`
}

// clickHouse are the flags of commands that use the store.
type clickHouse struct {
	Addr     string `name:"clickhouse-addr" env:"GUARD_CLICKHOUSE_ADDR" default:"127.0.0.1:9000" help:"ClickHouse native address."`
	Database string `name:"clickhouse-db" env:"GUARD_CLICKHOUSE_DB" default:"observatory" help:"ClickHouse database."`
	User     string `name:"clickhouse-user" env:"GUARD_CLICKHOUSE_USER" default:"default" help:"ClickHouse user."`
	Password string `name:"clickhouse-password" env:"GUARD_CLICKHOUSE_PASSWORD" help:"ClickHouse password."`
}

func (c clickHouse) open(ctx context.Context, log *slog.Logger) (*store.Store, error) {
	return store.Open(ctx, store.Config{Addr: c.Addr, Database: c.Database, User: c.User,
		Password: c.Password, Logger: log})
}

// natsFlags are the flags of commands that use the broker.
type natsFlags struct {
	URL   string `name:"nats-url" env:"GUARD_NATS_URL" default:"nats://127.0.0.1:4222" help:"NATS server URL."`
	Creds string `name:"nats-creds" env:"GUARD_NATS_CREDS" type:"existingfile" help:"NATS credentials file."`
}

func (n natsFlags) connect() (*nats.Conn, jetstream.JetStream, error) {
	opts := []nats.Option{nats.Name("guard-tenants")}
	if n.Creds != "" {
		opts = append(opts, nats.UserCredentials(n.Creds))
	}
	nc, err := nats.Connect(n.URL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect nats %s: %w", n.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// env is what every command gets.
type env struct {
	cli *cli
	in  io.Reader
	out io.Writer
	log *slog.Logger
}

func (e *env) registry() (*tenant.Registry, error) {
	return tenant.OpenRegistry(e.cli.Tiers, e.cli.Policies, e.log)
}

// errUsage wraps flag errors, which exit with status 2.
var errUsage = cmdline.ErrUsage

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "tenants: %v\n", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout,
	stderr io.Writer) (err error) {
	var c cli
	kctx, err := cmdline.Parse(&c, "tenants",
		"Provision, limit and offboard tenants of the guard pipeline.", args, stdout, stderr)
	if err != nil || kctx == nil {
		return err
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.LogLevel))
	e := &env{cli: &c, in: stdin, out: stdout,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))}

	switch kctx.Command() {
	case "provision":
		return c.Provision.run(e)
	case "nats-user":
		return c.NATSUser.run(e)
	case "nats-users":
		return c.NATSUsers.run(e)
	case "retention":
		return c.Retention.run(ctx, e)
	case "usage":
		return c.Usage.run(ctx, e)
	case "offboard":
		return c.Offboard.run(ctx, e)
	}
	return fmt.Errorf("unknown command %q", kctx.Command())
}

type provisionCmd struct {
	Account string `name:"account" required:"" help:"Account id."`
	Project string `name:"project" required:"" help:"Project id."`
	Tier    string `name:"tier" required:"" help:"Tier, as listed in the tiers file."`
}

// Validate checks the ids before anything is written.
func (p *provisionCmd) Validate() error {
	if err := events.CheckID("--account", p.Account); err != nil {
		return err
	}
	return events.CheckID("--project", p.Project)
}

func (p *provisionCmd) run(e *env) error {
	reg, err := e.registry()
	if err != nil {
		return err
	}
	res, err := tenant.Provision(e.cli.Policies, reg.Snapshot().Tiers, p.Account, p.Project,
		p.Tier)
	if err != nil {
		return err
	}
	switch {
	case res.Created:
		fmt.Fprintf(e.out, "provisioned %s on tier %s in %s\n", res.Key, res.Tier, res.Dir)
	case res.PreviousTier != "":
		fmt.Fprintf(e.out, "%s moved from tier %s to %s\n", res.Key, res.PreviousTier,
			res.Tier)
	default:
		fmt.Fprintf(e.out, "%s is already on tier %s\n", res.Key, res.Tier)
	}
	// ClickHouse needs nothing per project: its partitions appear with
	// its first row. The ingester gives it a lane at its next reload.
	if err := reg.Reload(); err != nil {
		return err
	}
	if res.PreviousTier != "" {
		return nil
	}
	return printUser(e, reg.Snapshot(), p.Account)
}

// printUser prints the account's producer user, making its key if needed.
func printUser(e *env, snap *tenant.Snapshot, account string) error {
	pub, created, err := tenant.ProducerKey(e.cli.CredsDir, account)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(e.out, "made the producer key of %s: seed in %s/%s.nk (give it to the "+
			"account's guards; it is their secret)\n", account, e.cli.CredsDir, account)
	}
	block, err := tenant.Producer{Account: account, NKey: pub,
		Projects: snap.AccountProjects(account)}.Block()
	if err != nil {
		return err
	}
	fmt.Fprintf(e.out, "\nReplace the account's user in the stream account's users of the "+
		"nats-server config, then reload it (nats-server --signal reload):\n\n%s", block)
	return nil
}

type natsUserCmd struct {
	Account     string `name:"account" required:"" help:"Account id."`
	PasswordEnv string `name:"password-env" help:"Print a password user whose password is this environment variable of the server, instead of an nkey user."`
}

// Validate checks the id.
func (n *natsUserCmd) Validate() error {
	if n.PasswordEnv != "" && !events.ValidID(n.PasswordEnv) {
		return errors.New("--password-env must be letters, digits, _ or -")
	}
	return events.CheckID("--account", n.Account)
}

func (n *natsUserCmd) run(e *env) error {
	reg, err := e.registry()
	if err != nil {
		return err
	}
	snap := reg.Snapshot()
	if len(snap.AccountProjects(n.Account)) == 0 {
		fmt.Fprintf(e.out, "# account %s has no provisioned project\n", n.Account)
	}
	if n.PasswordEnv == "" {
		return printUser(e, snap, n.Account)
	}
	block, err := tenant.Producer{Account: n.Account, User: "producer-" + n.Account,
		Password: "$" + n.PasswordEnv, Projects: snap.AccountProjects(n.Account)}.Block()
	if err != nil {
		return err
	}
	_, err = io.WriteString(e.out, block)
	return err
}

type natsUsersCmd struct{}

func (natsUsersCmd) run(e *env) error {
	reg, err := e.registry()
	if err != nil {
		return err
	}
	users, err := tenant.ProducersConfig(reg.Snapshot(), e.cli.CredsDir)
	if err != nil {
		return err
	}
	_, err = io.WriteString(e.out, users)
	return err
}

type usageCmd struct {
	clickHouse
	Account string        `name:"account" required:"" help:"Account id."`
	Project string        `name:"project" required:"" help:"Project id."`
	Since   time.Duration `name:"since" default:"24h" help:"How far back to show."`
}

func (u *usageCmd) run(ctx context.Context, e *env) error {
	sc, err := store.NewScope(u.Account, u.Project)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	db, err := u.open(ctx, e.log)
	if err != nil {
		return err
	}
	defer db.Close()
	now := time.Now()
	counts, err := db.QuotaUsage(ctx, sc, now.Add(-u.Since), now.Add(time.Minute))
	if err != nil {
		return err
	}
	var total, over uint64
	fmt.Fprintln(e.out, "MINUTE (UTC)\tEVENTS\tOVER QUOTA")
	for _, c := range counts {
		if c.OverQuota == 0 {
			total += c.Events
			continue
		}
		fmt.Fprintf(e.out, "%s\t%d\t%d\n", c.Minute.Format("2006-01-02 15:04"), c.Events,
			c.OverQuota)
		total += c.Events
		over += c.OverQuota
	}
	fmt.Fprintf(e.out, "%d events in %s, %d over quota (minutes without any over quota "+
		"are not listed)\n", total, u.Since, over)
	return nil
}

type offboardCmd struct {
	clickHouse
	natsFlags
	Account string `name:"account" required:"" help:"Account id."`
	Project string `name:"project" help:"Project id; without it the whole account goes."`
	Yes     bool   `name:"yes" help:"Do not ask for confirmation."`
	Actor   string `name:"actor" env:"GUARD_ACTOR" help:"Who offboards, for the deletion log; default the OS user and host."`

	AlertBuckets    []string      `name:"alert-buckets" default:"GUARD_ALERT_SUBS,GUARD_ALERT_STATE,GUARD_ALERT_SENT,GUARD_ALERT_DELIVERIES" help:"KV buckets keyed <account>.<project>.… whose tenant keys go too."`
	SubjectPrefixes []string      `name:"subject-prefixes" default:"guard_alert_outbox." help:"Subject prefixes besides guard.v1. under which tenants' messages live as <prefix><account>.<project>."`
	Settle          time.Duration `name:"settle" default:"2s" help:"Wait before the second ClickHouse pass, for a batch the ingester held."`
}

// Validate checks the ids before anything connects.
func (o *offboardCmd) Validate() error {
	if err := events.CheckID("--account", o.Account); err != nil {
		return err
	}
	if o.Project != "" {
		return events.CheckID("--project", o.Project)
	}
	return nil
}

func (o *offboardCmd) run(ctx context.Context, e *env) error {
	what := "account " + o.Account + " with every project of it"
	if o.Project != "" {
		what = "project " + o.Project + " of account " + o.Account
	}
	if !o.Yes {
		fmt.Fprintf(e.out, "This removes %s: decisions, quota usage, exports log, stream "+
			"messages, lanes, alert subscriptions and policies. It cannot be undone.\n"+
			"Type the account id to go on: ", what)
		line, _ := bufio.NewReader(e.in).ReadString('\n')
		if strings.TrimSpace(line) != o.Account {
			return errors.New("not confirmed; nothing removed")
		}
	}
	actor := o.Actor
	if actor == "" {
		actor = defaultActor()
	}

	db, err := o.open(ctx, e.log)
	if err != nil {
		return err
	}
	defer db.Close()
	nc, js, err := o.connect()
	if err != nil {
		return err
	}
	defer nc.Close()

	ob := &tenant.Offboarder{Store: db, JS: js, PolicyRoot: e.cli.Policies,
		CredsDir: e.cli.CredsDir, AlertBuckets: o.AlertBuckets,
		SubjectPrefixes: o.SubjectPrefixes, Settle: o.Settle, Log: e.log}
	rep, err := ob.Offboard(ctx, actor, o.Account, o.Project)
	printOffboard(e.out, rep)
	if err != nil {
		return fmt.Errorf("offboard stopped; run it again to finish: %w", err)
	}
	return nil
}

func printOffboard(w io.Writer, r tenant.OffboardReport) {
	rows, parts := r.Rows()
	fmt.Fprintf(w, "\nremoved by %s at %s:\n", r.Actor, r.At.Format(time.RFC3339))
	fmt.Fprintf(w, "  clickhouse: %d rows, %d partitions dropped\n", rows, parts)
	for _, t := range r.Tables {
		how := fmt.Sprintf("%d partitions", t.Partitions)
		if t.Mutation {
			how = "mutation"
		}
		fmt.Fprintf(w, "    %s: %d rows (%s)\n", t.Table, t.Rows, how)
	}
	fmt.Fprintf(w, "  stream messages: %d\n", r.Messages())
	for _, s := range r.Streams {
		fmt.Fprintf(w, "    %s %s: %d\n", s.Stream, s.Subject, s.Messages)
	}
	fmt.Fprintf(w, "  consumers: %d %v\n", len(r.Consumers), r.Consumers)
	fmt.Fprintf(w, "  alert keys: %d\n", r.AlertKeys)
	fmt.Fprintf(w, "  policy folders: %d\n", r.PolicyFolders)
	fmt.Fprintf(w, "  producer key removed: %v\n", r.ProducerKey)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

func defaultActor() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}
