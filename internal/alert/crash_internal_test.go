package alert

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/testenv"
)

// TestCrashBetweenWindowWriteAndAck plays a replica that stores its
// windows and hands on the alert they fire, then dies before it acks the
// decisions. The decisions come back to the next replica, which must
// neither count them again nor send the alert a second time.
func TestCrashBetweenWindowWriteAndAck(t *testing.T) {
	srv := testenv.NATS(t)
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	_, err = bus.EnsureStream(ctx, js, bus.StreamConfig{})
	require.NoError(t, err)

	var hits atomic.Int64
	rcv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		hits.Add(1)
	}))
	t.Cleanup(rcv.Close)
	allow, _ := ParseCIDRs([]string{"127.0.0.1/32"})
	log := slog.New(slog.DiscardHandler)
	a, err := New(ctx, Config{Guard: NewGuard(allow), AckWait: time.Second}, js, nil, log)
	require.NoError(t, err)
	sc, _ := store.NewScope("acme", "proj_prod")
	sub, _, err := a.store.Create(ctx, sc, Spec{Name: "two", Threshold: 2,
		Window: Duration(time.Minute), Match: map[string]string{"outcome": "blocked"},
		Channel: Channel{Type: ChannelWebhook, URL: rcv.URL}}, "t")
	require.NoError(t, err)

	pub := bus.NewPublisher(js, 5*time.Second)
	for _, id := range []string{"e1", "e2"} {
		require.NoError(t, pub.Publish(ctx, &events.Event{SchemaVersion: "1", EventID: id,
			OccurredAt: time.Now().UTC().Truncate(time.Millisecond), AccountID: "acme",
			ProjectID: "proj_prod", Source: "shield", EventType: "prompt",
			Action: "process_prompt", Mode: "enforce", Decision: "deny",
			ActualDecision: "deny", Outcome: "blocked", HighestSeverity: "high"}))
	}

	// The replica that dies: it evaluates both decisions, firing the
	// alert into the outbox, and acknowledges nothing.
	subs, err := watchSubs(ctx, a.store.subs, log)
	require.NoError(t, err)
	dying := &evaluator{js: js, state: a.state, subs: subs, m: newMetrics(nil), log: log,
		dec: events.NewDecoder(events.Limits{}), cache: map[string]cachedWindow{}}
	batch, err := a.eval.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	n := 0
	for m := range batch.Messages() {
		require.NoError(t, dying.evaluate(m))
		n++
	}
	require.Equal(t, 2, n)

	// The next replica gets both decisions again after the ack wait.
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	require.Eventually(t, func() bool { return hits.Load() == 1 }, 10*time.Second,
		10*time.Millisecond)
	require.Eventually(t, func() bool {
		info, err := a.eval.Info(ctx)
		// Four deliveries: two to the dying replica, two to the next.
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0 &&
			info.Delivered.Consumer >= 4
	}, 10*time.Second, 20*time.Millisecond, "the decisions were redelivered and acked")
	time.Sleep(500 * time.Millisecond)
	require.Equal(t, int64(1), hits.Load(), "the alert was sent once")

	key := "acme.proj_prod." + sub.ID + "." + groupHash("")
	w, _, err := (&evaluator{state: a.state, cache: map[string]cachedWindow{}}).load(ctx, key)
	require.NoError(t, err)
	require.Equal(t, int64(1), w.Fired, "the redeliveries were not counted again")
	require.Empty(t, w.HitAt)
}
