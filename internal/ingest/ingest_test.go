package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/faultnet"
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/ingest"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// pipeline is a real NATS server, stream and consumer, a real ClickHouse
// database and an ingester between them.
type pipeline struct {
	nats  *testenv.NATSServer
	nc    *nats.Conn
	js    jetstream.JetStream
	cons  jetstream.Consumer
	db    *store.Store
	chDB  string
	chURL string
	pub   *bus.Publisher
	stop  func() // stops the first ingester
}

type option func(*options)

type options struct {
	chAddr   string // ClickHouse address the ingester dials (a proxy in fault tests)
	inserter func(*store.Store) ingest.Inserter
	cfg      ingest.Config
	maxPart  int
}

func newPipeline(t *testing.T, opts ...option) *pipeline {
	t.Helper()
	ctx := t.Context()
	addr := testenv.ClickHouse(t)
	o := options{chAddr: addr, cfg: ingest.Config{BatchWait: 100 * time.Millisecond,
		RetryDelay: 200 * time.Millisecond, MaxDelay: time.Second}}
	for _, opt := range opts {
		opt(&o)
	}
	if o.chAddr == "" {
		o.chAddr = addr
	}

	p := &pipeline{nats: testenv.NATS(t), chURL: addr}
	p.chDB = testenv.Database(t, addr)

	nc, err := nats.Connect(p.nats.URL(), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	p.nc = nc
	p.js, err = jetstream.New(nc)
	require.NoError(t, err)
	st, err := bus.EnsureStream(ctx, p.js, bus.StreamConfig{})
	require.NoError(t, err)
	p.cons, err = bus.EnsureConsumer(ctx, st, bus.ConsumerConfig{Durable: "ingest",
		AckWait: 5 * time.Second})
	require.NoError(t, err)

	// The reader always talks to ClickHouse directly; the ingester may go
	// through a proxy that a test cuts.
	p.db, err = store.Open(ctx, store.Config{Addr: addr, Database: p.chDB})
	require.NoError(t, err)
	t.Cleanup(func() { p.db.Close() })
	writer := p.db
	if o.chAddr != addr || o.maxPart > 0 {
		writer, err = store.Open(ctx, store.Config{Addr: o.chAddr, Database: p.chDB,
			MaxPartitionsPerBatch: o.maxPart})
		require.NoError(t, err)
		t.Cleanup(func() { writer.Close() })
	}
	var ins ingest.Inserter = writer
	if o.inserter != nil {
		ins = o.inserter(writer)
	}
	p.stop = p.startIngester(t, ins, o.cfg)
	p.pub = bus.NewPublisher(p.js, 10*time.Second)
	return p
}

// startIngester runs an ingester until the test ends; the returned func
// stops it early and waits for it to drain.
func (p *pipeline) startIngester(t *testing.T, ins ingest.Inserter,
	cfg ingest.Config) func() {
	ctx, cancel := context.WithCancel(context.Background())
	ing := ingest.New(cfg, p.js, p.cons, ins, nil, slog.Default())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ing.Run(ctx)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

func (p *pipeline) publish(t *testing.T, evs ...*events.Event) {
	t.Helper()
	for _, ev := range evs {
		require.NoError(t, p.pub.Publish(t.Context(), ev))
	}
}

func scope(t *testing.T, account, project string) store.Scope {
	t.Helper()
	sc, err := store.NewScope(account, project)
	require.NoError(t, err)
	return sc
}

var allTime = filter.Filter{From: time.Now().Add(-60 * 24 * time.Hour),
	To: time.Now().Add(time.Hour)}

// waitCount waits until the scope shows want distinct decisions.
func (p *pipeline) waitCount(t *testing.T, sc store.Scope, want uint64) {
	t.Helper()
	var got uint64
	require.Eventually(t, func() bool {
		n, err := p.db.Count(t.Context(), sc, allTime)
		got = n
		return err == nil && n >= want
	}, 30*time.Second, 50*time.Millisecond, "count of %s/%s", sc.Account(), sc.Project())
	require.Equal(t, want, got)
}

// rawRows counts stored rows, duplicates included, bypassing read dedup.
func (p *pipeline) rawRows(t *testing.T, sc store.Scope) uint64 {
	var n uint64
	require.NoError(t, p.db.Conn().QueryRow(t.Context(), "SELECT count() FROM "+p.chDB+
		".decisions WHERE account_id = ? AND project_id = ?", sc.Account(), sc.Project()).Scan(&n))
	return n
}

func listAll(t *testing.T, db *store.Store, sc store.Scope) []store.Decision {
	var out []store.Decision
	var cur store.Cursor
	for {
		page, err := db.List(t.Context(), sc, allTime, cur, 37)
		require.NoError(t, err)
		out = append(out, page.Rows...)
		if !page.More {
			return out
		}
		cur = page.Next
	}
}

func TestEventsOfThreeTenantsLandOnceWithEveryField(t *testing.T) {
	p := newPipeline(t)
	tenants := []gen.Tenant{
		{Account: "acme", Project: "proj_prod"},
		{Account: "globex", Project: "proj_prod"},
		{Account: "initech", Project: "chat-1"},
	}
	g := gen.New(7, tenants, nil)

	sent := map[string]*events.Event{}
	for _, tn := range tenants {
		for range 120 {
			ev := g.NextFor(tn)
			sent[ev.AccountID+"/"+ev.ProjectID+"/"+ev.EventID] = ev
			p.publish(t, ev)
		}
	}

	for _, tn := range tenants {
		sc := scope(t, tn.Account, tn.Project)
		p.waitCount(t, sc, 120)
		rows := listAll(t, p.db, sc)
		require.Len(t, rows, 120)
		for _, r := range rows {
			require.Equal(t, tn.Account, r.AccountID)
			require.Equal(t, tn.Project, r.ProjectID)
		}
	}

	// Every field survives the trip, nested objects, nullable scores and
	// milliseconds included.
	for key, want := range sent {
		parts := strings.SplitN(key, "/", 3)
		got, err := p.db.Get(t.Context(), scope(t, parts[0], parts[1]), parts[2])
		require.NoError(t, err)
		wantJSON, _ := json.Marshal(want, json.Deterministic(true))
		gotJSON, _ := json.Marshal(got, json.Deterministic(true))
		require.JSONEq(t, string(wantJSON), string(gotJSON))
		require.Equal(t, want.OccurredAt.UnixMilli(), got.OccurredAt.UnixMilli())
	}

	// Each tenant's rows sit in partitions of its own.
	rows, err := p.db.Conn().Query(t.Context(), "SELECT DISTINCT partition FROM system.parts"+
		" WHERE database = ? AND table = 'decisions' AND active", p.chDB)
	require.NoError(t, err)
	var parts []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		parts = append(parts, s)
	}
	require.NoError(t, rows.Err())
	sort.Strings(parts)
	month := time.Now().UTC().Format("200601")
	require.Equal(t, []string{
		"('acme','proj_prod'," + month + ")",
		"('globex','proj_prod'," + month + ")",
		"('initech','chat-1'," + month + ")",
	}, parts)
}

func TestSameIDsInTwoTenantsStayApart(t *testing.T) {
	p := newPipeline(t)
	g := gen.New(3, nil, nil)

	a := g.NextFor(gen.Tenant{Account: "acme", Project: "proj_prod"})
	b := g.NextFor(gen.Tenant{Account: "globex", Project: "proj_prod"})
	a.EventID, b.EventID = "evt-1", "evt-1"
	a.Reason, b.Reason = "acme's decision", "globex's decision"

	// The attacker publishes first, on its own subject, with the message id
	// headers a naive dedup would key on.
	for _, id := range []string{"evt-1", "globex.proj_prod.evt-1", "proj_prod.evt-1"} {
		m, err := bus.Message(a)
		require.NoError(t, err)
		m.Header.Set(jetstream.MsgIDHeader, id)
		_, err = p.js.PublishMsg(t.Context(), m)
		require.NoError(t, err)
	}
	p.publish(t, b)

	sa, sb := scope(t, "acme", "proj_prod"), scope(t, "globex", "proj_prod")
	p.waitCount(t, sa, 1)
	p.waitCount(t, sb, 1)
	got, err := p.db.Get(t.Context(), sb, "evt-1")
	require.NoError(t, err)
	require.Equal(t, "globex's decision", got.Reason)
	got, err = p.db.Get(t.Context(), sa, "evt-1")
	require.NoError(t, err)
	require.Equal(t, "acme's decision", got.Reason)
}

// deadLetters reads every dead letter stored so far.
func deadLetters(t *testing.T, js jetstream.JetStream, want int) []jetstream.Msg {
	t.Helper()
	ctx := t.Context()
	st, err := js.Stream(ctx, "GUARD")
	require.NoError(t, err)
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.DeadLetterFilter, bus.UnscopedDeadLetterSubject}})
	require.NoError(t, err)
	var out []jetstream.Msg
	deadline := time.Now().Add(20 * time.Second)
	for len(out) < want && time.Now().Before(deadline) {
		batch, err := c.Fetch(want-len(out), jetstream.FetchMaxWait(time.Second))
		require.NoError(t, err)
		for m := range batch.Messages() {
			out = append(out, m)
		}
	}
	require.Len(t, out, want)
	return out
}

func TestInvalidEventsAreDeadLetteredAndTheStreamFlows(t *testing.T) {
	p := newPipeline(t)
	g := gen.New(11, []gen.Tenant{{Account: "acme", Project: "proj_prod"}}, nil)
	subj := "guard.v1.acme.proj_prod.decision"
	first := g.Next()
	valid, err := json.Marshal(first)
	require.NoError(t, err)
	v := string(valid)

	mismatch := strings.Replace(v, `"account_id":"acme"`, `"account_id":"globex"`, 1)
	nan := strings.Replace(v, `"score":`, `"score":NaN,"s2":`, 1)
	enum := strings.Replace(v, `"event_type":"`+first.EventType+`"`,
		`"event_type":"telepathy"`, 1)
	big := strings.Replace(v, `"action":"`, `"reason2":"`+strings.Repeat("x", 70_000)+
		`","action":"`, 1)
	cases := []struct {
		subject, payload string
		reason           events.Reason
		dlSubject        string
	}{
		{subj, mismatch, events.ReasonTenantMismatch, "guard.v1.acme.proj_prod.deadletter"},
		{subj, `{"schema_version":`, events.ReasonInvalidJSON, ""},
		{subj, nan, events.ReasonInvalidJSON, ""},
		{subj, enum, events.ReasonInvalidEnum, ""},
		{subj, big, events.ReasonTooLarge, ""},
		{"guard.v1.ac%me.proj_prod.decision", v, events.ReasonBadSubject,
			bus.UnscopedDeadLetterSubject},
	}
	for _, c := range cases {
		_, err := p.js.Publish(t.Context(), c.subject, []byte(c.payload))
		require.NoError(t, err)
	}
	after := g.Next()
	p.publish(t, after)

	letters := deadLetters(t, p.js, len(cases))
	byPayload := map[string]jetstream.Msg{}
	for _, m := range letters {
		byPayload[string(m.Data())] = m
	}
	for _, c := range cases {
		m, ok := byPayload[c.payload]
		require.True(t, ok, "dead letter with the original bytes for %s", c.reason)
		require.Equal(t, string(c.reason), m.Headers().Get(bus.HeaderReason))
		require.NotEmpty(t, m.Headers().Get(bus.HeaderDetail))
		require.Equal(t, c.subject, m.Headers().Get(bus.HeaderOriginalSubject))
		want := c.dlSubject
		if want == "" {
			want = "guard.v1.acme.proj_prod.deadletter"
		}
		require.Equal(t, want, m.Subject())
	}

	// The valid event behind them arrives; no reject became a row, and no
	// row reached globex through the mismatched payload.
	p.waitCount(t, scope(t, "acme", "proj_prod"), 1)
	n, err := p.db.Count(t.Context(), scope(t, "globex", "proj_prod"), allTime)
	require.NoError(t, err)
	require.Zero(t, n)

	// Rejected messages were terminated, not left for redelivery.
	require.Eventually(t, func() bool {
		info, err := p.cons.Info(t.Context())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	}, 10*time.Second, 50*time.Millisecond)
}

// lostAcks stores every batch and then reports failure for the first
// few, as an ingester that dies between insert and ack would.
type lostAcks struct {
	ingest.Inserter
	left atomic.Int32
}

func (l *lostAcks) Insert(ctx context.Context, evs []*events.Event) error {
	if err := l.Inserter.Insert(ctx, evs); err != nil {
		return err
	}
	if l.left.Add(-1) >= 0 {
		return errors.New("connection lost before the ack")
	}
	return nil
}

func TestRedeliveredEventsAreNotVisibleTwice(t *testing.T) {
	var li *lostAcks
	p := newPipeline(t, func(o *options) {
		o.inserter = func(s *store.Store) ingest.Inserter {
			li = &lostAcks{Inserter: s}
			li.left.Store(3)
			return li
		}
	})
	g := gen.New(5, []gen.Tenant{{Account: "acme", Project: "proj_prod"}}, nil)
	for range 200 {
		p.publish(t, g.Next())
	}

	sc := scope(t, "acme", "proj_prod")
	p.waitCount(t, sc, 200)
	require.Eventually(t, func() bool {
		info, err := p.cons.Info(t.Context())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	}, 20*time.Second, 50*time.Millisecond)

	require.Greater(t, p.rawRows(t, sc), uint64(200), "redelivery stored copies")
	rows := listAll(t, p.db, sc)
	require.Len(t, rows, 200, "the list shows each event once")
	seen := map[string]bool{}
	for _, r := range rows {
		require.False(t, seen[r.EventID], "event %s listed twice", r.EventID)
		seen[r.EventID] = true
	}
	n, err := p.db.Count(t.Context(), sc, allTime)
	require.NoError(t, err)
	require.EqualValues(t, 200, n)
}

func TestIngesterStoppedBeforeAckThenRestartedLosesNothing(t *testing.T) {
	addr := testenv.ClickHouse(t)
	proxy, err := faultnet.Listen(addr)
	require.NoError(t, err)
	t.Cleanup(func() { proxy.Close() })

	// The first ingester takes the messages but cannot store them, and is
	// stopped with them unacknowledged.
	p := newPipeline(t, func(o *options) { o.chAddr = proxy.Addr() })
	proxy.Cut()
	g := gen.New(17, []gen.Tenant{{Account: "acme", Project: "proj_prod"}}, nil)
	for range 100 {
		p.publish(t, g.Next())
	}
	require.Eventually(t, func() bool {
		info, err := p.cons.Info(t.Context())
		return err == nil && info.NumAckPending > 0
	}, 10*time.Second, 20*time.Millisecond)
	p.stop()

	// A new ingester with a working connection stores every one, once.
	proxy.Restore()
	p.startIngester(t, p.db, ingest.Config{BatchWait: 100 * time.Millisecond})
	sc := scope(t, "acme", "proj_prod")
	p.waitCount(t, sc, 100)
	require.Len(t, listAll(t, p.db, sc), 100)
}

func TestClickHouseOutageHoldsEventsInTheStream(t *testing.T) {
	addr := testenv.ClickHouse(t)
	proxy, err := faultnet.Listen(addr)
	require.NoError(t, err)
	t.Cleanup(func() { proxy.Close() })

	p := newPipeline(t, func(o *options) { o.chAddr = proxy.Addr() })
	g := gen.New(9, []gen.Tenant{{Account: "acme", Project: "proj_prod"}}, nil)
	sc := scope(t, "acme", "proj_prod")
	for range 50 {
		p.publish(t, g.Next())
	}
	p.waitCount(t, sc, 50)

	proxy.Cut()
	for range 300 {
		p.publish(t, g.Next())
	}
	time.Sleep(2 * time.Second)
	n, err := p.db.Count(t.Context(), sc, allTime)
	require.NoError(t, err)
	require.EqualValues(t, 50, n, "nothing is stored while ClickHouse is unreachable")
	info, err := p.cons.Info(t.Context())
	require.NoError(t, err)
	require.EqualValues(t, 300, info.NumPending+uint64(info.NumAckPending),
		"the stream holds the backlog")

	proxy.Restore()
	p.waitCount(t, sc, 350)
}

func TestOneBatchOfHundredFiftyProjects(t *testing.T) {
	p := newPipeline(t, func(o *options) {
		o.maxPart = 100
		o.cfg.BatchSize = 1000
		o.cfg.BatchWait = 2 * time.Second
	})
	var tenants []gen.Tenant
	for i := range 150 {
		tenants = append(tenants, gen.Tenant{Account: "acct", Project: fmt.Sprintf("p%03d", i)})
	}
	g := gen.New(13, tenants, nil)
	var msgs []*nats.Msg
	for _, tn := range tenants {
		for range 2 {
			m, err := bus.Message(g.NextFor(tn))
			require.NoError(t, err)
			msgs = append(msgs, m)
		}
	}
	for _, m := range msgs {
		_, err := p.js.PublishMsgAsync(m)
		require.NoError(t, err)
	}
	<-p.js.PublishAsyncComplete()

	for _, tn := range tenants {
		p.waitCount(t, scope(t, tn.Account, tn.Project), 2)
	}
}
