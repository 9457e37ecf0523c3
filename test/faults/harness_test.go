// Package faults_test breaks a running pipeline of real processes (the
// ingest and generator binaries, a JetStream NATS server and ClickHouse)
// while traffic flows, and then checks that every event the generator got
// an ack for is visible exactly once, and every invalid one is a dead
// letter with its reason.
package faults_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/deadletter"
	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// moduleRoot is the folder holding go.mod above the working directory.
func moduleRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	require.NoError(tb, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

var bins struct {
	once sync.Once
	dir  string
	err  error
}

// binaries builds the commands once per test process into
// .artifacts/faults/bin and returns that folder.
func binaries(tb testing.TB) string {
	tb.Helper()
	bins.once.Do(func() {
		root := moduleRoot(tb)
		bins.dir = filepath.Join(root, ".artifacts", "faults", "bin")
		cmd := exec.Command("go", "build", "-o", bins.dir+string(filepath.Separator),
			"./cmd/ingest", "./cmd/generator", "./cmd/deadletter")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			bins.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	require.NoError(tb, bins.err)
	return bins.dir
}

// proc is a child process whose output goes to a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // exit error, set once done is closed
}

// logDir is where the processes of a test write their output:
// .artifacts/faults/logs/<test>, kept after the run for a post-mortem.
func logDir(t *testing.T) string {
	t.Helper()
	name := strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' || r == ',' || r == '%' || r == '(' || r == ')' {
			return '_'
		}
		return r
	}, t.Name())
	dir := filepath.Join(moduleRoot(t), ".artifacts", "faults", "logs", name)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

func startProc(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(logDir(t), name+".log")
	f, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// The child goes when the test process dies, whatever kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start(), "start %s", name)
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- tail of %s log:\n%s", name, tail(logPath, 30))
		}
	})
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	if p.running() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// wait waits for the process to exit by itself.
func (p *proc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s still running after %s", p.name, timeout)
		return nil
	}
}

// memory reads the resident set size and its peak, in bytes, from
// /proc/<pid>/status.
func (p *proc) memory() (rss, peak int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		return 0, 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			peak = kb << 10
		}
	}
	return rss, peak
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// env is one scenario's world: a NATS server of its own, a ClickHouse
// database, and the binaries.
type env struct {
	t       *testing.T
	bin     string
	nats    *testenv.NATSServer
	natsURL string // the server clients use: nats, or an ingester's embedded one
	nc      *nats.Conn
	js      jetstream.JetStream

	chAddr string // where the test reads ClickHouse
	db     string
	conn   driver.Conn
}

// newEnv starts NATS and makes a database on the ClickHouse at chAddr,
// or on the shared test server when chAddr is empty.
func newEnv(t *testing.T, chAddr string) *env {
	t.Helper()
	e := &env{t: t, bin: binaries(t), nats: testenv.NATS(t)}
	if chAddr == "" {
		chAddr = testenv.ClickHouse(t)
		e.db = testenv.Database(t, chAddr)
	} else {
		e.db = "faults"
	}
	e.chAddr = chAddr
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{chAddr},
		DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	e.conn = conn
	if e.db == "faults" {
		require.NoError(t, conn.Exec(t.Context(), "CREATE DATABASE IF NOT EXISTS faults"))
	}

	e.connect(e.nats.URL())
	return e
}

// connect points the test's own NATS client, and the processes started
// from now on, at url.
func (e *env) connect(url string) {
	t := e.t
	t.Helper()
	if e.nc != nil {
		e.nc.Close()
	}
	e.natsURL = url
	nc, err := nats.Connect(url, nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	e.nc = nc
	e.js, err = jetstream.New(nc)
	require.NoError(t, err)
}

// ingestArgs are the settings of every test ingester: small batches and
// short waits, so that faults show within seconds.
func (e *env) ingestArgs(chAddr string) []string {
	if chAddr == "" {
		chAddr = e.chAddr
	}
	return []string{"--nats-url", e.natsURL, "--clickhouse-addr", chAddr,
		"--clickhouse-db", e.db, "--batch-size", "2000", "--batch-wait", "200ms",
		"--retry-delay", "200ms", "--max-retry-delay", "2s", "--ack-wait", "4s"}
}

// ingester is a running ingest process with its HTTP address.
type ingester struct {
	*proc
	http string
}

// startIngest starts an ingester and waits until it serves HTTP, which it
// does once the stream, consumer and store are ready.
func (e *env) startIngest(name string, args ...string) *ingester {
	t := e.t
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	args = append(args, "--http-addr", addr)
	in := &ingester{proc: startProc(t, name, filepath.Join(e.bin, "ingest"), args...),
		http: "http://" + addr}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, err := in.get("/healthz"); err == nil {
			return in
		}
		if !in.running() || time.Now().After(deadline) {
			t.Fatalf("ingester %s did not come up: %v\n%s", name, in.err, tail(in.log, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (in *ingester) get(path string) (int, string, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(in.http + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitHealth polls path until its body contains want (and the status is
// 503), returning the body, or fails the test.
func (in *ingester) waitHealth(t *testing.T, path, want string, timeout time.Duration) string {
	t.Helper()
	var last string
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		code, body, err := in.get(path)
		if err == nil && code == http.StatusServiceUnavailable && strings.Contains(body, want) {
			return body
		}
		last = fmt.Sprintf("%d %s %v", code, body, err)
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s never reported %q; last answer: %s", path, want, last)
	return ""
}

// traffic is what a generator run got acknowledged by the stream.
type traffic struct {
	valid   map[string]map[string]bool // tenant "account/project" -> event ids
	invalid map[string]map[events.Reason]int
	total   int
}

func (tr *traffic) validCount() int {
	n := 0
	for _, ids := range tr.valid {
		n += len(ids)
	}
	return n
}

func (tr *traffic) invalidCount() int {
	n := 0
	for _, rs := range tr.invalid {
		for _, c := range rs {
			n += c
		}
	}
	return n
}

func (tr *traffic) add(o *traffic) {
	for k, ids := range o.valid {
		if tr.valid[k] == nil {
			tr.valid[k] = map[string]bool{}
		}
		for id := range ids {
			tr.valid[k][id] = true
		}
	}
	for k, rs := range o.invalid {
		if tr.invalid[k] == nil {
			tr.invalid[k] = map[events.Reason]int{}
		}
		for r, c := range rs {
			tr.invalid[k][r] += c
		}
	}
	tr.total += o.total
}

func newTraffic() *traffic {
	return &traffic{valid: map[string]map[string]bool{},
		invalid: map[string]map[events.Reason]int{}}
}

// generator is a running generator process that logs stored ids.
type generator struct {
	*proc
	ids string
}

const testTenants = "acme/proj_prod:3,globex/proj_prod:2,initech/chat-1:1"

// startGenerator publishes count events at rate per second, a share of
// them invalid.
func (e *env) startGenerator(name string, rate, count int, invalid float64,
	seed uint64) *generator {
	t := e.t
	t.Helper()
	ids := filepath.Join(t.TempDir(), name+".ids")
	args := []string{"--nats-url", e.natsURL, "--rate", strconv.Itoa(rate),
		"--count", strconv.Itoa(count), "--invalid", strconv.FormatFloat(invalid, 'f', -1, 64),
		"--seed", strconv.FormatUint(seed, 10), "--tenants", testTenants, "--ids-out", ids,
		"--ack-timeout", "2s"}
	return &generator{proc: startProc(t, name, filepath.Join(e.bin, "generator"), args...),
		ids: ids}
}

// finish waits for the generator to exit cleanly and reads its id log.
func (g *generator) finish(t *testing.T, timeout time.Duration) *traffic {
	t.Helper()
	require.NoError(t, g.wait(t, timeout), "generator: %s", tail(g.log, 10))
	f, err := os.Open(g.ids)
	require.NoError(t, err)
	defer f.Close()
	tr := newTraffic()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(sc.Text(), "\t")
		require.Len(t, parts, 4, "id log line %q", sc.Text())
		tenant := parts[1] + "/" + parts[2]
		switch parts[0] {
		case "valid":
			if tr.valid[tenant] == nil {
				tr.valid[tenant] = map[string]bool{}
			}
			require.False(t, tr.valid[tenant][parts[3]], "id %s logged twice", parts[3])
			tr.valid[tenant][parts[3]] = true
		case "invalid":
			if tr.invalid[tenant] == nil {
				tr.invalid[tenant] = map[events.Reason]int{}
			}
			tr.invalid[tenant][events.Reason(parts[3])]++
		}
		tr.total++
	}
	require.NoError(t, sc.Err())
	return tr
}

// consumer returns the ingest consumer's state, as the broker sees it.
func (e *env) consumer() (*jetstream.ConsumerInfo, error) {
	ctx, cancel := context.WithTimeout(e.t.Context(), 3*time.Second)
	defer cancel()
	c, err := e.js.Consumer(ctx, "GUARD", "ingest")
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

// waitInFlight waits up to timeout until messages are delivered but not
// acknowledged, so that a fault lands mid-batch, and returns how many.
func (e *env) waitInFlight(timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		info, err := e.consumer()
		if err == nil && info.NumAckPending > 0 || time.Now().After(deadline) {
			if info == nil {
				return 0
			}
			return info.NumAckPending
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// result is one row of the report.
type result struct {
	Scenario      string
	Published     int // messages the generator got an ack for
	Valid         int
	StoredRows    uint64 // rows in ClickHouse, redelivered copies included
	Visible       uint64 // uniqExact(event_id) summed over tenants
	Missing       int    // published ids not listed
	Unexpected    int    // listed ids never published
	VisibleDups   int    // ids listed more than once
	DeadLettered  int    // distinct rejected payloads
	DeadLetterDup int    // extra copies of dead letters
	DeadLetterOff int    // per tenant and reason, |expected - found|
	Notes         string
	Took          time.Duration
}

// settle waits until ClickHouse shows every published event, then compares
// what users see (uniqExact counts, LIMIT 1 BY lists) and the dead letters
// with what was published.
func (e *env) settle(tr *traffic, timeout time.Duration) result {
	t := e.t
	t.Helper()
	r := result{Published: tr.total, Valid: tr.validCount()}
	ctx := t.Context()

	deadline := time.Now().Add(timeout)
	for {
		visible, raw, err := e.counts(ctx)
		done := err == nil
		for tenant, ids := range tr.valid {
			done = done && visible[tenant] >= uint64(len(ids))
		}
		if done || time.Now().After(deadline) {
			r.StoredRows, r.Visible = 0, 0
			for k := range raw {
				r.StoredRows += raw[k]
				r.Visible += visible[k]
			}
			break
		}
		time.Sleep(250 * time.Millisecond)
	}

	for tenant, ids := range tr.valid {
		listed := e.list(ctx, tenant)
		seen := map[string]bool{}
		for _, id := range listed {
			if seen[id] {
				r.VisibleDups++
			}
			seen[id] = true
			if !ids[id] {
				r.Unexpected++
			}
		}
		for id := range ids {
			if !seen[id] {
				r.Missing++
			}
		}
	}

	want := tr.invalidCount()
	for {
		found, copies, off := e.deadLetters(ctx, tr)
		r.DeadLettered, r.DeadLetterDup, r.DeadLetterOff = found, copies, off
		if found >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	return r
}

// counts returns uniqExact(event_id) and count() per tenant.
func (e *env) counts(ctx context.Context) (visible, raw map[string]uint64, err error) {
	rows, err := e.conn.Query(ctx, "SELECT account_id, project_id, uniqExact(event_id), count()"+
		" FROM "+e.db+".decisions GROUP BY account_id, project_id")
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	visible, raw = map[string]uint64{}, map[string]uint64{}
	for rows.Next() {
		var a, p string
		var u, c uint64
		if err := rows.Scan(&a, &p, &u, &c); err != nil {
			return nil, nil, err
		}
		visible[a+"/"+p], raw[a+"/"+p] = u, c
	}
	return visible, raw, rows.Err()
}

// list returns the tenant's event ids the way lists show them: one per id.
func (e *env) list(ctx context.Context, tenant string) []string {
	acct, proj, _ := strings.Cut(tenant, "/")
	rows, err := e.conn.Query(ctx, "SELECT event_id FROM "+e.db+".decisions"+
		" WHERE account_id = ? AND project_id = ? ORDER BY occurred_at, event_id"+
		" LIMIT 1 BY event_id", acct, proj)
	require.NoError(e.t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		require.NoError(e.t, rows.Scan(&id))
		out = append(out, id)
	}
	require.NoError(e.t, rows.Err())
	return out
}

// deadLetters reads every tenant's dead letters with the inspector. A
// payload dead-lettered twice (a redelivery, or a publish retried by the
// generator) counts once in found and once in copies.
func (e *env) deadLetters(ctx context.Context, tr *traffic) (found, copies, off int) {
	in := deadletter.NewInspector(e.js, "")
	tenants := map[string]bool{}
	for k := range tr.valid {
		tenants[k] = true
	}
	for k := range tr.invalid {
		tenants[k] = true
	}
	for tenant := range tenants {
		acct, proj, _ := strings.Cut(tenant, "/")
		letters, err := in.List(ctx, deadletter.Query{Account: acct, Project: proj})
		if err != nil {
			e.t.Logf("list dead letters of %s: %v", tenant, err)
			return 0, 0, -1
		}
		seen := map[[32]byte]bool{}
		byReason := map[events.Reason]int{}
		for _, l := range letters {
			h := sha256.Sum256(l.Data)
			if seen[h] {
				copies++
				continue
			}
			seen[h] = true
			byReason[l.Reason]++
			found++
		}
		for _, r := range events.Reasons {
			d := byReason[r] - tr.invalid[tenant][r]
			off += max(d, -d)
		}
	}
	return found, copies, off
}

// check fails the test unless the result shows every event once and every
// reject as a dead letter of its reason.
func (r result) check(t *testing.T) {
	t.Helper()
	require.Zero(t, r.Missing, "published events not visible")
	require.Zero(t, r.Unexpected, "visible events never published")
	require.Zero(t, r.VisibleDups, "events visible twice")
	require.EqualValues(t, r.Valid, r.Visible, "uniqExact over tenants")
	require.Zero(t, r.DeadLetterOff, "dead letters per tenant and reason differ from the rejects")
	require.Equal(t, r.Published-r.Valid, r.DeadLettered, "dead letters")
}

// report collects the rows of one test process and writes them, as they
// come, to .artifacts/faults.md.
var report struct {
	mu   sync.Mutex
	rows []result
}

func record(t *testing.T, r result) {
	t.Helper()
	t.Logf("%s: published %d (valid %d), stored rows %d, visible %d, missing %d, "+
		"visible duplicates %d, dead letters %d (+%d copies), took %s; %s",
		r.Scenario, r.Published, r.Valid, r.StoredRows, r.Visible, r.Missing, r.VisibleDups,
		r.DeadLettered, r.DeadLetterDup, r.Took.Round(100*time.Millisecond), r.Notes)
	report.mu.Lock()
	defer report.mu.Unlock()
	report.rows = append(report.rows, r)
	path := filepath.Join(moduleRoot(t), ".artifacts", "faults.md")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
		_ = os.WriteFile(path, []byte(table(report.rows)), 0o644)
	}
}

func table(rows []result) string {
	var b bytes.Buffer
	b.WriteString("| fault | published | valid | stored rows | visible | missing | " +
		"visible duplicates | dead-lettered | dead-letter copies | took | notes |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d | %d | %d | %s | %s |\n",
			r.Scenario, r.Published, r.Valid, r.StoredRows, r.Visible, r.Missing,
			r.VisibleDups, r.DeadLettered, r.DeadLetterDup, r.Took.Round(100*time.Millisecond),
			r.Notes)
	}
	return b.String()
}

// printReport writes the table of the rows recorded so far to the log.
func printReport(t *testing.T) {
	report.mu.Lock()
	defer report.mu.Unlock()
	if len(report.rows) > 0 {
		t.Logf("fault suite:\n%s", table(report.rows))
	}
}

// clickHouseServer is a ClickHouse of one test, which it may kill.
type clickHouseServer struct {
	dir       string
	tcp, http int
	script    string
}

func (s *clickHouseServer) addr() string { return "127.0.0.1:" + strconv.Itoa(s.tcp) }

// ownClickHouse starts a server with scripts/clickhouse.sh in a temporary
// folder on free ports, apart from the shared one, and stops it when the
// test ends.
func ownClickHouse(t *testing.T) *clickHouseServer {
	t.Helper()
	if os.Getenv(testenv.EnvRequireIntegration) == "0" {
		t.Skipf("integration tests disabled by %s=0", testenv.EnvRequireIntegration)
	}
	s := &clickHouseServer{dir: t.TempDir(), tcp: freePort(t), http: freePort(t),
		script: filepath.Join(moduleRoot(t), "scripts", "clickhouse.sh")}
	if err := s.start(); err != nil {
		if os.Getenv(testenv.EnvRequireIntegration) == "1" {
			t.Fatal(err)
		}
		t.Skipf("clickhouse unavailable: %v", err)
	}
	t.Cleanup(func() {
		out, err := exec.Command(s.script, "stop", s.dir).CombinedOutput()
		if err != nil {
			t.Logf("stop clickhouse: %v\n%s", err, out)
		}
	})
	return s
}

func (s *clickHouseServer) start() error {
	cmd := exec.Command(s.script, "start", s.dir, strconv.Itoa(s.tcp), strconv.Itoa(s.http))
	cmd.Env = append(os.Environ(), "CLICKHOUSE_WATCH_PID="+strconv.Itoa(os.Getpid()))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("start clickhouse: %w\n%s", err, out)
	}
	return nil
}

// kill sends SIGKILL to the server and waits until it is gone.
func (s *clickHouseServer) kill(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "pid"))
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	require.Eventually(t, func() bool {
		err := syscall.Kill(pid, 0)
		if errors.Is(err, syscall.ESRCH) {
			return true
		}
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return strings.Contains(string(st), ") Z ")
	}, 10*time.Second, 20*time.Millisecond, "clickhouse %d still running", pid)
}
