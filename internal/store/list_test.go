package store_test

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/store"
)

// spread stores acme/proj_prod rows at the given distances before end,
// each delivered twice, and a globex row at each of the same times. It
// returns the acme ids newest first, as a list must show them.
func spread(t *testing.T, db *store.Store, end time.Time, ago []time.Duration) []string {
	t.Helper()
	g := gen.New(4, nil, nil)
	var acme, all []*events.Event
	for i, d := range ago {
		for _, acct := range []string{"acme", "globex"} {
			ev := g.NextFor(gen.Tenant{Account: acct, Project: "proj_prod"})
			ev.EventID = fmt.Sprintf("e-%02d", i)
			ev.OccurredAt = end.Add(-d)
			all = append(all, ev)
			if acct == "acme" {
				acme = append(acme, ev)
			}
		}
	}
	require.NoError(t, db.Insert(t.Context(), all))
	require.NoError(t, db.Insert(t.Context(), acme), "a redelivered batch")
	slices.SortFunc(acme, func(a, b *events.Event) int {
		if c := b.OccurredAt.Compare(a.OccurredAt); c != 0 {
			return c
		}
		return strings.Compare(b.EventID, a.EventID)
	})
	out := make([]string, len(acme))
	for i, ev := range acme {
		out[i] = ev.EventID
	}
	return out
}

// Rows on both sides of every edge of the windows a list searches, months
// apart and several in one second, are each listed once and in order,
// walking older and then back newer, whatever the page size.
func TestListPagesAcrossSearchWindows(t *testing.T) {
	db := openStore(t)
	sc := mustScope(t, "acme", "proj_prod")
	end := time.Now().UTC().Truncate(time.Second)
	ago := []time.Duration{time.Second, 59 * time.Minute, time.Hour,
		time.Hour + time.Millisecond, time.Hour + time.Second, 6 * time.Hour,
		6*time.Hour - 999*time.Millisecond, 6*time.Hour - 500*time.Millisecond,
		6*time.Hour + time.Second, 36 * time.Hour, 37 * time.Hour, 9 * 24 * time.Hour,
		9*24*time.Hour + time.Second, 20 * 24 * time.Hour, 45 * 24 * time.Hour,
		70 * 24 * time.Hour}
	want := spread(t, db, end, ago)
	f := filter.Filter{From: end.Add(-80 * 24 * time.Hour), To: end}

	for _, size := range []int{1, 2, 3, 7, 100} {
		var got []string
		var pages [][]string
		var after store.Cursor
		for {
			p, err := db.List(t.Context(), sc, f, after, size)
			require.NoError(t, err)
			require.LessOrEqual(t, len(p.Rows), size)
			pages = append(pages, ids(p.Rows))
			got = append(got, ids(p.Rows)...)
			if !p.More {
				break
			}
			after = p.Next
		}
		require.Equal(t, want, got, "page size %d", size)

		// Back towards the head from the last page, page by page.
		last := pages[len(pages)-1]
		before := store.Cursor{EventID: last[0], At: atOf(t, db, sc, last[0])}
		for i := len(pages) - 2; i >= 0; i-- {
			p, err := db.ListNewer(t.Context(), sc, f, before, size)
			require.NoError(t, err)
			require.Equal(t, pages[i], ids(p.Rows), "page size %d, page %d", size, i)
			require.Equal(t, i > 0, p.More)
			before = p.Next
		}
	}

	// The filter's range bounds the search: nothing before From or at To.
	p, err := db.List(t.Context(), sc, filter.Filter{From: end.Add(-36 * time.Hour),
		To: end.Add(-time.Hour)}, store.Cursor{}, 100)
	require.NoError(t, err)
	require.Equal(t, want[3:10], ids(p.Rows))

	// Without a range the search runs from now to the oldest row.
	p, err = db.List(t.Context(), sc, filter.Filter{}, store.Cursor{}, 100)
	require.NoError(t, err)
	require.Equal(t, want, ids(p.Rows))
}

// A filter that matches rows days apart still fills the page, and an id
// stored again at another time shows once on a page.
func TestListFindsSparseRowsOnce(t *testing.T) {
	db := openStore(t)
	sc := mustScope(t, "acme", "proj_prod")
	end := time.Now().UTC().Truncate(time.Second)
	g := gen.New(5, nil, nil)
	var evs []*events.Event
	for i := range 40 {
		ev := g.NextFor(gen.Tenant{Account: "acme", Project: "proj_prod"})
		ev.EventID = fmt.Sprintf("e-%02d", i)
		ev.OccurredAt = end.Add(-time.Duration(i) * 11 * time.Hour)
		ev.Identity.UserID = "someone"
		if i%10 == 3 {
			ev.Identity.UserID = "rare"
		}
		evs = append(evs, ev)
	}
	require.NoError(t, db.Insert(t.Context(), evs))
	// e-23 again, much later than first stored: ahead of e-33 in the
	// oldest window searched.
	again := *evs[23]
	again.OccurredAt = end.Add(-30 * time.Minute)
	require.NoError(t, db.Insert(t.Context(), []*events.Event{&again}))

	v, err := url.ParseQuery("range=30d&user=rare")
	require.NoError(t, err)
	f, err := filter.Parse(v, end.Add(time.Second), time.UTC)
	require.NoError(t, err)
	p, err := db.List(t.Context(), sc, f, store.Cursor{}, 3)
	require.NoError(t, err)
	require.Equal(t, []string{"e-23", "e-03", "e-13"}, ids(p.Rows))
	require.True(t, p.More)
	p, err = db.List(t.Context(), sc, f, store.Cursor{}, 10)
	require.NoError(t, err)
	require.Equal(t, []string{"e-23", "e-03", "e-13", "e-33"}, ids(p.Rows))
	require.False(t, p.More)
}

// The facets' total is the count of distinct decisions, with copies and
// filters, so the traces page can skip its count query.
func TestFacetsTotalIsTheCount(t *testing.T) {
	db := openStore(t)
	twoTenants(t, db)
	for _, q := range []string{"range=30d", "range=30d&outcome=blocked", "range=1h",
		"range=30d&category=jailbreak", "range=30d&user=nobody"} {
		v, err := url.ParseQuery(q)
		require.NoError(t, err)
		f, err := filter.Parse(v, time.Now(), time.UTC)
		require.NoError(t, err)
		for _, sc := range []store.Scope{mustScope(t, "acme", "proj_prod"),
			mustScope(t, "globex", "proj_prod")} {
			n, err := db.Count(t.Context(), sc, f)
			require.NoError(t, err)
			fs, err := db.Facets(t.Context(), sc, f)
			require.NoError(t, err)
			require.Equal(t, n, fs.Total(), "%s %s", sc.Account(), q)
		}
	}
	require.Less(t, len(events.Outcomes), store.MaxFacetValues,
		"every outcome must fit in the outcome facet for Total to be exact")
}
