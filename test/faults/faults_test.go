package faults_test

import (
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
)

// TestFaults runs each fault while traffic flows and records a row of the
// report per fault; the table is printed at the end and kept in
// .artifacts/faults.md.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault suite starts real processes")
	}
	t.Cleanup(func() { printReport(t) })
	for _, sc := range []struct {
		name string
		run  func(t *testing.T) result
	}{
		{"ingester SIGKILL x3 mid-batch", ingesterKilled},
		{"ClickHouse SIGKILL and restart", clickHouseKilled},
		{"NATS restart x2 while publishing", natsRestarted},
		{"ingester with embedded NATS SIGKILL x2 (NATS crash)", embeddedNATSKilled},
		{"two ingesters, one SIGKILL", oneOfTwoKilled},
		{"ClickHouse slow (throttled link)", clickHouseSlow},
		{"poison storm, 10% invalid at full rate", poisonStorm},
	} {
		t.Run(sc.name, func(t *testing.T) {
			start := time.Now()
			r := sc.run(t)
			r.Scenario = sc.name
			r.Took = time.Since(start)
			record(t, r)
			r.check(t)
		})
	}
}

const (
	rate          = 3000 // events per second of the fault scenarios
	finishTimeout = 90 * time.Second
	settleTimeout = 90 * time.Second
)

func ingesterKilled(t *testing.T) result {
	e := newEnv(t, "")
	in := e.startIngest("ingest-1", e.ingestArgs("")...)
	g := e.startGenerator("gen", rate, 8*rate, 0.02, 101)

	var inFlight []int
	for i := range 3 {
		time.Sleep(1500 * time.Millisecond)
		inFlight = append(inFlight, e.waitInFlight(2*time.Second))
		in.kill()
		time.Sleep(200 * time.Millisecond)
		in = e.startIngest(fmt.Sprintf("ingest-%d", i+2), e.ingestArgs("")...)
	}
	tr := g.finish(t, finishTimeout)
	r := e.settle(tr, settleTimeout)
	r.Notes = fmt.Sprintf("killed with %v messages awaiting ack", inFlight)
	return r
}

func clickHouseKilled(t *testing.T) result {
	ch := ownClickHouse(t)
	e := newEnv(t, ch.addr())
	in := e.startIngest("ingest", e.ingestArgs("")...)
	g := e.startGenerator("gen", rate, 7*rate, 0.02, 202)

	time.Sleep(2 * time.Second)
	inFlight := e.waitInFlight(2 * time.Second)
	ch.kill(t)
	down := time.Now()
	health := in.waitHealth(t, "/healthz", `"clickhouse":"`, 10*time.Second)
	require.NotContains(t, health, `"clickhouse":"ok"`)
	time.Sleep(3 * time.Second)
	require.NoError(t, ch.start())
	outage := time.Since(down)

	tr := g.finish(t, finishTimeout)
	r := e.settle(tr, settleTimeout)
	r.Notes = fmt.Sprintf("down %s, killed with %d awaiting ack; /healthz 503 named clickhouse",
		outage.Round(100*time.Millisecond), inFlight)
	return r
}

func natsRestarted(t *testing.T) result {
	e := newEnv(t, "")
	e.startIngest("ingest", e.ingestArgs("")...)
	g := e.startGenerator("gen", rate, 7*rate, 0.02, 303)

	time.Sleep(1500 * time.Millisecond)
	e.nats.Restart(t)
	time.Sleep(2500 * time.Millisecond)
	e.nats.Restart(t)

	tr := g.finish(t, finishTimeout)
	r := e.settle(tr, settleTimeout)
	r.Notes = fmt.Sprintf("file store kept; generator repeated %s publish attempts",
		logField(g.log, "retries"))
	return r
}

// embeddedNATSKilled runs the ingester with the NATS server inside it, as
// the demo does, and kills both at once: the JetStream file store must
// recover from a crash, not a clean shutdown, while the generator retries.
func embeddedNATSKilled(t *testing.T) result {
	e := newEnv(t, "")
	e.nats.Shutdown() // this scenario's NATS lives in the ingester
	listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
	store := t.TempDir()
	args := append(withoutFlag(e.ingestArgs(""), "--nats-url"),
		"--embed-nats-listen", listen, "--embed-nats-store", store)
	in := e.startIngest("ingest-1", args...)
	e.connect("nats://" + listen)
	g := e.startGenerator("gen", rate, 7*rate, 0.02, 707)

	var inFlight []int
	for i := range 2 {
		time.Sleep(2 * time.Second)
		inFlight = append(inFlight, e.waitInFlight(2*time.Second))
		in.kill()
		time.Sleep(500 * time.Millisecond)
		in = e.startIngest(fmt.Sprintf("ingest-%d", i+2), args...)
	}
	tr := g.finish(t, finishTimeout)
	r := e.settle(tr, settleTimeout)
	r.Notes = fmt.Sprintf("NATS and ingester killed together with %v awaiting ack; "+
		"generator repeated %s publish attempts", inFlight, logField(g.log, "retries"))
	return r
}

func oneOfTwoKilled(t *testing.T) result {
	e := newEnv(t, "")
	a := e.startIngest("ingest-a", e.ingestArgs("")...)
	b := e.startIngest("ingest-b", e.ingestArgs("")...)
	g := e.startGenerator("gen", rate, 7*rate, 0.02, 404)

	time.Sleep(2500 * time.Millisecond)
	inFlight := e.waitInFlight(2 * time.Second)
	a.kill()

	tr := g.finish(t, finishTimeout)
	r := e.settle(tr, settleTimeout)
	rowsB := metric(t, b, "guard_ingest_rows_inserted_total")
	require.Positive(t, rowsB, "the survivor stored rows")
	r.Notes = fmt.Sprintf("killed with %d awaiting ack; survivor inserted %.0f rows",
		inFlight, rowsB)
	return r
}

func clickHouseSlow(t *testing.T) result {
	e := newEnv(t, "")
	th := newThrottle(t, e.chAddr, 256<<10)
	in := e.startIngest("ingest", append(e.ingestArgs(th.addr()), "--max-lag", "3000")...)
	g := e.startGenerator("gen", rate, 8*rate, 0, 505)

	// While ClickHouse is slow, sample the ingester's memory and the
	// backlog the stream holds.
	var maxPending uint64
	sampled := 0
	for g.running() {
		info, err := e.consumer()
		if err == nil {
			maxPending = max(maxPending, info.NumPending)
		}
		sampled++
		time.Sleep(200 * time.Millisecond)
	}
	ready := in.waitHealth(t, "/readyz", "lag: ", 10*time.Second)
	require.Contains(t, ready, "over the limit of 3000")
	_, peak := in.memory()
	tr := g.finish(t, finishTimeout)

	th.setRate(0)
	r := e.settle(tr, settleTimeout)
	r.Notes = fmt.Sprintf("link at 256 KiB/s; stream backlog up to %d; ingester VmHWM %d MiB; "+
		"/readyz 503 named the lag", maxPending, peak>>20)
	require.Greater(t, maxPending, uint64(5000), "the stream held the backlog")
	require.Less(t, peak, int64(300<<20), "ingester memory stays bounded")
	return r
}

func poisonStorm(t *testing.T) result {
	e := newEnv(t, "")
	e.startIngest("ingest", e.ingestArgs("")...)
	const n = 15000

	// Clean traffic first, as fast as the generator goes: the rate to
	// compare with.
	start := time.Now()
	clean := e.startGenerator("clean", 100_000, n, 0, 606).finish(t, finishTimeout)
	e.settle(clean, settleTimeout).check(t)
	cleanRate := float64(clean.validCount()) / time.Since(start).Seconds()

	start = time.Now()
	poison := e.startGenerator("poison", 100_000, n, 0.1, 607).finish(t, finishTimeout)
	all := newTraffic()
	all.add(clean)
	all.add(poison)
	r := e.settle(all, settleTimeout)
	poisonRate := float64(poison.validCount()) / time.Since(start).Seconds()

	byReason := map[events.Reason]int{}
	for _, rs := range poison.invalid {
		for reason, c := range rs {
			byReason[reason] += c
		}
	}
	var reasons []string
	for reason, c := range byReason {
		reasons = append(reasons, fmt.Sprintf("%s %d", reason, c))
	}
	sort.Strings(reasons)
	r.Notes = fmt.Sprintf("valid rows/s end to end: %.0f clean, %.0f in the storm (%.0f%%); "+
		"rejects: %s", cleanRate, poisonRate, 100*poisonRate/cleanRate, strings.Join(reasons, ", "))
	// Loose, as other test packages share the two cores.
	require.Greater(t, poisonRate, 0.4*cleanRate, "valid events flow at nearly the clean rate")
	return r
}

// withoutFlag drops a flag and its value from args.
func withoutFlag(args []string, flag string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == flag {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// metric sums every series of a counter or gauge on the ingester's
// /metrics page.
func metric(t *testing.T, in *ingester, name string) float64 {
	t.Helper()
	_, body, err := in.get("/metrics")
	require.NoError(t, err)
	var sum float64
	for line := range strings.SplitSeq(body, "\n") {
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		require.NoError(t, err, line)
		sum += v
	}
	return sum
}

// logField returns the last value of key=value in a text log.
func logField(path, key string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "?"
	}
	m := regexp.MustCompile(`\b`+key+`=(\S+)`).FindAllStringSubmatch(string(b), -1)
	if len(m) == 0 {
		return "?"
	}
	return m[len(m)-1][1]
}
