package store_test

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func openStore(t *testing.T) *store.Store {
	t.Helper()
	addr := testenv.ClickHouse(t)
	db, err := store.Open(t.Context(), store.Config{Addr: addr,
		Database: testenv.Database(t, addr)})
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

func mustScope(t *testing.T, a, p string) store.Scope {
	sc, err := store.NewScope(a, p)
	require.NoError(t, err)
	return sc
}

var wide = filter.Filter{From: time.Now().Add(-40 * 24 * time.Hour),
	To: time.Now().Add(time.Hour)}

func TestMigrationsAreIdempotent(t *testing.T) {
	db := openStore(t)
	require.NoError(t, db.Migrate(t.Context()))
	require.NoError(t, db.Migrate(t.Context()))

	// Each version is recorded once however often start-up runs.
	var rows, versions uint64
	require.NoError(t, db.Conn().QueryRow(t.Context(), "SELECT count(), uniqExact(version) FROM "+
		db.Database()+".schema_migrations").Scan(&rows, &versions))
	require.Positive(t, versions)
	require.Equal(t, versions, rows)
}

func TestReadsRefuseTheZeroScope(t *testing.T) {
	db := openStore(t)
	_, err := db.List(t.Context(), store.Scope{}, wide, store.Cursor{}, 10)
	require.ErrorIs(t, err, store.ErrNoScope)
	_, err = db.Get(t.Context(), store.Scope{}, "x")
	require.ErrorIs(t, err, store.ErrNoScope)
	_, err = db.Count(t.Context(), store.Scope{}, wide)
	require.ErrorIs(t, err, store.ErrNoScope)

	for _, bad := range []string{"", "a.b", "*", ">", "a b", "../x", "a/b", "x\x00"} {
		_, err := store.NewScope(bad, "p")
		require.Error(t, err, "account %q", bad)
		_, err = store.NewScope("a", bad)
		require.Error(t, err, "project %q", bad)
	}
}

// Pages walk every row exactly once even when many rows share a second
// and a millisecond, and rows that arrive meanwhile do not shift them.
func TestKeysetPagesNeitherSkipNorRepeat(t *testing.T) {
	db := openStore(t)
	sc := mustScope(t, "acme", "proj_prod")
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	g := gen.New(1, []gen.Tenant{{Account: "acme", Project: "proj_prod"}}, nil)

	var evs []*events.Event
	for i := range 230 {
		ev := g.Next()
		// Groups of rows in the same second, some in the same millisecond.
		ev.OccurredAt = base.Add(time.Duration(i/20) * time.Second).
			Add(time.Duration(i%3) * time.Millisecond)
		ev.EventID = fmt.Sprintf("e-%03d", i)
		evs = append(evs, ev)
	}
	require.NoError(t, db.Insert(t.Context(), evs))
	require.NoError(t, db.Insert(t.Context(), evs[:50]), "a redelivered batch")

	seen := map[string]bool{}
	var cur store.Cursor
	var prev *store.Decision
	for pages := 0; ; pages++ {
		page, err := db.List(t.Context(), sc, wide, cur, 25)
		require.NoError(t, err)
		for i := range page.Rows {
			r := page.Rows[i]
			require.False(t, seen[r.EventID], "row %s repeated", r.EventID)
			seen[r.EventID] = true
			if prev != nil {
				require.False(t, r.OccurredAt.After(prev.OccurredAt), "newest first")
			}
			prev = &r
		}
		if pages == 2 {
			// New rows arrive while the viewer pages.
			late := g.Next()
			late.EventID = "late"
			require.NoError(t, db.Insert(t.Context(), []*events.Event{late}))
		}
		if !page.More {
			break
		}
		cur = page.Next
	}
	require.Len(t, seen, 230)
}

func TestFiltersAndTenantWalls(t *testing.T) {
	db := openStore(t)
	g := gen.New(2, nil, nil)
	now := time.Now().UTC()

	mk := func(acct, proj, id string, mod func(*events.Event)) *events.Event {
		ev := g.NextFor(gen.Tenant{Account: acct, Project: proj})
		ev.EventID = id
		ev.OccurredAt = now.Add(-time.Minute)
		if mod != nil {
			mod(ev)
		}
		ev.Outcome = events.DeriveOutcome(ev.Mode, ev.Decision, ev.ActualDecision)
		return ev
	}
	evs := []*events.Event{
		mk("acme", "proj_prod", "blocked-1", func(e *events.Event) {
			e.Decision, e.ActualDecision, e.HighestSeverity = "deny", "deny", "critical"
			e.ThreatCategories = []string{"jailbreak"}
			e.Reason = "Jailbreak persona DETECTED"
		}),
		mk("acme", "proj_prod", "allowed-1", func(e *events.Event) {
			e.Decision, e.ActualDecision, e.HighestSeverity = "allow", "allow", "none"
			e.Mode = "enforce"
			e.ThreatCategories = nil
		}),
		mk("acme", "proj_prod", "old-1", func(e *events.Event) {
			e.OccurredAt = now.Add(-10 * 24 * time.Hour)
		}),
		// The same project id and event id under another account.
		mk("globex", "proj_prod", "blocked-1", nil),
	}
	require.NoError(t, db.Insert(t.Context(), evs))
	acme := mustScope(t, "acme", "proj_prod")
	globex := mustScope(t, "globex", "proj_prod")

	parse := func(q string) filter.Filter {
		v, err := url.ParseQuery(q)
		require.NoError(t, err)
		f, err := filter.Parse(v, time.Now(), time.UTC)
		require.NoError(t, err)
		return f
	}
	ids := func(sc store.Scope, f filter.Filter) []string {
		page, err := db.List(t.Context(), sc, f, store.Cursor{}, 100)
		require.NoError(t, err)
		var out []string
		for _, r := range page.Rows {
			out = append(out, r.EventID)
		}
		return out
	}

	require.ElementsMatch(t, []string{"blocked-1", "allowed-1"}, ids(acme, parse("range=1h")))
	require.ElementsMatch(t, []string{"blocked-1", "allowed-1", "old-1"},
		ids(acme, parse("range=30d")))
	require.Equal(t, []string{"blocked-1"}, ids(acme, parse("range=1h&outcome=blocked")))
	require.Equal(t, []string{"blocked-1"}, ids(acme, parse("range=1h&severity=high")))
	require.Equal(t, []string{"blocked-1"}, ids(acme, parse("range=1h&category=jailbreak")))
	require.Equal(t, []string{"blocked-1"}, ids(acme, parse("range=1h&q=persona+detected")))
	require.Empty(t, ids(acme, parse("range=1h&q=%27%3B+DROP+TABLE")))
	require.Equal(t, []string{"allowed-1"}, ids(acme, parse("range=1h&decision=allow")))

	n, err := db.Count(t.Context(), globex, parse("range=1h"))
	require.NoError(t, err)
	require.EqualValues(t, 1, n)

	got, err := db.Get(t.Context(), acme, "blocked-1")
	require.NoError(t, err)
	require.Equal(t, "Jailbreak persona DETECTED", got.Reason)
	got, err = db.Get(t.Context(), globex, "blocked-1")
	require.NoError(t, err)
	require.Equal(t, "globex", got.AccountID)

	// A time hint narrows the read; a wrong one still finds the row, and
	// never finds another tenant's.
	got, err = db.GetNear(t.Context(), acme, "blocked-1", now.Add(-time.Minute))
	require.NoError(t, err)
	require.Equal(t, "acme", got.AccountID)
	got, err = db.GetNear(t.Context(), acme, "blocked-1", now.Add(-48*time.Hour))
	require.NoError(t, err)
	require.Equal(t, "acme", got.AccountID)
	_, err = db.GetNear(t.Context(), mustScope(t, "initech", "proj_prod"), "blocked-1",
		now.Add(-time.Minute))
	require.ErrorIs(t, err, store.ErrNotFound)

	_, err = db.Get(t.Context(), mustScope(t, "initech", "proj_prod"), "blocked-1")
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = db.Get(t.Context(), acme, "blocked-1' OR '1'='1")
	require.ErrorIs(t, err, store.ErrNotFound)
}
