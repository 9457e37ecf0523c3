package quota_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/quota"
	"github.com/guardwatch/observatory/internal/tenant"
	"github.com/guardwatch/observatory/internal/tenant/tenanttest"
	"github.com/guardwatch/observatory/internal/testenv"
)

// Tiers with small quotas, so that a few hundred messages exceed them.
const smallTiers = `
default: tiny
tiers:
  tiny:
    retention: 7d
    ingest: { events_per_second: 1, burst: 5 }
    query: { rows_per_page: 100, max_range: 7d, concurrent: 1 }
  roomy:
    retention: 7d
    ingest: { events_per_second: 1000, burst: 1000 }
    query: { rows_per_page: 100, max_range: 7d, concurrent: 1 }
`

type laneEnv struct {
	js    jetstream.JetStream
	st    jetstream.Stream
	rest  jetstream.Consumer
	reg   *tenant.Registry
	root  string
	usage *quota.Usage
}

func newLaneEnv(t *testing.T, projects map[tenant.Key]string) *laneEnv {
	t.Helper()
	ctx := t.Context()
	nc, err := nats.Connect(testenv.NATS(t).URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	e := &laneEnv{}
	e.js, err = jetstream.New(nc)
	require.NoError(t, err)
	e.st, err = bus.EnsureStream(ctx, e.js, bus.StreamConfig{})
	require.NoError(t, err)
	e.rest, err = bus.EnsureConsumer(ctx, e.st, bus.ConsumerConfig{Durable: "ingest",
		AckWait: 30 * time.Second})
	require.NoError(t, err)
	tiersFile, root := tenanttest.Tree(t, smallTiers, projects)
	e.root = root
	e.reg, err = tenant.OpenRegistry(tiersFile, root, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	e.usage = quota.NewUsage(nil, nil, nil)
	return e
}

func (e *laneEnv) publish(t *testing.T, k tenant.Key, n int) {
	t.Helper()
	subject, err := events.Subject(k.Account, k.Project, events.KindDecision)
	require.NoError(t, err)
	for range n {
		_, err := e.js.PublishAsync(subject, []byte(`{}`))
		require.NoError(t, err)
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-time.After(10 * time.Second):
		t.Fatal("publish not acknowledged")
	}
}

func (e *laneEnv) lanes(t *testing.T) (*quota.Lanes, *reader) {
	t.Helper()
	return e.lanesWith(t, quota.LanesConfig{Prefetch: 64})
}

func (e *laneEnv) lanesWith(t *testing.T, cfg quota.LanesConfig) (*quota.Lanes, *reader) {
	t.Helper()
	l, err := quota.NewLanes(t.Context(), e.st, e.rest, e.reg, e.usage, cfg,
		slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	it, err := l.Messages()
	require.NoError(t, err)
	t.Cleanup(it.Stop)
	return l, newReader(t, it)
}

// reader reads an iterator on one goroutine, so that a wait that timed out
// leaves no second caller of Next behind to take the message after.
type reader struct{ msgs chan jetstream.Msg }

func newReader(t *testing.T, it jetstream.MessagesContext) *reader {
	r := &reader{msgs: make(chan jetstream.Msg)}
	go func() {
		defer close(r.msgs)
		for {
			m, err := it.Next()
			if err != nil {
				return
			}
			select {
			case r.msgs <- m:
			case <-t.Context().Done():
				return
			}
		}
	}()
	return r
}

// next returns the next message, or nil if none comes within wait.
func (r *reader) next(t *testing.T, wait time.Duration) jetstream.Msg {
	t.Helper()
	select {
	case m, ok := <-r.msgs:
		require.True(t, ok, "iterator closed")
		return m
	case <-time.After(wait):
		return nil
	}
}

// take reads n messages, acknowledging each, and returns their projects.
func take(t *testing.T, r *reader, n int) []tenant.Key {
	t.Helper()
	out := make([]tenant.Key, 0, n)
	for range n {
		m := r.next(t, 10*time.Second)
		if m == nil {
			t.Fatalf("no message after %d", len(out))
		}
		require.NoError(t, m.Ack())
		out = append(out, project(t, m))
	}
	return out
}

func project(t *testing.T, m jetstream.Msg) tenant.Key {
	t.Helper()
	acct, proj, _, err := events.ParseSubject(m.Subject())
	require.NoError(t, err)
	return tenant.Key{Account: acct, Project: proj}
}

func TestWithinQuotaGoesFirst(t *testing.T) {
	flood := tenant.Key{Account: "flood", Project: "app"}
	calm := tenant.Key{Account: "calm", Project: "app"}
	e := newLaneEnv(t, map[tenant.Key]string{flood: "tiny", calm: "roomy"})
	// The flood is in the stream before the calm project's events.
	e.publish(t, flood, 500)
	e.publish(t, calm, 20)
	_, it := e.lanes(t)

	// Give every lane time to fill before reading.
	time.Sleep(300 * time.Millisecond)
	got := take(t, it, 40)
	n := 0
	for _, k := range got {
		if k == calm {
			n++
		}
	}
	require.Equal(t, 20, n, "every calm event among the first 40: %v", got)
}

func TestOverQuotaMessagesOutAreBounded(t *testing.T) {
	flood := tenant.Key{Account: "flood", Project: "app"}
	calm := tenant.Key{Account: "calm", Project: "app"}
	e := newLaneEnv(t, map[tenant.Key]string{flood: "tiny", calm: "roomy"})
	e.publish(t, flood, 100)
	_, it := e.lanesWith(t, quota.LanesConfig{Prefetch: 64, OverQuotaHeld: 10})

	// The burst of 5 is within quota, then 10 over quota may be out.
	var out []jetstream.Msg
	for range 15 {
		m := it.next(t, 10*time.Second)
		require.NotNil(t, m, "message %d", len(out)+1)
		out = append(out, m)
	}
	require.Nil(t, it.next(t, 500*time.Millisecond),
		"no 11th over-quota message while ten are out")

	// Within quota goes past them.
	e.publish(t, calm, 1)
	m := it.next(t, 10*time.Second)
	require.NotNil(t, m)
	require.Equal(t, calm, project(t, m))
	require.NoError(t, m.Ack())

	// Settling one over-quota message lets the next one out; a second,
	// refused acknowledgement frees no other place.
	require.NoError(t, out[14].Ack())
	require.Error(t, out[14].Ack())
	m = it.next(t, 10*time.Second)
	require.NotNil(t, m, "one out after an ack")
	require.Equal(t, flood, project(t, m))
	require.Nil(t, it.next(t, 500*time.Millisecond), "ten out again")
	require.NoError(t, out[13].Nak())
	require.NotNil(t, it.next(t, 10*time.Second), "one out after a nak")
}

func TestOverQuotaLanesShareInTurn(t *testing.T) {
	a := tenant.Key{Account: "a", Project: "p"}
	b := tenant.Key{Account: "b", Project: "p"}
	e := newLaneEnv(t, map[tenant.Key]string{a: "tiny", b: "tiny"})
	e.publish(t, a, 300)
	e.publish(t, b, 100)
	_, it := e.lanes(t)
	time.Sleep(300 * time.Millisecond)

	// Both are over quota after their bursts; they alternate.
	got := take(t, it, 100)
	counts := map[tenant.Key]int{}
	for _, k := range got {
		counts[k]++
	}
	require.InDelta(t, 50, counts[a], 6, "%v", counts)
	require.InDelta(t, 50, counts[b], 6, "%v", counts)
}

func TestRestLaneReadsProjectsWithoutFolder(t *testing.T) {
	own := tenant.Key{Account: "acme", Project: "proj_prod"}
	stray := tenant.Key{Account: "acme", Project: "no_folder"}
	e := newLaneEnv(t, map[tenant.Key]string{own: "roomy"})
	e.publish(t, own, 30)
	e.publish(t, stray, 10)
	l, it := e.lanes(t)

	got := take(t, it, 40)
	counts := map[tenant.Key]int{}
	for _, k := range got {
		counts[k]++
	}
	require.Equal(t, map[tenant.Key]int{own: 30, stray: 10}, counts, "each message once")
	require.Equal(t, []tenant.Key{own}, l.Lanes())
	require.Eventually(t, func() bool { return l.Skipped() == 30 }, 5*time.Second,
		10*time.Millisecond, "the rest lane skips the messages of projects with a lane")

	// Nothing more arrives: no copy through the other path.
	require.Nil(t, it.next(t, 500*time.Millisecond), "an extra message arrived")
}

func TestNewLaneStartsWhereTheRestLaneStands(t *testing.T) {
	late := tenant.Key{Account: "acme", Project: "late"}
	e := newLaneEnv(t, nil)
	e.publish(t, late, 10)
	l, it := e.lanes(t)
	require.Len(t, take(t, it, 10), 10, "read by the rest lane")

	// The project is provisioned: its lane must not read the ten again,
	// yet gets everything published from now on.
	require.Eventually(t, func() bool {
		info, err := e.rest.Info(t.Context())
		return err == nil && info.AckFloor.Stream == 10
	}, 5*time.Second, 10*time.Millisecond)
	tenanttest.SetTier(t, e.root, late, "roomy")
	require.NoError(t, e.reg.Reload())
	require.Eventually(t, func() bool { return len(l.Lanes()) == 1 }, 5*time.Second,
		10*time.Millisecond)
	e.publish(t, late, 5)
	require.Len(t, take(t, it, 5), 5)
	ci, err := e.st.Consumer(t.Context(), quota.LaneName("ingest", late))
	require.NoError(t, err)
	info, err := ci.Info(t.Context())
	require.NoError(t, err)
	require.Equal(t, uint64(5), info.Delivered.Consumer, "the lane read only the new five")
}

func TestTierChangeUpdatesTheQuota(t *testing.T) {
	k := tenant.Key{Account: "acme", Project: "app"}
	other := tenant.Key{Account: "other", Project: "app"}
	e := newLaneEnv(t, map[tenant.Key]string{k: "tiny", other: "tiny"})
	_, it := e.lanes(t)

	// On tiny, 40 events at once are mostly over quota.
	e.publish(t, k, 40)
	take(t, it, 40)
	require.Eventually(t, func() bool { return overCount(t, e.usage) >= 30 }, time.Second,
		10*time.Millisecond)
	before := overCount(t, e.usage)

	// On roomy, the next 40 are within it.
	tenanttest.SetTier(t, e.root, k, "roomy")
	require.NoError(t, e.reg.Reload())
	e.publish(t, k, 40)
	take(t, it, 40)
	require.Equal(t, before, overCount(t, e.usage))
}

func overCount(t *testing.T, u *quota.Usage) uint64 {
	t.Helper()
	_, over := u.Totals()
	return over
}

func TestDeletedConsumerRemovesItsLane(t *testing.T) {
	k := tenant.Key{Account: "acme", Project: "gone"}
	keep := tenant.Key{Account: "globex", Project: "gone"}
	e := newLaneEnv(t, map[tenant.Key]string{k: "roomy", keep: "roomy"})
	l, it := e.lanes(t)
	require.Len(t, l.Lanes(), 2)

	// Offboarding deletes the lane's consumer (after the project's folder).
	tenanttest.Remove(t, e.root, k)
	require.NoError(t, e.reg.Reload())
	require.NoError(t, e.st.DeleteConsumer(t.Context(), quota.LaneName("ingest", k)))
	require.Eventually(t, func() bool { return len(l.Lanes()) == 1 }, 10*time.Second,
		10*time.Millisecond)
	require.Equal(t, []tenant.Key{keep}, l.Lanes())

	// The other account's project of the same id still flows.
	e.publish(t, keep, 3)
	require.Len(t, take(t, it, 3), 3)
}
