package quota_test

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/events"
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

const (
	// floodFactor is how many times the pipeline's capacity the flooder
	// offers over the window.
	floodFactor = 10
	// calibration is the flooder backlog the capacity is measured on.
	calibration = 400_000
	// floodConns is how many connections the flooder publishes from.
	floodConns = 4
	// quietPerSec is the quiet tenant's publish rate during the window.
	quietPerSec = 40
)

// floodResult holds the figures of one flood run.
type floodResult struct {
	Capacity      float64       // rows/s stored while draining the flooder's backlog alone
	Window        time.Duration // how long both tenants published
	Backlog       uint64        // flooder messages waiting in the stream as the window began
	Published     uint64        // flooder messages the stream took during the window
	Stored        uint64        // rows stored during the window, every tenant
	Bytes         uint64        // the stream's size at the end of the window
	Load          string        // the machine's load average as the window ended
	QuietSent     int
	P50, P99, Max time.Duration // quiet tenant, publish to visible
	PubP99        time.Duration // quiet tenant, publish until the stream's ack
	AckedP99      time.Duration // quiet tenant, stream's ack to visible
}

// Offered is what the flooder offered the ingester over the window (its
// backlog plus what it published meanwhile) in multiples of what the
// pipeline can store in that time.
func (r floodResult) Offered() float64 {
	return float64(r.Backlog+r.Published) / (r.Capacity * r.Window.Seconds())
}

func (r floodResult) String() string {
	w := r.Window.Seconds()
	return fmt.Sprintf("capacity %.0f rows/s; over a %.1f s window the flooder offered "+
		"%.1fx capacity (a backlog of %d plus %d published at %.0f/s, against %.0f "+
		"storable) while the pipeline stored %.0f rows/s (stream %.1f GB, load average "+
		"%s); quiet tenant, "+
		"%d events at %d/s: publish to visible p50 %s, p99 %s, max %s (p99 of publish to "+
		"the stream's ack %s, of ack to visible %s)",
		r.Capacity, w, r.Offered(), r.Backlog, r.Published, float64(r.Published)/w,
		r.Capacity*w, float64(r.Stored)/w, float64(r.Bytes)/1e9, r.Load, r.QuietSent, quietPerSec,
		r.P50.Round(time.Millisecond), r.P99.Round(time.Millisecond),
		r.Max.Round(time.Millisecond), r.PubP99.Round(time.Millisecond),
		r.AckedP99.Round(time.Millisecond))
}

func floodWindow() time.Duration {
	if s, err := strconv.Atoi(os.Getenv("OBS_FLOOD_SECONDS")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 5 * time.Second
}

// TestQuietTenantUnaffectedByFlood floods the pipeline from one tenant at
// ten times what it can store and measures how long another tenant's
// events take from publish to visible.
func TestQuietTenantUnaffectedByFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("flood test takes half a minute")
	}
	r := runFlood(t, true, floodWindow())
	t.Logf("with lanes: %s", r)
	// On a 2-vCPU machine shared with other suites (load average 7-10) the
	// p99 was 1.9-3.2 s, a third to a half of it the broker taking the
	// publish behind the flood's; three floods at once there (load average
	// 11-12) gave 5.4-6.1 s. Through one shared consumer it is the
	// flooder's whole backlog: 27-94 s.
	require.Less(t, r.P99, 5*time.Second, "quiet tenant's p99 publish to visible; %s", r)
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

// floodEnv is the broker, store and tenants of one flood run.
type floodEnv struct {
	t     *testing.T
	log   *slog.Logger
	url   string
	db    *store.Store
	js    jetstream.JetStream
	st    jetstream.Stream
	rest  jetstream.Consumer
	reg   *tenant.Registry
	usage *quota.Usage // nil without lanes
	lanes bool
	cfg   quota.LanesConfig

	errMu    sync.Mutex
	connErrs []string // asynchronous connection errors
}

// newFloodEnv starts a broker with the stream and the ingester's durable
// consumer, a database, and a registry where the flooder is on the free tier
// and the quiet tenant on pro.
func newFloodEnv(t *testing.T, lanes bool) *floodEnv {
	ctx := t.Context()
	e := &floodEnv{t: t, log: slog.New(slog.DiscardHandler), lanes: lanes}
	addr := testenv.ClickHouse(t)
	var err error
	e.db, err = store.Open(ctx, store.Config{Addr: addr, Database: testenv.Database(t, addr),
		Logger: e.log})
	require.NoError(t, err)
	t.Cleanup(func() { e.db.Close() })
	e.url = testenv.NATS(t).URL()
	e.js = e.connect("ingest")
	e.st, err = bus.EnsureStream(ctx, e.js, bus.StreamConfig{})
	require.NoError(t, err)
	e.rest, err = bus.EnsureConsumer(ctx, e.st, bus.ConsumerConfig{Durable: "ingest"})
	require.NoError(t, err)
	tiersFile, root := tenanttest.Tree(t, tenanttest.Tiers,
		map[tenant.Key]string{flooder: "free", quiet: "pro"})
	e.reg, err = tenant.OpenRegistry(tiersFile, root, e.log)
	require.NoError(t, err)
	if lanes {
		e.usage = quota.NewUsage(e.db, nil, e.log)
	}
	return e
}

// connect opens a connection of its own. Its asynchronous errors (a slow
// consumer dropping messages, say) are kept for the run's log: they may
// come after the test has ended, when it can no longer log.
func (e *floodEnv) connect(name string, opts ...jetstream.JetStreamOpt) jetstream.JetStream {
	t := e.t
	nc, err := nats.Connect(e.url, nats.Name(name), nats.ErrorHandler(
		func(_ *nats.Conn, _ *nats.Subscription, err error) {
			e.errMu.Lock()
			defer e.errMu.Unlock()
			e.connErrs = append(e.connErrs, name+": "+err.Error())
		}))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, opts...)
	require.NoError(t, err)
	return js
}

// pipeline is a running ingester; metrics holds its counters.
type pipeline struct {
	metrics *prometheus.Registry
	stop    func()
}

// start runs an ingester over the lanes or the shared consumer until stop.
func (e *floodEnv) start() *pipeline {
	t := e.t
	var cons jetstream.Consumer = e.rest
	if e.lanes {
		l, err := quota.NewLanes(t.Context(), e.st, e.rest, e.reg, e.usage,
			e.cfg, e.log)
		require.NoError(t, err)
		cons = l
	}
	p := &pipeline{metrics: prometheus.NewRegistry()}
	ing := ingest.New(ingest.Config{}, e.js, cons, e.db, p.metrics, e.log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ing.Run(ctx)
	}()
	var once sync.Once
	p.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(p.stop)
	return p
}

// floodReader is the consumer that hands the flooder's messages to the
// ingester: its lane, or the shared consumer.
func (e *floodEnv) floodReader() jetstream.Consumer {
	if !e.lanes {
		return e.rest
	}
	c, err := e.st.Consumer(e.t.Context(), quota.LaneName("ingest", flooder))
	require.NoError(e.t, err)
	return c
}

// waiting counts the messages of c not yet acknowledged.
func waiting(t *testing.T, c jetstream.Consumer) uint64 {
	info, err := c.Info(t.Context())
	require.NoError(t, err)
	return info.NumPending + uint64(info.NumAckPending)
}

// floodStored counts the flooder's messages the stream holds.
func (e *floodEnv) floodStored() uint64 {
	subject, err := events.Subject(flooder.Account, flooder.Project, events.KindDecision)
	require.NoError(e.t, err)
	info, err := e.st.Info(e.t.Context(), jetstream.WithSubjectFilter(subject))
	require.NoError(e.t, err)
	return info.State.Subjects[subject]
}

// floodPublisher sends the flooder's messages, a pool of realistic
// payloads in turn, from several connections.
type floodPublisher struct {
	js   []jetstream.JetStream
	pool []*nats.Msg
}

// run publishes n messages (n <= 0: until ctx ends) at most perSec a
// second (perSec <= 0: as fast as the broker takes them), split over the
// connections, and with n > 0 waits for the stream's acks.
func (f *floodPublisher) run(ctx context.Context, n int, perSec float64) {
	var wg sync.WaitGroup
	for c, js := range f.js {
		share := 0
		if n > 0 {
			share = n / len(f.js)
			if c < n%len(f.js) {
				share++
			}
			if share == 0 {
				continue
			}
		}
		lim := rate.NewLimiter(rate.Inf, 0)
		if perSec > 0 {
			each := perSec / float64(len(f.js))
			lim = rate.NewLimiter(rate.Limit(each), max(1, int(each/100)))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; share <= 0 || i < share; i++ {
				if lim.Wait(ctx) != nil {
					return
				}
				m := f.pool[(c+i*len(f.js))%len(f.pool)]
				_, err := js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Data: m.Data,
					Header: m.Header})
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					i-- // stalled: wait for acks and send it again
					time.Sleep(10 * time.Millisecond)
				}
			}
			if n > 0 {
				select {
				case <-js.PublishAsyncComplete():
				case <-ctx.Done():
				case <-time.After(time.Minute):
				}
			}
		}()
	}
	wg.Wait()
}

func runFlood(t *testing.T, lanes bool, window time.Duration) floodResult {
	e := newFloodEnv(t, lanes)
	// The flooder cycles through a pool of realistic payloads; the quiet
	// tenant's events are all distinct.
	g := gen.New(1, []gen.Tenant{{Account: flooder.Account, Project: flooder.Project},
		{Account: quiet.Account, Project: quiet.Project}}, nil)
	fp := &floodPublisher{pool: make([]*nats.Msg, 2000)}
	for i := range fp.pool {
		m, err := bus.Message(g.NextFor(gen.Tenant{Account: flooder.Account,
			Project: flooder.Project}))
		require.NoError(t, err)
		fp.pool[i] = m
	}
	for range floodConns {
		fp.js = append(fp.js, e.connect("flood", jetstream.WithPublishAsyncMaxPending(4096),
			jetstream.WithPublishAsyncTimeout(30*time.Second)))
	}

	var res floodResult
	first := e.measureCapacity(fp, &res)

	// The flood: a backlog of ten times what the pipeline stores over the
	// window waits in the stream ahead of the window, the worst case for
	// the quiet tenant in a shared sequence, and during the window the
	// flooder keeps publishing, aiming at ten times the capacity, as far
	// as the broker takes it.
	want := uint64(math.Ceil(floodFactor * res.Capacity * window.Seconds()))
	reader := e.floodReader()
	filled := time.Now()
	for range 3 {
		have := waiting(t, reader)
		if have >= want {
			break
		}
		fp.run(t.Context(), int(want-have), 0)
	}
	res.Backlog = waiting(t, reader)
	require.GreaterOrEqual(t, res.Backlog, want, "the flooder's backlog in the stream")
	t.Logf("backlog of %d in the stream after %s", res.Backlog,
		time.Since(filled).Round(time.Second))
	before := e.floodStored()

	p := e.start()
	fctx, stopFlood := context.WithCancel(t.Context())
	var fwg sync.WaitGroup
	fwg.Add(1)
	go func() {
		defer fwg.Done()
		fp.run(fctx, 0, floodFactor*res.Capacity)
	}()
	t.Cleanup(func() { stopFlood(); fwg.Wait() })
	q := e.startQuiet(g, window)
	res.Window = q.wait()
	res.Published = e.floodStored() - before
	res.Stored = inserted(t, p.metrics)
	info, err := e.st.Info(t.Context())
	require.NoError(t, err)
	res.Bytes = info.State.Bytes
	res.Load = loadAverage()
	stopFlood()
	fwg.Wait()
	q.latencies(&res)
	e.errMu.Lock()
	if n := len(e.connErrs); n > 0 {
		t.Logf("%d connection errors, the first: %s", n, e.connErrs[0])
	}
	e.errMu.Unlock()

	require.GreaterOrEqual(t, res.Offered(), float64(floodFactor),
		"the flood must offer %dx the capacity: %s", floodFactor, res)
	require.Greater(t, res.Stored, uint64(res.QuietSent),
		"the flooder's events are stored during the flood too: %s", res)
	if lanes {
		e.checkUsage(first, p)
	}
	return res
}

// measureCapacity stores a backlog of the flooder's alone and sets the
// rows stored per second. It returns the stopped pipeline.
func (e *floodEnv) measureCapacity(fp *floodPublisher, res *floodResult) *pipeline {
	t := e.t
	fp.run(t.Context(), calibration, 0)
	p := e.start()
	time.Sleep(2 * time.Second)
	before, t0 := inserted(t, p.metrics), time.Now()
	time.Sleep(4 * time.Second)
	res.Capacity = float64(inserted(t, p.metrics)-before) / time.Since(t0).Seconds()
	require.Positive(t, waiting(t, e.floodReader()), "the backlog ran out while measuring "+
		"capacity (%.0f rows/s): a larger one is needed", res.Capacity)
	p.stop()
	return p
}

// checkUsage checks that over-quota events are stored, later, not dropped,
// and counted for the tenant. first and last are the run's pipelines.
func (e *floodEnv) checkUsage(first, last *pipeline) {
	t := e.t
	// Once the ingester has finished what it took, every event the lanes
	// scheduled, over quota or not, is stored.
	last.stop()
	scheduled, over := e.usage.Totals()
	require.Positive(t, over, "the flooder is over its quota")
	require.GreaterOrEqual(t, inserted(t, first.metrics)+inserted(t, last.metrics),
		scheduled, "rows stored against events scheduled (%d over quota)", over)
	require.NoError(t, e.usage.Flush(t.Context()))
	flooderOver := overQuota(t, e.db, flooder)
	t.Logf("over-quota events counted: flooder %d, quiet %d", flooderOver,
		overQuota(t, e.db, quiet))
	require.Equal(t, over, flooderOver, "the flooder's over-quota events in its usage")
	require.Zero(t, overQuota(t, e.db, quiet), "the quiet tenant is within its quota")
}

// quietRun is the quiet tenant publishing through a window.
type quietRun struct {
	e       *floodEnv
	start   time.Time
	window  time.Duration
	pubDone chan struct{} // closed once every event is published and acked
	errs    chan error
	stop    context.CancelFunc
	polled  chan struct{}

	mu                      sync.Mutex
	sentAt, ackedAt, seenAt map[string]time.Time
}

// startQuiet has the quiet tenant, a producer of its own, publish
// quietPerSec events a second through the window, each without waiting for
// the one before, while a poller notes when each becomes visible.
func (e *floodEnv) startQuiet(g *gen.Generator, window time.Duration) *quietRun {
	n := int(window.Seconds() * quietPerSec)
	q := &quietRun{e: e, window: window, pubDone: make(chan struct{}),
		errs: make(chan error, n), polled: make(chan struct{}),
		sentAt: map[string]time.Time{}, ackedAt: map[string]time.Time{},
		seenAt: map[string]time.Time{}}
	pctx, stop := context.WithCancel(e.t.Context())
	q.stop = stop
	go func() {
		defer close(q.polled)
		poll(pctx, e.db, &q.mu, q.seenAt)
	}()
	pub := bus.NewPublisher(e.connect("quiet"), 10*time.Second)
	evs := make([]*events.Event, n)
	for i := range evs {
		evs[i] = g.NextFor(gen.Tenant{Account: quiet.Account, Project: quiet.Project})
	}
	q.start = time.Now()
	go func() {
		defer close(q.pubDone)
		var wg sync.WaitGroup
		for i, ev := range evs {
			time.Sleep(time.Until(q.start.Add(time.Duration(i) * time.Second / quietPerSec)))
			q.mu.Lock()
			q.sentAt[ev.EventID] = time.Now()
			q.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := pub.Publish(e.t.Context(), ev); err != nil {
					q.errs <- err
					return
				}
				q.mu.Lock()
				q.ackedAt[ev.EventID] = time.Now()
				q.mu.Unlock()
			}()
		}
		wg.Wait()
	}()
	return q
}

// wait returns at the end of the window, and its length.
func (q *quietRun) wait() time.Duration {
	time.Sleep(time.Until(q.start.Add(q.window)))
	return time.Since(q.start)
}

// latencies waits until every quiet event is visible and sets the
// figures of res.
func (q *quietRun) latencies(res *floodResult) {
	t := q.e.t
	<-q.pubDone
	close(q.errs)
	for err := range q.errs {
		require.NoError(t, err, "quiet tenant's publish")
	}
	require.Eventually(t, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return len(q.seenAt) == len(q.sentAt)
	}, 5*time.Minute, 100*time.Millisecond, "every quiet event visible")
	q.stop()
	<-q.polled

	var lat, pubLat, ackLat []time.Duration
	for id, s := range q.sentAt {
		lat = append(lat, q.seenAt[id].Sub(s))
		pubLat = append(pubLat, q.ackedAt[id].Sub(s))
		ackLat = append(ackLat, q.seenAt[id].Sub(q.ackedAt[id]))
	}
	res.QuietSent = len(lat)
	res.P50 = quantile(lat, 0.5)
	res.P99 = quantile(lat, 0.99)
	res.Max = quantile(lat, 1)
	res.PubP99 = quantile(pubLat, 0.99)
	res.AckedP99 = quantile(ackLat, 0.99)
}

// loadAverage returns the 1-minute load average, or "?" where the system
// does not say.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// quantile returns the q quantile of ds (nearest rank).
func quantile(ds []time.Duration, q float64) time.Duration {
	slices.Sort(ds)
	i := int(q*float64(len(ds))+0.999999) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

// poll records when each of the quiet tenant's events is first visible.
func poll(ctx context.Context, db *store.Store, mu *sync.Mutex, seen map[string]time.Time) {
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
