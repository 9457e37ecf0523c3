package main

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/quota"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/tenant"
	"github.com/guardwatch/observatory/internal/tenant/tenanttest"
	"github.com/guardwatch/observatory/internal/testenv"
)

// The ClickHouse that testenv may start for this test stops with the test
// process (its script watches the process), so no TestMain is needed here.

func TestIngestWithLanes(t *testing.T) {
	addr := testenv.ClickHouse(t)
	dbName := testenv.Database(t, addr)
	acme := tenant.Key{Account: "acme", Project: "proj_prod"}
	globex := tenant.Key{Account: "globex", Project: "proj_prod"}
	tiersFile, root := tenanttest.Tree(t, tenanttest.Tiers,
		map[tenant.Key]string{acme: "free", globex: "pro"})
	natsAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))

	var c cli
	parser, err := kong.New(&c)
	require.NoError(t, err)
	_, err = parser.Parse([]string{"--embed-nats-listen", natsAddr,
		"--embed-nats-store", filepath.Join(t.TempDir(), "nats"),
		"--clickhouse-addr", addr, "--clickhouse-db", dbName, "--http-addr", "127.0.0.1:0",
		"--batch-wait", "100ms", "--tiers", tiersFile, "--policies", root,
		"--tenants-reload", "1s", "--quota-usage-flush", "1s"})
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, c, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	var nc *nats.Conn
	require.Eventually(t, func() bool {
		nc, err = nats.Connect("nats://" + natsAddr)
		return err == nil
	}, 30*time.Second, 50*time.Millisecond)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	db, err := store.Open(t.Context(), store.Config{Addr: addr, Database: dbName})
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	pub := bus.NewPublisher(js, 10*time.Second)
	g := gen.New(9, nil, nil)

	// Two provisioned projects with the same id, and one without a folder
	// (read by the rest lane).
	initech := tenant.Key{Account: "initech", Project: "chat"}
	publishAndSee := func(k tenant.Key, n, want int) {
		t.Helper()
		for range n {
			require.NoError(t, pub.Publish(t.Context(),
				g.NextFor(gen.Tenant{Account: k.Account, Project: k.Project})))
		}
		sc, err := store.NewScope(k.Account, k.Project)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			got, err := db.Count(t.Context(), sc, filter.Filter{
				From: time.Now().Add(-time.Hour), To: time.Now().Add(time.Hour)})
			return err == nil && got == uint64(want)
		}, 30*time.Second, 50*time.Millisecond, "decisions of %s", k)
	}
	publishAndSee(acme, 120, 120)
	publishAndSee(globex, 30, 30)
	publishAndSee(initech, 10, 10)

	st, err := js.Stream(t.Context(), "GUARD")
	require.NoError(t, err)
	for _, k := range []tenant.Key{acme, globex} {
		_, err := st.Consumer(t.Context(), quota.LaneName("ingest", k))
		require.NoError(t, err, "lane of %s", k)
	}
	_, err = st.Consumer(t.Context(), quota.LaneName("ingest", initech))
	require.Error(t, err, "no lane without a folder")

	// acme is on free (50/s, burst 50): some of its 120 were over quota,
	// and the count reaches the usage table.
	sc, err := store.NewScope(acme.Account, acme.Project)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		counts, err := db.QuotaUsage(t.Context(), sc, time.Now().Add(-time.Hour),
			time.Now().Add(time.Hour))
		var events, over uint64
		for _, c := range counts {
			events += c.Events
			over += c.OverQuota
		}
		return err == nil && events >= 120 && over > 0
	}, 30*time.Second, 100*time.Millisecond)

	// A project provisioned while ingest runs gets its lane at the next
	// reload.
	tenanttest.SetTier(t, root, initech, "pro")
	require.Eventually(t, func() bool {
		_, err := st.Consumer(t.Context(), quota.LaneName("ingest", initech))
		return err == nil
	}, 30*time.Second, 100*time.Millisecond)
	publishAndSee(initech, 15, 25)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
