package alert

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/testenv"
)

func testSub(threshold int, window, cooldown time.Duration) *Subscription {
	return &Subscription{ID: "sub_1", AccountID: "acme", ProjectID: "proj_prod", Version: 1,
		Spec: Spec{Name: "s", Threshold: threshold, Window: Duration(window),
			Cooldown: Duration(cooldown), GroupBy: GroupNone}}
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func hitAt(seq uint64, d time.Duration) hit {
	return hit{Seq: seq, At: t0.Add(d), Trigger: EventSummary{EventID: "e" + string(rune('a'+seq))}}
}

func TestWindowFiresAtTheThresholdWithinTheWindow(t *testing.T) {
	sub := testSub(3, 10*time.Second, 0)
	w := &window{}
	steps := []struct {
		h    hit
		want step
	}{
		{hitAt(1, 0), stepCounted},
		{hitAt(2, 4*time.Second), stepCounted},
		{hitAt(3, 11*time.Second), stepCounted}, // hit 1 fell out
		{hitAt(4, 12*time.Second), stepFired},   // 2, 3 and 4 within 10s
		{hitAt(5, 13*time.Second), stepCounted}, // spent hits do not count again
	}
	for i, s := range steps {
		got, a := w.apply(sub, s.h)
		require.Equal(t, s.want, got, "step %d", i)
		if got == stepFired {
			require.Equal(t, 3, a.Count)
			require.Equal(t, t0.Add(4*time.Second), a.FirstAt)
			require.Equal(t, t0.Add(12*time.Second), a.LastAt)
			require.Equal(t, []string{"ec", "ed", "ee"}, a.EventIDs)
		}
	}
}

func TestWindowCountsLateArrivalsInOrder(t *testing.T) {
	sub := testSub(2, 5*time.Second, 0)
	w := &window{}
	st, _ := w.apply(sub, hitAt(2, 20*time.Second))
	require.Equal(t, stepCounted, st)
	st, _ = w.apply(sub, hitAt(1, 2*time.Second)) // far older: outside the window
	require.Equal(t, stepCounted, st)
	st, _ = w.apply(sub, hitAt(3, 17*time.Second)) // older, but within
	require.Equal(t, stepFired, st)
}

func TestWindowCooldownSuppressesAndReports(t *testing.T) {
	sub := testSub(1, time.Minute, 30*time.Second)
	w := &window{}
	st, _ := w.apply(sub, hitAt(1, 0))
	require.Equal(t, stepFired, st)
	for i := range 3 {
		st, _ = w.apply(sub, hitAt(uint64(2+i), time.Duration(i+1)*time.Second))
		require.Equal(t, stepSuppressed, st)
	}
	st, a := w.apply(sub, hitAt(9, 30*time.Second))
	require.Equal(t, stepFired, st)
	require.Equal(t, int64(3), a.Suppressed)
}

func TestWindowRecognisesARedelivery(t *testing.T) {
	sub := testSub(2, time.Minute, 0)
	w := &window{}
	w.apply(sub, hitAt(1, 0))
	st, a := w.apply(sub, hitAt(1, 0))
	require.Equal(t, stepDuplicate, st)
	require.Nil(t, a)

	st, fired := w.apply(sub, hitAt(2, time.Second))
	require.Equal(t, stepFired, st)
	st, again := w.apply(sub, hitAt(2, time.Second))
	require.Equal(t, stepDuplicate, st)
	require.Equal(t, fired, again, "the redelivery of the firing decision hands on its alert")
	require.Equal(t, fired.ID, alertID(sub, hitAt(2, time.Second)))
}

func TestWindowStartsOverForANewVersion(t *testing.T) {
	sub := testSub(2, time.Minute, time.Hour)
	w := &window{}
	w.apply(sub, hitAt(1, 0))
	edited := *sub
	edited.Version = 2
	st, _ := w.apply(&edited, hitAt(2, time.Second))
	require.Equal(t, stepCounted, st, "the old version's hit is gone")
	require.Equal(t, int64(2), w.Version)
}

// TestConcurrentReplicasCountEveryMatchOnce runs many evaluators, each
// with its own cache, against one window in a real bucket: every match is
// counted once and the threshold fires exactly total/N times.
func TestConcurrentReplicasCountEveryMatchOnce(t *testing.T) {
	srv := testenv.NATS(t)
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	state, err := ensureKV(ctx, js, stateConfig(1))
	require.NoError(t, err)
	_, err = ensureOutbox(ctx, js, 1)
	require.NoError(t, err)

	const replicas, perReplica, threshold = 6, 50, 10
	sub := testSub(threshold, time.Hour, 0)
	var wg sync.WaitGroup
	errs := make(chan error, replicas*perReplica)
	for r := range replicas {
		e := &evaluator{js: js, state: state, m: newMetrics(nil),
			log: slog.New(slog.DiscardHandler), cache: map[string]cachedWindow{},
			dec: events.NewDecoder(events.Limits{})}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perReplica {
				seq := uint64(r*perReplica + i + 1)
				h := hit{Seq: seq, At: t0.Add(time.Duration(seq) * time.Millisecond)}
				errs <- e.count(ctx, windowKey(sub, ""), []counted{{sub: sub, h: h}})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	info, err := js.Stream(ctx, OutboxStream)
	require.NoError(t, err)
	si, err := info.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(replicas*perReplica/threshold), si.State.Msgs)
}

// TestBatchWritesAWindowOnce applies a batch of matches of one window in
// one write: the threshold fires as often as it would one match at a
// time, and a repeat of the batch counts nothing.
func TestBatchWritesAWindowOnce(t *testing.T) {
	srv := testenv.NATS(t)
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	state, err := ensureKV(ctx, js, stateConfig(1))
	require.NoError(t, err)
	outbox, err := ensureOutbox(ctx, js, 1)
	require.NoError(t, err)

	sub := testSub(10, time.Hour, 0)
	e := &evaluator{js: js, state: state, m: newMetrics(nil), log: slog.New(slog.DiscardHandler),
		cache: map[string]cachedWindow{}}
	var cs []counted
	for i := range 25 {
		cs = append(cs, counted{sub: sub, h: hitAt(uint64(i+1), time.Duration(i)*time.Second)})
	}
	key := windowKey(sub, "")
	require.NoError(t, e.count(ctx, key, cs))
	require.NoError(t, e.count(ctx, key, cs), "a redelivered batch")

	entry, err := state.Get(ctx, key)
	require.NoError(t, err)
	require.Equal(t, uint64(1), entry.Revision(), "one write for the whole batch")
	w, _, err := e.load(ctx, key)
	require.NoError(t, err)
	require.Equal(t, int64(2), w.Fired)
	require.Len(t, w.HitAt, 5)
	si, err := outbox.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(2), si.State.Msgs)
}
