package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/store"
)

// twoTenants stores the same traffic shape for acme/proj_prod and
// globex/proj_prod, with every acme event delivered twice.
func twoTenants(t *testing.T, db *store.Store) []*events.Event {
	t.Helper()
	now := time.Now().UTC()
	i := 0
	g := gen.New(3, []gen.Tenant{{Account: "acme", Project: "proj_prod"},
		{Account: "globex", Project: "proj_prod"}}, func() time.Time {
		i++
		return now.Add(-time.Duration(i) * 13 * time.Second)
	})
	var acme, all []*events.Event
	for range 400 {
		ev := g.Next()
		all = append(all, ev)
		if ev.AccountID == "acme" {
			acme = append(acme, ev)
		}
	}
	require.NoError(t, db.Insert(t.Context(), all))
	require.NoError(t, db.Insert(t.Context(), acme))
	return acme
}

func TestViewReadsRefuseTheZeroScope(t *testing.T) {
	db := openStore(t)
	ctx := t.Context()
	var zero store.Scope
	_, err := db.Facets(ctx, zero, wide)
	require.ErrorIs(t, err, store.ErrNoScope)
	_, err = db.Sessions(ctx, zero, wide, store.SessionCursor{}, 10)
	require.ErrorIs(t, err, store.ErrNoScope)
	_, err = db.OutcomeSeries(ctx, zero, wide, 24*time.Hour)
	require.ErrorIs(t, err, store.ErrNoScope)
	_, err = db.LatencyQuantiles(ctx, zero, wide)
	require.ErrorIs(t, err, store.ErrNoScope)
	_, err = db.ListNewer(ctx, zero, wide, store.Cursor{At: time.Now(), EventID: "x"}, 10)
	require.ErrorIs(t, err, store.ErrNoScope)
	_, err = db.Arrivals(ctx, zero, wide, 0, 10)
	require.ErrorIs(t, err, store.ErrNoScope)
}

func TestFacetsSeriesAndLatencyCountEachDecisionOnce(t *testing.T) {
	db := openStore(t)
	acme := twoTenants(t, db)
	sc := mustScope(t, "acme", "proj_prod")
	ctx := t.Context()

	want := map[string]map[string]uint64{}
	for _, name := range []string{store.FacetOutcome, store.FacetDecision, store.FacetMode,
		store.FacetSeverity, store.FacetEventType, store.FacetUser} {
		want[name] = map[string]uint64{}
	}
	for _, ev := range acme {
		want[store.FacetOutcome][ev.Outcome]++
		want[store.FacetDecision][ev.Decision]++
		want[store.FacetMode][ev.Mode]++
		want[store.FacetSeverity][ev.HighestSeverity]++
		want[store.FacetEventType][ev.EventType]++
		want[store.FacetUser][ev.Identity.UserID]++
	}
	f, err := db.Facets(ctx, sc, wide)
	require.NoError(t, err)
	for name, counts := range want {
		got := map[string]uint64{}
		for i, v := range f[name] {
			got[v.Value] = v.Count
			if i > 0 {
				require.GreaterOrEqual(t, f[name][i-1].Count, v.Count, "%s: most first", name)
			}
		}
		require.Equal(t, counts, got, name)
	}

	rng := filter.Filter{From: time.Now().Add(-3 * time.Hour), To: time.Now().Add(time.Minute)}
	series, err := db.OutcomeSeries(ctx, sc, rng, 15*time.Minute)
	require.NoError(t, err)
	var total uint64
	for _, b := range series {
		for _, n := range b.Counts {
			total += n
		}
	}
	require.Equal(t, uint64(len(acme)), total)

	lat, err := db.LatencyQuantiles(ctx, sc, wide)
	require.NoError(t, err)
	require.Equal(t, uint64(len(acme)), lat.Decisions)
	require.Positive(t, lat.P50MS)
	require.GreaterOrEqual(t, lat.P95MS, lat.P50MS)

	_, err = db.OutcomeSeries(ctx, sc, wide, time.Minute)
	require.Error(t, err, "too many buckets")
}

func TestSessionsAreScopedAndPaged(t *testing.T) {
	db := openStore(t)
	acme := twoTenants(t, db)
	sc := mustScope(t, "acme", "proj_prod")
	want := map[string]uint64{}
	for _, ev := range acme {
		want[ev.SessionID]++
	}
	got := map[string]uint64{}
	var after store.SessionCursor
	for {
		page, err := db.Sessions(t.Context(), sc, wide, after, 7)
		require.NoError(t, err)
		for _, s := range page.Rows {
			_, dup := got[s.SessionID]
			require.False(t, dup, "session %s twice", s.SessionID)
			got[s.SessionID] = s.Decisions
			require.False(t, s.LastSeen.Before(s.FirstSeen))
		}
		if !page.More {
			break
		}
		after = page.Next
	}
	require.Equal(t, want, got)
}

func TestListNewerWalksBackToTheHead(t *testing.T) {
	db := openStore(t)
	twoTenants(t, db)
	sc := mustScope(t, "acme", "proj_prod")
	ctx := t.Context()
	var pages [][]string
	var after store.Cursor
	for {
		p, err := db.List(ctx, sc, wide, after, 25)
		require.NoError(t, err)
		pages = append(pages, ids(p.Rows))
		if !p.More {
			break
		}
		after = p.Next
	}
	require.Greater(t, len(pages), 2)
	last := pages[len(pages)-1]
	before := store.Cursor{EventID: last[0]}
	before.At = atOf(t, db, sc, last[0])
	for i := len(pages) - 2; i >= 0; i-- {
		p, err := db.ListNewer(ctx, sc, wide, before, 25)
		require.NoError(t, err)
		require.Equal(t, pages[i], ids(p.Rows), "page %d", i)
		require.Equal(t, i > 0, p.More)
		if p.More {
			before = p.Next
		}
	}
}

func TestArrivalsHideRedeliveriesAndOtherTenants(t *testing.T) {
	db := openStore(t)
	acme := twoTenants(t, db)
	sc := mustScope(t, "acme", "proj_prod")
	ctx := context.Background()
	since := uint64(time.Now().UnixMilli())
	time.Sleep(5 * time.Millisecond)

	g := gen.New(9, nil, nil)
	fresh := g.NextFor(gen.Tenant{Account: "acme", Project: "proj_prod"})
	fresh.EventID = "evt-fresh"
	other := g.NextFor(gen.Tenant{Account: "globex", Project: "proj_prod"})
	require.NoError(t, db.Insert(ctx, []*events.Event{acme[0], acme[1], fresh, other}))
	got, err := db.Arrivals(ctx, sc, wide, since, 0)
	require.NoError(t, err)
	require.Equal(t, []string{"evt-fresh"}, arrivalIDs(got))
	require.GreaterOrEqual(t, got[0].IngestedAt, since)
}

func ids(rows []store.Decision) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.EventID
	}
	return out
}

func arrivalIDs(as []store.Arrival) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.EventID
	}
	return out
}

// atOf returns the stored time of an event, read through the store.
func atOf(t *testing.T, db *store.Store, sc store.Scope, id string) time.Time {
	t.Helper()
	ev, err := db.Get(t.Context(), sc, id)
	require.NoError(t, err, fmt.Sprintf("get %s", id))
	return ev.OccurredAt
}
