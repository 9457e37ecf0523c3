// Package quota keeps one tenant's flood from delaying another tenant's
// decisions, and counts what each project sends over its tier's quota.
//
// The stream keeps every tenant's messages in one sequence, so a single
// consumer hands the ingester a flooding tenant's backlog before a quiet
// tenant's next event. Lanes instead reads each provisioned project
// through a durable consumer of its own, filtered to its subject, and
// hands the ingester one message at a time from the lanes in turn:
//
//  1. first from lanes whose next message is within the project's quota (a
//     token bucket over publish times, rate and burst from the tier),
//  2. then, only while no lane has such a message, from lanes over quota.
//
// Both passes go round the lanes, so projects over quota share what is left
// evenly. Over-quota events are stored like any other, only later; they are
// counted per project and minute (see Usage). At most OverQuotaHeld of them
// are out with the ingester at a time (handed out and not yet acknowledged,
// rejected or released), so that a quiet project's next event never waits
// in the ingester behind more of a flood than that.
//
// Projects without a policy folder are read by the rest lane: the ingester's
// original durable consumer over every tenant's decisions, which acknowledges
// and skips the messages of projects that have a lane of their own. A new
// lane starts at the rest lane's acknowledgement floor, so nothing published
// before the lane existed is missed.
package quota

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/tenant"
)

// LanesConfig tunes Lanes. Zero fields take the defaults shown.
type LanesConfig struct {
	// Prefetch is how many messages one lane pulls ahead, default 4,096,
	// and PrefetchBytes how many bytes, default 8 MiB: large enough that a
	// lane alone keeps the ingester busy across pull round trips, which
	// grow long while a flood loads the broker (with 1,024 a flooding lane
	// got a tenth of what the ingester could store; with 4,096 about half).
	Prefetch      int
	PrefetchBytes int
	// MaxAckPending bounds the messages of one lane handed out and not yet
	// acknowledged, default 20,000.
	MaxAckPending int
	// InfoEvery is how often Info refreshes the lanes' consumer state,
	// default 5s.
	InfoEvery time.Duration
	// RestBusyRate is how many messages a second the rest lane reads
	// while project lanes have work waiting, default 2,000.
	RestBusyRate int
	// OverQuotaHeld bounds the over-quota messages handed out and not yet
	// settled, all lanes together, default 10,000: two of the ingester's
	// batches, which keep its two inserts busy. Messages within quota are
	// never held back. cmd/ingest sets it to twice its --batch-size.
	OverQuotaHeld int
}

func (c *LanesConfig) defaults() {
	if c.Prefetch <= 0 {
		c.Prefetch = 4096
	}
	if c.PrefetchBytes <= 0 {
		c.PrefetchBytes = 8 << 20
	}
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = 20_000
	}
	if c.InfoEvery <= 0 {
		c.InfoEvery = 5 * time.Second
	}
	if c.RestBusyRate <= 0 {
		c.RestBusyRate = 2000
	}
	if c.OverQuotaHeld <= 0 {
		c.OverQuotaHeld = 10_000
	}
}

// ErrUnsupported is returned by the Consumer methods that Lanes does not
// offer; the ingester uses Messages, Info and CachedInfo only.
var ErrUnsupported = errors.New("quota: lanes support Messages, Info and CachedInfo only")

// Lanes is a jetstream.Consumer made of one durable consumer per project
// and the rest lane; pass it to ingest.New in place of the single consumer.
// Messages may be called once.
type Lanes struct {
	cfg   LanesConfig
	st    jetstream.Stream
	rest  jetstream.Consumer
	reg   *tenant.Registry
	usage *Usage
	log   *slog.Logger

	mu      sync.Mutex
	lanes   map[tenant.Key]*lane
	restL   *lane
	order   []*lane // round-robin order, rest lane last
	rr      int     // where the next round starts
	started bool
	ctx     context.Context // lives from Messages until Stop
	cancel  context.CancelFunc
	wake    chan struct{} // a lane has a new message; capacity 1
	syncMu  sync.Mutex    // serialises sync

	info     atomic.Pointer[jetstream.ConsumerInfo]
	infoAt   atomic.Int64
	infoMu   sync.Mutex
	skipped  atomic.Uint64
	laneErrs atomic.Uint64
	waiting  atomic.Int64 // messages in project lanes' buffers and heads
	held     atomic.Int64 // over-quota messages handed out and not settled
}

// lane is one consumer and the messages it holds ready.
type lane struct {
	key  tenant.Key // zero for the rest lane
	cons jetstream.Consumer
	lim  *rate.Limiter
	buf  chan jetstream.Msg
	// head is the next message, taken out of buf, and headAt its publish
	// time; both guarded by Lanes.mu.
	head   jetstream.Msg
	headAt time.Time
	stop   context.CancelFunc
	done   chan struct{}
}

// NewLanes returns lanes over the stream. rest is the ingester's durable
// consumer over every tenant's decisions; projects found in tenants, and
// lanes left from earlier runs, get lanes of their own.
func NewLanes(ctx context.Context, st jetstream.Stream, rest jetstream.Consumer,
	tenants *tenant.Registry, usage *Usage, cfg LanesConfig, log *slog.Logger) (*Lanes, error) {
	cfg.defaults()
	if log == nil {
		log = slog.Default()
	}
	if _, err := rest.Info(ctx); err != nil {
		return nil, fmt.Errorf("rest lane: %w", err)
	}
	l := &Lanes{cfg: cfg, st: st, rest: rest, reg: tenants, usage: usage,
		log: log.With("component", "lanes"), lanes: map[tenant.Key]*lane{},
		wake: make(chan struct{}, 1)}
	snap := tenants.Snapshot()
	def, _ := snap.Tier(tenant.Key{})
	l.restL = l.newLane(tenant.Key{}, rest, def)
	if err := l.sync(ctx); err != nil {
		return nil, err
	}
	tenants.OnChange(func(_, _ *tenant.Snapshot) {
		l.mu.Lock()
		lctx := l.ctx
		l.mu.Unlock()
		if lctx == nil {
			lctx = context.Background()
		}
		if err := l.sync(lctx); err != nil {
			l.log.Error("update lanes", "err", err)
		}
	})
	return l, nil
}

func (l *Lanes) newLane(k tenant.Key, c jetstream.Consumer, t *tenant.Tier) *lane {
	return &lane{key: k, cons: c, buf: make(chan jetstream.Msg, min(l.cfg.Prefetch, 128)),
		lim: rate.NewLimiter(rate.Limit(t.Ingest.EventsPerSecond), t.Ingest.Burst)}
}

// LaneName is the durable name of a project's lane: the rest lane's name,
// the account id's length, the account and the project, which no other
// pair of ids produces.
func LaneName(rest string, k tenant.Key) string {
	return rest + "-" + strconv.Itoa(len(k.Account)) + "-" + k.Account + "-" + k.Project
}

// sync creates lanes for projects that have none, finds lanes left by
// earlier runs, and sets every lane's quota from its tier. Lanes are
// removed only when their consumer is deleted (offboarding): a project
// that loses its folder keeps its lane, on the default tier, so that
// nothing it published is skipped by the rest lane and left unread.
func (l *Lanes) sync(ctx context.Context) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	snap := l.reg.Snapshot()
	restName := l.rest.CachedInfo().Name

	want := map[tenant.Key]bool{}
	for _, k := range snap.Keys() {
		want[k] = true
	}
	cl := l.st.ListConsumers(ctx)
	for ci := range cl.Info() {
		acct, proj, kind, err := events.ParseSubject(ci.Config.FilterSubject)
		if err != nil || kind != events.KindDecision {
			continue
		}
		k := tenant.Key{Account: acct, Project: proj}
		if ci.Name == LaneName(restName, k) {
			want[k] = true
		}
	}
	if err := cl.Err(); err != nil {
		return fmt.Errorf("list lanes: %w", err)
	}

	for k := range want {
		tier, _ := snap.Tier(k)
		l.mu.Lock()
		ln, ok := l.lanes[k]
		if ok {
			setQuota(ln, tier)
		}
		l.mu.Unlock()
		if ok {
			continue
		}
		c, err := l.ensureConsumer(ctx, restName, k)
		if err != nil {
			return err
		}
		ln = l.newLane(k, c, tier)
		l.mu.Lock()
		l.lanes[k] = ln
		if l.started {
			l.startLane(ln)
		}
		l.rebuildOrder()
		l.mu.Unlock()
		l.log.Info("lane ready", "account_id", k.Account, "project_id", k.Project,
			"tier", tier.Name, "events_per_second", tier.Ingest.EventsPerSecond,
			"burst", tier.Ingest.Burst)
	}
	def, _ := snap.Tier(tenant.Key{})
	l.mu.Lock()
	setQuota(l.restL, def)
	l.mu.Unlock()
	return nil
}

// setQuota gives a lane its tier's quota. A changed quota starts as a new,
// full bucket, so that an upgrade counts from the moment it is made. l.mu
// held.
func setQuota(ln *lane, t *tenant.Tier) {
	if ln.lim.Limit() == rate.Limit(t.Ingest.EventsPerSecond) &&
		ln.lim.Burst() == t.Ingest.Burst {
		return
	}
	ln.lim = rate.NewLimiter(rate.Limit(t.Ingest.EventsPerSecond), t.Ingest.Burst)
}

// ensureConsumer opens a project's lane consumer, creating it at the rest
// lane's acknowledgement floor when it does not exist: every message of the
// project below that floor was already stored by the rest lane.
func (l *Lanes) ensureConsumer(ctx context.Context, restName string,
	k tenant.Key) (jetstream.Consumer, error) {
	name := LaneName(restName, k)
	c, err := l.st.Consumer(ctx, name)
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("open lane %s: %w", name, err)
	}
	ri, err := l.rest.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("rest lane position: %w", err)
	}
	subject, err := events.Subject(k.Account, k.Project, events.KindDecision)
	if err != nil {
		return nil, err
	}
	c, err = l.st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "ingest lane of " + k.String(),
		FilterSubject: subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ri.Config.AckWait,
		MaxAckPending: l.cfg.MaxAckPending,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   ri.AckFloor.Stream + 1,
	})
	if err != nil {
		// Another ingester replica may have created it a moment ago, at
		// its own idea of the start.
		if c, err2 := l.st.Consumer(ctx, name); err2 == nil {
			return c, nil
		}
		return nil, fmt.Errorf("create lane %s: %w", name, err)
	}
	return c, nil
}

// rebuildOrder lists the lanes in a stable order, rest lane last. l.mu held.
func (l *Lanes) rebuildOrder() {
	keys := make([]tenant.Key, 0, len(l.lanes))
	for k := range l.lanes {
		keys = append(keys, k)
	}
	sortKeys(keys)
	order := make([]*lane, 0, len(keys)+1)
	for _, k := range keys {
		order = append(order, l.lanes[k])
	}
	l.order = append(order, l.restL)
	if l.rr >= len(l.order) {
		l.rr = 0
	}
}

func sortKeys(ks []tenant.Key) {
	sort.Slice(ks, func(i, j int) bool { return ks[i].String() < ks[j].String() })
}

// hasLane reports whether messages of k are read by a lane of their own.
func (l *Lanes) hasLane(k tenant.Key) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.lanes[k]
	return ok
}

// startLane starts the goroutine that keeps a lane's buffer filled. l.mu
// held.
func (l *Lanes) startLane(ln *lane) {
	ctx, cancel := context.WithCancel(l.ctx)
	ln.stop = cancel
	ln.done = make(chan struct{})
	go l.fill(ctx, ln)
}

// fill pulls a lane's messages into its buffer until ctx ends or the
// consumer is deleted.
func (l *Lanes) fill(ctx context.Context, ln *lane) {
	defer close(ln.done)
	iter, err := ln.cons.Messages(jetstream.PullMaxMessagesWithBytesLimit(l.cfg.Prefetch,
		l.cfg.PrefetchBytes))
	if err != nil {
		l.log.Error("start lane", "lane", ln.name(), "err", err)
		l.laneErrs.Add(1)
		return
	}
	go func() {
		<-ctx.Done()
		iter.Stop()
	}()
	// The rest lane sees every tenant's messages and skips most of them;
	// while project lanes have work it reads at most RestBusyRate a second,
	// so that skipping a flood does not take the broker's CPU from storing
	// it. It catches up once the lanes are idle.
	busy := rate.NewLimiter(rate.Limit(l.cfg.RestBusyRate), max(1, l.cfg.RestBusyRate/10))
	for {
		if ln == l.restL && l.lanesBusy() {
			if busy.Wait(ctx) != nil {
				return
			}
		}
		m, err := iter.Next()
		if err != nil {
			switch {
			case errors.Is(err, jetstream.ErrMsgIteratorClosed):
				return
			case errors.Is(err, jetstream.ErrConsumerDeleted),
				errors.Is(err, jetstream.ErrConsumerNotFound):
				l.dropLane(ln)
				return
			}
			l.laneErrs.Add(1)
			l.log.Warn("lane pull", "lane", ln.name(), "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if ln == l.restL {
			acct, proj, _, err := events.ParseSubject(m.Subject())
			if err == nil && l.hasLane(tenant.Key{Account: acct, Project: proj}) {
				// Its own lane reads it.
				_ = m.Ack()
				l.skipped.Add(1)
				continue
			}
		}
		if ln != l.restL {
			l.waiting.Add(1)
		}
		select {
		case ln.buf <- m:
		case <-ctx.Done():
			_ = m.Nak()
			return
		}
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// lanesBusy reports whether a project lane holds messages not yet taken.
func (l *Lanes) lanesBusy() bool { return l.waiting.Load() > 0 }

// dropLane forgets a lane whose consumer was deleted.
func (l *Lanes) dropLane(ln *lane) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lanes[ln.key] == ln {
		delete(l.lanes, ln.key)
		l.rebuildOrder()
		// Its held messages are gone with its consumer.
		n := int64(len(ln.buf))
		if ln.head != nil {
			n++
			ln.head = nil
		}
		for len(ln.buf) > 0 {
			<-ln.buf
		}
		l.waiting.Add(-n)
	}
	l.log.Info("lane removed: its consumer was deleted", "lane", ln.name())
}

func (ln *lane) name() string {
	if ln.key == (tenant.Key{}) {
		return "rest"
	}
	return ln.key.String()
}

// pick takes the next message: the first lane in turn whose next message is
// within quota, else, while fewer than OverQuotaHeld over-quota messages are
// out, the first lane in turn with any message.
func (l *Lanes) pick() jetstream.Msg {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.order)
	for pass := 0; pass < 2; pass++ {
		if pass == 1 && l.held.Load() >= int64(l.cfg.OverQuotaHeld) {
			return nil
		}
		for i := 0; i < n; i++ {
			idx := (l.rr + i) % n
			ln := l.order[idx]
			if !ln.peek() {
				continue
			}
			// Quotas are measured over publish times, so a backlog that was
			// published within quota (after an outage, say) stays within.
			within := ln.lim.AllowN(ln.headAt, 1)
			if pass == 0 && !within {
				continue
			}
			m := ln.head
			ln.head = nil
			if ln != l.restL {
				l.waiting.Add(-1)
			}
			l.rr = (idx + 1) % n
			l.count(ln, m, ln.headAt, within)
			if !within {
				l.held.Add(1)
				return &overMsg{Msg: m, l: l}
			}
			return m
		}
	}
	return nil
}

// overMsg is an over-quota message out with the ingester; settling it frees
// its place among the OverQuotaHeld. InProgress does not settle.
type overMsg struct {
	jetstream.Msg
	l       *Lanes
	settled atomic.Bool
}

// release frees the message's place, once, and wakes a waiting Next.
func (m *overMsg) release() {
	if !m.settled.CompareAndSwap(false, true) {
		return
	}
	m.l.held.Add(-1)
	select {
	case m.l.wake <- struct{}{}:
	default:
	}
}

func (m *overMsg) Ack() error { m.release(); return m.Msg.Ack() }

func (m *overMsg) DoubleAck(ctx context.Context) error {
	m.release()
	return m.Msg.DoubleAck(ctx)
}

func (m *overMsg) Nak() error { m.release(); return m.Msg.Nak() }

func (m *overMsg) NakWithDelay(d time.Duration) error {
	m.release()
	return m.Msg.NakWithDelay(d)
}

func (m *overMsg) Term() error { m.release(); return m.Msg.Term() }

func (m *overMsg) TermWithReason(reason string) error {
	m.release()
	return m.Msg.TermWithReason(reason)
}

// peek makes the lane's next message its head, if it has one. Lanes.mu held.
func (ln *lane) peek() bool {
	if ln.head != nil {
		return true
	}
	select {
	case m := <-ln.buf:
		ln.head, ln.headAt = m, time.Now()
		if md, err := m.Metadata(); err == nil {
			ln.headAt = md.Timestamp
		}
		return true
	default:
		return false
	}
}

// count records a scheduled message in the usage of its project.
func (l *Lanes) count(ln *lane, m jetstream.Msg, at time.Time, within bool) {
	if l.usage == nil {
		return
	}
	k := ln.key
	if k == (tenant.Key{}) {
		acct, proj, _, err := events.ParseSubject(m.Subject())
		if err != nil {
			return // dead-lettered by the ingester; not a project's usage
		}
		k = tenant.Key{Account: acct, Project: proj}
	}
	l.usage.Add(k, at, within)
}

// Messages starts every lane and returns the merged iterator. Stop and
// Drain both stop the lanes; messages they held are negatively
// acknowledged so that they are redelivered at once.
func (l *Lanes) Messages(...jetstream.PullMessagesOpt) (jetstream.MessagesContext, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.started {
		return nil, errors.New("quota: lanes are already consuming")
	}
	l.started = true
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.rebuildOrder()
	for _, ln := range l.order {
		l.startLane(ln)
	}
	return &iterator{l: l, done: l.ctx.Done()}, nil
}

// iterator is the MessagesContext of Lanes.
type iterator struct {
	l    *Lanes
	done <-chan struct{}
	once sync.Once
}

// Next returns the next message by the lanes' order, waiting for one.
func (it *iterator) Next(...jetstream.NextOpt) (jetstream.Msg, error) {
	for {
		select {
		case <-it.done:
			return nil, jetstream.ErrMsgIteratorClosed
		default:
		}
		if m := it.l.pick(); m != nil {
			return m, nil
		}
		select {
		case <-it.l.wake:
		case <-it.done:
			return nil, jetstream.ErrMsgIteratorClosed
		}
	}
}

// Stop stops every lane and releases the messages they held.
func (it *iterator) Stop() { it.once.Do(it.l.stop) }

// Drain is Stop: the lanes' held messages are released for redelivery.
func (it *iterator) Drain() { it.Stop() }

func (l *Lanes) stop() {
	l.mu.Lock()
	l.cancel()
	lanes := append([]*lane(nil), l.order...)
	l.mu.Unlock()
	for _, ln := range lanes {
		if ln.done != nil {
			<-ln.done
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ln := range lanes {
		if ln.head != nil {
			_ = ln.head.Nak()
			ln.head = nil
		}
		for len(ln.buf) > 0 {
			_ = (<-ln.buf).Nak()
		}
	}
}

// Info sums the lanes' backlogs into the rest lane's info; the result is
// refreshed at most every InfoEvery.
func (l *Lanes) Info(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	l.infoMu.Lock()
	defer l.infoMu.Unlock()
	if ci := l.info.Load(); ci != nil &&
		time.Since(time.UnixMilli(l.infoAt.Load())) < l.cfg.InfoEvery {
		return ci, nil
	}
	ri, err := l.rest.Info(ctx)
	if err != nil {
		return nil, err
	}
	sum := *ri
	l.mu.Lock()
	lanes := make([]*lane, 0, len(l.lanes))
	for _, ln := range l.lanes {
		lanes = append(lanes, ln)
	}
	l.mu.Unlock()
	for _, ln := range lanes {
		ci, err := ln.cons.Info(ctx)
		if err != nil {
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				continue
			}
			return nil, fmt.Errorf("lane %s: %w", ln.name(), err)
		}
		sum.NumPending += ci.NumPending
		sum.NumAckPending += ci.NumAckPending
		sum.NumRedelivered += ci.NumRedelivered
	}
	l.info.Store(&sum)
	l.infoAt.Store(time.Now().UnixMilli())
	return &sum, nil
}

// CachedInfo returns the rest lane's last known info; lanes share its
// AckWait.
func (l *Lanes) CachedInfo() *jetstream.ConsumerInfo { return l.rest.CachedInfo() }

// Lanes lists the projects that have a lane, in order.
func (l *Lanes) Lanes() []tenant.Key {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]tenant.Key, 0, len(l.lanes))
	for k := range l.lanes {
		out = append(out, k)
	}
	sortKeys(out)
	return out
}

// Collectors returns the lanes' metrics: the number of lanes, the rest
// lane's skipped messages and lane pull errors.
func (l *Lanes) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "guard_ingest_lanes",
			Help: "Projects read through a durable consumer of their own.",
		}, func() float64 { return float64(len(l.Lanes())) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "guard_ingest_rest_lane_skipped_total",
			Help: "Messages the rest lane acknowledged because their project has a lane.",
		}, func() float64 { return float64(l.skipped.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "guard_ingest_lane_errors_total",
			Help: "Failed pulls of a lane's consumer.",
		}, func() float64 { return float64(l.laneErrs.Load()) }),
	}
}

// Skipped counts the messages the rest lane acknowledged because their
// project has a lane.
func (l *Lanes) Skipped() uint64 { return l.skipped.Load() }

// Fetch is not supported.
func (l *Lanes) Fetch(int, ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	return nil, ErrUnsupported
}

// FetchBytes is not supported.
func (l *Lanes) FetchBytes(int, ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	return nil, ErrUnsupported
}

// FetchNoWait is not supported.
func (l *Lanes) FetchNoWait(int) (jetstream.MessageBatch, error) { return nil, ErrUnsupported }

// Consume is not supported.
func (l *Lanes) Consume(jetstream.MessageHandler,
	...jetstream.PullConsumeOpt) (jetstream.ConsumeContext, error) {
	return nil, ErrUnsupported
}

// Next is not supported.
func (l *Lanes) Next(...jetstream.FetchOpt) (jetstream.Msg, error) {
	return nil, ErrUnsupported
}

var _ jetstream.Consumer = (*Lanes)(nil)
