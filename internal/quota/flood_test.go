package quota_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/ingest"
	"github.com/guardwatch/observatory/internal/quota"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/tenant"
	"github.com/guardwatch/observatory/internal/tenant/tenanttest"
	"github.com/guardwatch/observatory/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var (
	flooder = tenant.Key{Account: "flood", Project: "app"}
	quiet   = tenant.Key{Account: "quiet", Project: "app"}
)

// floodResult holds the figures of one flood run.
type floodResult struct {
	Backlog       int           // flooder messages in the stream before ingest started
	Capacity      float64       // rows/s stored while draining the backlog alone
	Target        float64       // flooder's publish rate aimed at: ten times Capacity
	Published     int64         // flooder messages published during the window
	Window        time.Duration // how long both tenants published
	Stored        uint64        // rows stored during the window, every tenant
	QuietSent     int
	P50, P99, Max time.Duration // quiet tenant, publish to visible
	PubP99        time.Duration // quiet tenant, publish until the stream's ack
	AckedP99      time.Duration // quiet tenant, stream's ack to visible
}

func (r floodResult) String() string {
	stored := float64(r.Stored) / r.Window.Seconds()
	offered := float64(r.Published) / r.Window.Seconds()
	return fmt.Sprintf("capacity %.0f rows/s (draining a backlog of %d alone); flooder "+
		"aimed at %.0f/s and published %.0f/s (%.1fx capacity) for %s while the pipeline "+
		"stored %.0f rows/s; quiet tenant, %d events at 10/s: publish to visible "+
		"p50 %s, p99 %s, max %s (p99 of publish to the stream's ack %s, of ack to visible %s)",
		r.Capacity, r.Backlog, r.Target, offered, offered/r.Capacity, r.Window.Round(
			time.Second), stored, r.QuietSent, r.P50.Round(time.Millisecond),
		r.P99.Round(time.Millisecond), r.Max.Round(time.Millisecond),
		r.PubP99.Round(time.Millisecond), r.AckedP99.Round(time.Millisecond))
}

func floodWindow() time.Duration {
	if s, err := strconv.Atoi(os.Getenv("OBS_FLOOD_SECONDS")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 20 * time.Second
}

// TestQuietTenantUnaffectedByFlood floods the pipeline from one tenant and
// measures how long another tenant's events take from publish to visible.
func TestQuietTenantUnaffectedByFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("flood test takes a minute")
	}
	r := runFlood(t, true, floodWindow())
	t.Logf("with lanes: %s", r)
	// On a 2-vCPU machine busy with other suites the p99 was 1.4-4 s; the
	// bound leaves room for more contention. Through one shared consumer it
	// is the flooder's whole backlog: 16-32 s there.
	require.Less(t, r.P99, 10*time.Second, "quiet tenant's p99 publish to visible")
}

// TestFloodWithoutLanes is the same flood through the single shared
// consumer, for comparison. OBS_FLOOD_BASELINE=1 runs it.
func TestFloodWithoutLanes(t *testing.T) {
	if os.Getenv("OBS_FLOOD_BASELINE") != "1" {
		t.Skip("set OBS_FLOOD_BASELINE=1 to measure the shared consumer")
	}
	r := runFlood(t, false, floodWindow())
	t.Logf("one shared consumer: %s", r)
}

func runFlood(t *testing.T, lanes bool, window time.Duration) floodResult {
	ctx := t.Context()
	log := slog.New(slog.DiscardHandler)
	addr := testenv.ClickHouse(t)
	db, err := store.Open(ctx, store.Config{Addr: addr, Database: testenv.Database(t, addr),
		Logger: log})
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })

	srv := testenv.NATS(t)
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	require.NoError(t, err)
	st, err := bus.EnsureStream(ctx, js, bus.StreamConfig{})
	require.NoError(t, err)
	rest, err := bus.EnsureConsumer(ctx, st, bus.ConsumerConfig{Durable: "ingest"})
	require.NoError(t, err)

	tiersFile, root := tenanttest.Tree(t, tenanttest.Tiers,
		map[tenant.Key]string{flooder: "free", quiet: "pro"})
	reg, err := tenant.OpenRegistry(tiersFile, root, log)
	require.NoError(t, err)

	// The flooder cycles through a pool of realistic payloads; the
	// quiet tenant's events are all distinct.
	g := gen.New(1, []gen.Tenant{{Account: flooder.Account, Project: flooder.Project},
		{Account: quiet.Account, Project: quiet.Project}}, nil)
	pool := make([]*nats.Msg, 2000)
	for i := range pool {
		pool[i], err = bus.Message(g.NextFor(gen.Tenant{Account: flooder.Account,
			Project: flooder.Project}))
		require.NoError(t, err)
	}
	var published atomic.Int64
	// flood publishes n messages (n <= 0: until ctx ends), at most perSec
	// a second (perSec <= 0: as fast as the broker takes them).
	flood := func(ctx context.Context, n int, perSec float64) {
		lim := rate.NewLimiter(rate.Inf, 0)
		if perSec > 0 {
			lim = rate.NewLimiter(rate.Limit(perSec), max(1, int(perSec/100)))
		}
		for i := 0; n <= 0 || i < n; i++ {
			if lim.Wait(ctx) != nil {
				return
			}
			m := pool[i%len(pool)]
			if _, err := js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Data: m.Data,
				Header: m.Header}); err != nil {
				if ctx.Err() != nil {
					return
				}
				time.Sleep(10 * time.Millisecond)
				continue
			}
			published.Add(1)
		}
	}

	// A backlog first, to measure what the pipeline stores when it has
	// nothing else to do.
	res := floodResult{Backlog: 150_000}
	flood(ctx, res.Backlog, 0)
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		t.Fatal("backlog not stored by the stream")
	}
	published.Store(0)

	var cons jetstream.Consumer = rest
	var usage *quota.Usage
	if lanes {
		usage = quota.NewUsage(db, nil, log)
		l, err := quota.NewLanes(ctx, st, rest, reg, usage, quota.LanesConfig{}, log)
		require.NoError(t, err)
		cons = l
	}
	// Rows stored are read from the ingester's counter: the flooder's
	// repeated payloads fold together in the table.
	metrics := prometheus.NewRegistry()
	ing := ingest.New(ingest.Config{}, js, cons, db, metrics, log)
	ictx, stopIngest := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ing.Run(ictx)
	}()
	t.Cleanup(func() { stopIngest(); <-done })

	// Capacity: rows stored per second over five seconds of draining.
	time.Sleep(2 * time.Second)
	before, t0 := inserted(t, metrics), time.Now()
	time.Sleep(5 * time.Second)
	res.Capacity = float64(inserted(t, metrics)-before) / time.Since(t0).Seconds()
	res.Target = 10 * res.Capacity

	storedBefore := inserted(t, metrics)
	fctx, stopFlood := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		flood(fctx, 0, res.Target)
	}()

	// The quiet tenant publishes ten events a second; a poller notes when
	// each becomes visible.
	pub := bus.NewPublisher(js, 10*time.Second)
	var mu sync.Mutex
	sentAt := map[string]time.Time{}
	ackedAt := map[string]time.Time{}
	seenAt := map[string]time.Time{}
	pctx, stopPoll := context.WithCancel(ctx)
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		poll(pctx, t, db, &mu, seenAt)
	}()

	start := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	for time.Since(start) < window {
		<-tick.C
		ev := g.NextFor(gen.Tenant{Account: quiet.Account, Project: quiet.Project})
		mu.Lock()
		sentAt[ev.EventID] = time.Now()
		mu.Unlock()
		require.NoError(t, pub.Publish(ctx, ev))
		mu.Lock()
		ackedAt[ev.EventID] = time.Now()
		mu.Unlock()
	}
	tick.Stop()
	res.Window = time.Since(start)
	res.Published = published.Load()
	res.Stored = inserted(t, metrics) - storedBefore
	stopFlood()
	wg.Wait()

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seenAt) == len(sentAt)
	}, 3*time.Minute, 100*time.Millisecond, "every quiet event visible")
	stopPoll()
	<-polled

	var lat, pubLat, ackLat []time.Duration
	for id, s := range sentAt {
		lat = append(lat, seenAt[id].Sub(s))
		pubLat = append(pubLat, ackedAt[id].Sub(s))
		ackLat = append(ackLat, seenAt[id].Sub(ackedAt[id]))
	}
	res.QuietSent = len(lat)
	res.P50 = quantile(lat, 0.5)
	res.P99 = quantile(lat, 0.99)
	res.Max = quantile(lat, 1)
	res.PubP99 = quantile(pubLat, 0.99)
	res.AckedP99 = quantile(ackLat, 0.99)

	if usage != nil {
		require.NoError(t, usage.Flush(ctx))
		over := overQuota(t, db, flooder)
		t.Logf("over-quota events counted: flooder %d, quiet %d", over,
			overQuota(t, db, quiet))
		require.Positive(t, over, "the flooder is over its quota")
		require.Zero(t, overQuota(t, db, quiet), "the quiet tenant is within its quota")
	}
	return res
}

// quantile returns the q quantile of ds (nearest rank).
func quantile(ds []time.Duration, q float64) time.Duration {
	slices.Sort(ds)
	i := int(q*float64(len(ds))+0.999999) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

// poll records when each of the quiet tenant's events is first visible.
func poll(ctx context.Context, t *testing.T, db *store.Store, mu *sync.Mutex,
	seen map[string]time.Time) {
	for ctx.Err() == nil {
		rows, err := db.Conn().Query(ctx, "SELECT DISTINCT event_id FROM "+db.Database()+
			".decisions WHERE account_id = ? AND project_id = ?", quiet.Account, quiet.Project)
		if err == nil {
			now := time.Now()
			for rows.Next() {
				var id string
				if rows.Scan(&id) == nil {
					mu.Lock()
					if _, ok := seen[id]; !ok {
						seen[id] = now
					}
					mu.Unlock()
				}
			}
			rows.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// inserted reads the ingester's count of rows ClickHouse accepted.
func inserted(t *testing.T, reg *prometheus.Registry) uint64 {
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "guard_ingest_rows_inserted_total" {
			return uint64(mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
	t.Fatal("no guard_ingest_rows_inserted_total")
	return 0
}

func overQuota(t *testing.T, db *store.Store, k tenant.Key) uint64 {
	sc, err := store.NewScope(k.Account, k.Project)
	require.NoError(t, err)
	counts, err := db.QuotaUsage(t.Context(), sc, time.Now().Add(-time.Hour),
		time.Now().Add(time.Hour))
	require.NoError(t, err)
	var over uint64
	for _, c := range counts {
		over += c.OverQuota
	}
	return over
}
