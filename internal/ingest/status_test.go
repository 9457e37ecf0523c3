package ingest_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/ingest"
)

// gate holds every insert until it is opened, as a ClickHouse that
// stopped answering would.
type gate struct {
	ingest.Inserter
	open chan struct{}
}

func (g *gate) Insert(ctx context.Context, evs []*events.Event) error {
	select {
	case <-g.open:
		return g.Inserter.Insert(ctx, evs)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestStatusReportsLagAndMetricsCount runs an ingester whose inserts hang:
// its status names the lag over MaxLag while the stream holds the backlog,
// and once inserts pass, the lag clears and the metrics count every row,
// batch and dead letter.
func TestStatusReportsLagAndMetricsCount(t *testing.T) {
	p := newPipeline(t)
	p.stop() // this test runs an ingester of its own
	g := &gate{Inserter: p.db, open: make(chan struct{})}
	reg := prometheus.NewRegistry()
	ing := ingest.New(ingest.Config{BatchSize: 20, BatchWait: 50 * time.Millisecond,
		RetryDelay: 50 * time.Millisecond, MaxDelay: 200 * time.Millisecond,
		InsertTimeout: 300 * time.Millisecond, MaxLag: 100}, p.js, p.cons, g, reg,
		slog.Default())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ing.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	gn := gen.New(21, []gen.Tenant{{Account: "acme", Project: "proj_prod"}}, nil)
	for range 400 {
		m, err := bus.Message(gn.Next())
		require.NoError(t, err)
		_, err = p.js.PublishMsgAsync(m)
		require.NoError(t, err)
	}
	bad := nats.NewMsg("guard.v1.acme.proj_prod.decision")
	bad.Data = []byte(`{"schema_version":`)
	_, err := p.js.PublishMsgAsync(bad)
	require.NoError(t, err)
	<-p.js.PublishAsyncComplete()

	var st ingest.Status
	require.Eventually(t, func() bool {
		st = ing.Status(t.Context())
		return st.Lagging && st.LastError != ""
	}, 10*time.Second, 50*time.Millisecond, "lag and the failing insert are reported")
	require.Greater(t, st.Pending, uint64(100))
	require.ErrorContains(t, st.Err(), "over the limit of 100")
	require.ErrorContains(t, st.Err(), "insert: ")
	require.ErrorContains(t, st.Err(), "last good insert never")
	require.Positive(t, value(t, reg, "guard_ingest_held_messages"),
		"held batches are counted")

	close(g.open)
	sc := scope(t, "acme", "proj_prod")
	p.waitCount(t, sc, 400)
	require.Eventually(t, func() bool {
		st = ing.Status(t.Context())
		return st.Err() == nil
	}, 10*time.Second, 50*time.Millisecond, "status clears: %v", st.Err())

	require.EqualValues(t, 400, value(t, reg, "guard_ingest_rows_inserted_total"))
	require.Positive(t, value(t, reg, "guard_ingest_insert_retries_total"))
	require.Eventually(t, func() bool {
		return value(t, reg, "guard_ingest_dead_letters_total", "invalid_json") == 1
	}, 10*time.Second, 50*time.Millisecond, "the reject is counted by its reason")
	require.EqualValues(t, 400,
		value(t, reg, "guard_ingest_project_rows_total", "acme", "proj_prod"))
	require.Zero(t, value(t, reg, "guard_ingest_held_messages"))
	for _, h := range []string{"guard_ingest_batch_rows", "guard_ingest_batch_messages",
		"guard_ingest_event_delay_seconds", "guard_ingest_insert_seconds"} {
		require.Positive(t, value(t, reg, h), "%s observed", h)
	}
}

// value reads the series of name whose label values are labels, in
// order: a counter's or gauge's value, a histogram's sample count.
func value(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(labels) != len(m.GetLabel()) {
				continue
			}
			match := true
			for i, l := range m.GetLabel() {
				match = match && l.GetValue() == labels[i]
			}
			switch {
			case !match:
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("metric %s%v not registered", name, labels)
	return 0
}
