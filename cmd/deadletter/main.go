// Command deadletter inspects and replays the dead letters of a tenant:
//
//	deadletter list   --account A --project P [--reason R] [--since D]
//	deadletter show   SEQ [--account A --project P] [--raw]
//	deadletter replay --account A --project P (--seq N... | --reason R | --all) [--dry-run]
//
// A replay republishes the original bytes to the original subject, only
// when that subject is the tenant's own decision subject, with the header
// Guard-Replay-Of, and records it so that the same dead letter is not
// replayed twice. Replay after the fix: a payload still invalid becomes a
// new dead letter.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/cmdline"
	"github.com/guardwatch/observatory/internal/deadletter"
	"github.com/guardwatch/observatory/internal/events"
)

type cli struct {
	NATSURL   string `name:"nats-url" env:"GUARD_NATS_URL" default:"nats://127.0.0.1:4222" help:"NATS server URL."`
	NATSCreds string `name:"nats-creds" env:"GUARD_NATS_CREDS" type:"existingfile" help:"NATS credentials file."`
	Stream    string `name:"stream" env:"GUARD_STREAM" default:"GUARD" help:"JetStream stream name."`

	List   listCmd   `cmd:"" help:"List a tenant's dead letters: seq, time, reason, detail, original subject."`
	Show   showCmd   `cmd:"" help:"Print one dead letter's headers and payload."`
	Replay replayCmd `cmd:"" help:"Republish dead letters to their decision subject after a fix."`
}

type tenant struct {
	Account string `name:"account" help:"Account id."`
	Project string `name:"project" help:"Project id."`
}

func (t tenant) check(required bool) error {
	if !required && t.Account == "" && t.Project == "" {
		return nil
	}
	if err := events.CheckID("--account", t.Account); err != nil {
		return err
	}
	return events.CheckID("--project", t.Project)
}

type listCmd struct {
	tenant
	Unscoped bool   `name:"unscoped" help:"List dead letters whose subject named no valid tenant instead."`
	Reason   string `name:"reason" help:"Only this rejection reason."`
	Since    string `name:"since" help:"Only dead letters stored after this: a duration back from now (24h) or an RFC 3339 time."`

	reason events.Reason
	since  time.Time
}

// Validate checks the flags before anything connects.
func (l *listCmd) Validate() error {
	var err error
	if l.reason, err = parseReason(l.Reason); err != nil {
		return err
	}
	if l.since, err = parseSince(l.Since, time.Now()); err != nil {
		return err
	}
	if l.Unscoped {
		if l.Account != "" || l.Project != "" {
			return errors.New("--unscoped lists letters of no tenant: drop --account and --project")
		}
		return nil
	}
	return l.check(true)
}

type showCmd struct {
	tenant
	Seq uint64 `arg:"" name:"seq" help:"Stream sequence of the dead letter."`
	Raw bool   `name:"raw" help:"Write the payload bytes exactly, without headers."`
}

// Validate checks the flags before anything connects.
func (s *showCmd) Validate() error { return s.check(false) }

type replayCmd struct {
	tenant
	Seq    []uint64 `name:"seq" help:"Dead letters to replay, by stream sequence."`
	Reason string   `name:"reason" help:"Replay every dead letter with this reason."`
	All    bool     `name:"all" help:"Replay every dead letter of the tenant."`
	Since  string   `name:"since" help:"Only dead letters stored after this (duration or RFC 3339)."`
	DryRun bool     `name:"dry-run" help:"Say what would be replayed, publish nothing."`

	reason events.Reason
	since  time.Time
}

// Validate checks the flags before anything connects.
func (r *replayCmd) Validate() error {
	var err error
	if r.reason, err = parseReason(r.Reason); err != nil {
		return err
	}
	if r.since, err = parseSince(r.Since, time.Now()); err != nil {
		return err
	}
	if len(r.Seq) == 0 && r.reason == "" && !r.All {
		return errors.New("choose what to replay: --seq, --reason or --all")
	}
	return r.check(true)
}

// env is what the commands share: the stream and where to print.
type env struct {
	js     jetstream.JetStream
	stream string
	out    io.Writer
}

// errUsage wraps flag errors, which exit with status 2.
var errUsage = cmdline.ErrUsage

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "deadletter: %v\n", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	var c cli
	kctx, err := cmdline.Parse(&c, "deadletter",
		"Inspect and replay the dead letters of a tenant.", args, stdout, stderr)
	if err != nil || kctx == nil {
		return err
	}

	opts := []nats.Option{nats.Name("guard-deadletter")}
	if c.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	}
	nc, err := nats.Connect(c.NATSURL, opts...)
	if err != nil {
		return fmt.Errorf("connect nats %s: %w", c.NATSURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	e := &env{js: js, stream: c.Stream, out: stdout}

	switch kctx.Command() {
	case "list":
		return c.List.run(ctx, e)
	case "show <seq>":
		return c.Show.run(ctx, e)
	case "replay":
		return c.Replay.run(ctx, e)
	}
	return fmt.Errorf("unknown command %q", kctx.Command())
}

func (l *listCmd) run(ctx context.Context, e *env) error {
	in := deadletter.NewInspector(e.js, e.stream)
	var letters []deadletter.Letter
	var err error
	if l.Unscoped {
		letters, err = in.ListUnscoped(ctx, l.since)
	} else {
		letters, err = in.List(ctx, deadletter.Query{Account: l.Account, Project: l.Project,
			Reason: l.reason, Since: l.since})
	}
	if err != nil {
		return err
	}
	if l.reason != "" && l.Unscoped {
		letters = slices.DeleteFunc(letters, func(x deadletter.Letter) bool {
			return x.Reason != l.reason
		})
	}

	tw := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tREASON\tDETAIL\tORIGINAL SUBJECT\tREPLAYED AS")
	counts := map[events.Reason]int{}
	for _, x := range letters {
		replayed := "-"
		if x.ReplayedAs != 0 {
			replayed = strconv.FormatUint(x.ReplayedAs, 10)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", x.Seq,
			x.Time.UTC().Format(time.RFC3339Nano), printable(string(x.Reason), 40),
			printable(x.Detail, 120), printable(x.OriginalSubject, 200), replayed)
		counts[x.Reason]++
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "%d dead letters%s\n", len(letters), summary(counts))
	return nil
}

func (s *showCmd) run(ctx context.Context, e *env) error {
	in := deadletter.NewInspector(e.js, e.stream)
	l, err := in.Get(ctx, s.Seq, s.Account, s.Project)
	if err != nil {
		return err
	}
	if s.Raw {
		_, err := e.out.Write(l.Data)
		return err
	}
	fmt.Fprintf(e.out, "Seq: %d\nTime: %s\nSubject: %s\n", l.Seq,
		l.Time.UTC().Format(time.RFC3339Nano), printable(l.Subject, 0))
	if l.ReplayedAs != 0 {
		fmt.Fprintf(e.out, "Replayed-As: %d\n", l.ReplayedAs)
	}
	keys := make([]string, 0, len(l.Header))
	for k := range l.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range l.Header[k] {
			fmt.Fprintf(e.out, "%s: %s\n", printable(k, 0), printable(v, 0))
		}
	}
	fmt.Fprintf(e.out, "Payload: %d bytes\n", len(l.Data))
	if utf8.Valid(l.Data) && !hasControl(string(l.Data)) {
		fmt.Fprintf(e.out, "%s\n", l.Data)
	} else {
		// Escaped so that hostile bytes cannot drive the terminal; --raw
		// gives them exactly.
		fmt.Fprintf(e.out, "%s\n", escape(string(l.Data)))
	}
	return nil
}

func (r *replayCmd) run(ctx context.Context, e *env) error {
	q := deadletter.Query{Account: r.Account, Project: r.Project, Reason: r.reason,
		Since: r.since, Seqs: r.Seq}
	in := deadletter.NewInspector(e.js, e.stream)

	if r.DryRun {
		letters, err := in.List(ctx, q)
		if err != nil {
			return err
		}
		for _, l := range letters {
			fmt.Fprintf(e.out, "would replay %d (%s) to %s\n", l.Seq, l.Reason,
				printable(l.OriginalSubject, 200))
		}
		fmt.Fprintf(e.out, "%d dead letters selected\n", len(letters))
		return nil
	}

	outcomes, err := in.Replay(ctx, q, bus.NewPublisher(e.js, 30*time.Second))
	var replayed, skipped int
	for _, o := range outcomes {
		if o.Skipped != "" {
			skipped++
			fmt.Fprintf(e.out, "skipped %d: %s\n", o.Letter.Seq, printable(o.Skipped, 300))
			continue
		}
		replayed++
		fmt.Fprintf(e.out, "replayed %d as %d\n", o.Letter.Seq, o.NewSeq)
	}
	fmt.Fprintf(e.out, "%d replayed, %d skipped\n", replayed, skipped)
	if err != nil {
		return err
	}
	if missing := missingSeqs(r.Seq, outcomes); len(missing) > 0 {
		return fmt.Errorf("not dead letters of %s/%s: %v", r.Account, r.Project, missing)
	}
	return nil
}

// missingSeqs lists the asked-for sequences that matched no dead letter.
func missingSeqs(asked []uint64, got []deadletter.Outcome) []uint64 {
	var out []uint64
	for _, s := range asked {
		if !slices.ContainsFunc(got, func(o deadletter.Outcome) bool { return o.Letter.Seq == s }) {
			out = append(out, s)
		}
	}
	return out
}

func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("--since %s: must be a positive duration", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: not a duration (24h) or an RFC 3339 time", s)
	}
	return t, nil
}

func parseReason(s string) (events.Reason, error) {
	if s == "" {
		return "", nil
	}
	if slices.Contains(events.Reasons, events.Reason(s)) {
		return events.Reason(s), nil
	}
	names := make([]string, len(events.Reasons))
	for i, r := range events.Reasons {
		names[i] = string(r)
	}
	return "", fmt.Errorf("--reason %q: not one of %s", s, strings.Join(names, ", "))
}

func summary(counts map[events.Reason]int) string {
	if len(counts) == 0 {
		return ""
	}
	keys := make([]string, 0, len(counts))
	for r := range counts {
		keys = append(keys, string(r))
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", printable(k, 40), counts[events.Reason(k)])
	}
	return ": " + strings.Join(parts, " ")
}

// printable makes a header value safe to print in a table: control
// characters and invalid UTF-8 are escaped, and it is clipped to n bytes
// when n > 0. Dead letters carry what producers sent.
func printable(s string, n int) string {
	if !utf8.ValidString(s) || strings.ContainsFunc(s, unsafeRune) {
		s = escape(s)
	}
	if n > 0 && len(s) > n {
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n] + "…"
	}
	return s
}

// escape writes invalid bytes as \xNN and unsafe characters as Go escapes,
// and keeps the rest as it is.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unsafeRune(r):
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// hasControl reports characters other than newline and tab that could
// move the cursor or hide text on a terminal.
func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r != '\n' && r != '\t' && unsafeRune(r) })
}

func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || r == utf8.RuneError || unicode.Is(unicode.Cf, r)
}
