package export_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/export"
	"github.com/guardwatch/observatory/internal/gen"
)

// While rows keep arriving, in the range and out of it, an export holds
// exactly the rows stored up to the bound its manifest states: none
// missing, none repeated, none newer.
func TestExportDuringInsertsMatchesItsBound(t *testing.T) {
	st := openStore(t)
	seed(t, st, 1500, acme)
	sc := mustScope(t, "acme", "proj_prod")
	from := time.Now().UTC().Add(-4 * time.Hour).Truncate(time.Second)
	to := time.Now().UTC().Add(time.Hour).Truncate(time.Second)

	ctx, cancel := context.WithCancel(t.Context())
	var inserted atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		g := gen.New(21, []gen.Tenant{acme}, nil)
		for i := 0; ctx.Err() == nil; i++ {
			var evs []*events.Event
			for k := range 20 {
				ev := g.NextFor(acme)
				ev.EventID = fmt.Sprintf("late-%04d-%02d", i, k)
				// Inside the range, among the rows being exported.
				ev.OccurredAt = from.Add(time.Duration(i*20+k) * 3 * time.Second)
				evs = append(evs, ev)
			}
			if err := st.Insert(context.WithoutCancel(ctx), evs); err == nil {
				inserted.Add(int64(len(evs)))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	// Let inserts run for longer than the settle time before the export
	// starts, so that rows stored before its bound include some of them
	// and some are in flight around its start.
	time.Sleep(1500 * time.Millisecond)

	e := newExporter(t, st, func(c *export.Config) {
		c.Settle = time.Second
		c.WindowRows = 100 // many queries, spread over the export
	})
	j, err := e.NewJob(export.Request{Scope: sc, Filter: rangeFilter(from, to),
		Format: export.NDJSON, Actor: "tester"})
	require.NoError(t, err)
	var buf bytes.Buffer
	res, err := e.Run(t.Context(), j, slowWriter{&buf})
	require.NoError(t, err)
	atExportEnd := inserted.Load()
	cancel()
	wg.Wait()

	bound := j.StoredBy
	require.Equal(t, bound.Format("2006-01-02T15:04:05.000Z"), res.Manifest.UpperBound.StoredBy)
	want := expected(t, st, sc, from, to, "AND ingested_at <= ?", uint64(bound.UnixMilli()))
	got := readNDJSON(t, buf.Bytes())
	ids := make([]string, len(got))
	seen := map[string]bool{}
	for i, m := range got {
		ids[i] = m["event_id"].(string)
		require.False(t, seen[ids[i]], "%s repeated", ids[i])
		seen[ids[i]] = true
	}
	wantIDs := make([]string, len(want))
	for i, w := range want {
		wantIDs[i] = w.ID
	}
	require.Equal(t, wantIDs, ids)
	require.EqualValues(t, len(want), res.Manifest.Rows)

	// The test means something only if rows arrived on both sides of the
	// bound, some of them while the export ran.
	after := expected(t, st, sc, from, to, "AND ingested_at > ?", uint64(bound.UnixMilli()))
	t.Logf("stored before the bound %d, after it %d; inserted by the export's end %d",
		len(want), len(after), atExportEnd)
	require.NotEmpty(t, after, "rows stored after the bound")
	require.Greater(t, len(want), 1500, "rows stored before the bound beyond the seed")
	require.Greater(t, atExportEnd, int64(len(want)-1500+len(after)/2),
		"inserts kept running during the export")
}

// slowWriter makes the export last long enough for inserts to interleave.
type slowWriter struct{ w *bytes.Buffer }

func (s slowWriter) Write(p []byte) (int, error) {
	time.Sleep(25 * time.Millisecond)
	return s.w.Write(p)
}
