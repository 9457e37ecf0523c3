package faults_test

import (
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/faultnet"
)

var (
	outage = flag.Duration("faults.outage", 0,
		"run TestClickHouseOutageMemory with ClickHouse unreachable this long (e.g. 60s)")
	outageRate = flag.Int("faults.outage-rate", 10_000,
		"events per second published during TestClickHouseOutageMemory")
)

// TestClickHouseOutageMemory measures the ingester, with its default
// settings, while ClickHouse is unreachable and traffic keeps coming: its
// peak memory, the backlog the stream holds, and the time to catch up.
// It takes longer than the suite may, so it runs only when asked:
//
//	go test ./test/faults -run TestClickHouseOutageMemory -faults.outage=60s -v
func TestClickHouseOutageMemory(t *testing.T) {
	if *outage <= 0 {
		t.Skip("opt-in: -faults.outage=60s")
	}
	e := newEnv(t, "")
	proxy, err := faultnet.Listen(e.chAddr)
	require.NoError(t, err)
	t.Cleanup(func() { proxy.Close() })
	in := e.startIngest("ingest", "--nats-url", e.natsURL, "--clickhouse-addr",
		proxy.Addr(), "--clickhouse-db", e.db)
	rssBefore, _ := in.memory()

	proxy.Cut()
	start := time.Now()
	count := int(outage.Seconds() * float64(*outageRate))
	g := e.startGenerator("gen", *outageRate, count, 0, 909)
	var maxRSS int64
	var maxPending uint64
	for g.running() {
		rss, _ := in.memory()
		maxRSS = max(maxRSS, rss)
		if info, err := e.consumer(); err == nil {
			maxPending = max(maxPending, info.NumPending+uint64(info.NumAckPending))
		}
		time.Sleep(250 * time.Millisecond)
	}
	_, peak := in.memory()
	published := time.Since(start)
	tr := g.finish(t, finishTimeout)
	code, body, _ := in.get("/healthz")

	proxy.Restore()
	restored := time.Now()
	r := e.settle(tr, 5*time.Minute)
	catchUp := time.Since(restored)
	r.Scenario = fmt.Sprintf("ClickHouse unreachable %s at %d/s (opt-in)", *outage,
		*outageRate)
	r.Took = time.Since(start)
	r.Notes = fmt.Sprintf("published %d in %s (%.0f/s); ingester RSS %d MiB before, "+
		"max %d MiB, VmHWM %d MiB; stream backlog up to %d; caught up %s after restore; "+
		"/healthz %d during the outage",
		tr.total, published.Round(time.Second), float64(tr.total)/published.Seconds(),
		rssBefore>>20, maxRSS>>20, peak>>20, maxPending, catchUp.Round(time.Second), code)
	t.Logf("/healthz during the outage: %s", body)
	record(t, r)
	printReport(t)
	r.check(t)
}
