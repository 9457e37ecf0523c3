package retention_test

import (
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/retention"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/tenant"
	"github.com/guardwatch/observatory/internal/tenant/tenanttest"
	"github.com/guardwatch/observatory/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var (
	acme    = tenant.Key{Account: "acme", Project: "proj_prod"}   // free: 7 days
	globex  = tenant.Key{Account: "globex", Project: "proj_prod"} // pro: 90 days
	initech = tenant.Key{Account: "initech", Project: "app"}      // enterprise: 365 days
	ghost   = tenant.Key{Account: "ghost", Project: "proj_prod"}  // no folder: default, free
)

// ages at which each project gets rows; none lies within a day of a
// retention limit, so the expected survivors do not depend on the hour.
var ages = []int{0, 1, 6, 8, 20, 40, 100, 200, 400, 500}

const perAge = 3

type env struct {
	db   *store.Store
	reg  *tenant.Registry
	root string
	now  time.Time
	ids  map[tenant.Key]map[string]int // event id -> age in days
}

func newEnv(t *testing.T) *env {
	t.Helper()
	addr := testenv.ClickHouse(t)
	log := slog.New(slog.DiscardHandler)
	db, err := store.Open(t.Context(), store.Config{Addr: addr,
		Database: testenv.Database(t, addr), Logger: log})
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })

	tiersFile, root := tenanttest.Tree(t, tenanttest.Tiers, map[tenant.Key]string{
		acme: "free", globex: "pro", initech: "enterprise"})
	reg, err := tenant.OpenRegistry(tiersFile, root, log)
	require.NoError(t, err)

	e := &env{db: db, reg: reg, root: root, now: time.Now().UTC(),
		ids: map[tenant.Key]map[string]int{}}
	for _, k := range []tenant.Key{acme, globex, initech, ghost} {
		e.insert(t, k, ages...)
	}
	return e
}

// insert stores perAge rows of k at each age (days before now). The
// decoder would refuse events this old; Insert does not check times.
func (e *env) insert(t *testing.T, k tenant.Key, days ...int) {
	t.Helper()
	g := gen.New(uint64(len(e.ids[k])+1), []gen.Tenant{{Account: k.Account,
		Project: k.Project}}, nil)
	if e.ids[k] == nil {
		e.ids[k] = map[string]int{}
	}
	var evs []*events.Event
	for _, d := range days {
		for i := range perAge {
			ev := g.Next()
			ev.OccurredAt = e.now.Add(-time.Duration(d)*24*time.Hour -
				time.Duration(i)*time.Minute)
			e.ids[k][ev.EventID] = d
			evs = append(evs, ev)
		}
	}
	require.NoError(t, e.db.Insert(t.Context(), evs))
}

// left returns the ages of the rows of k still stored.
func (e *env) left(t *testing.T, k tenant.Key) []int {
	t.Helper()
	rows, err := e.db.Conn().Query(t.Context(), "SELECT event_id FROM "+e.db.Database()+
		".decisions WHERE account_id = ? AND project_id = ?", k.Account, k.Project)
	require.NoError(t, err)
	defer rows.Close()
	var out []int
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		age, ok := e.ids[k][id]
		require.True(t, ok, "unknown row %s", id)
		out = append(out, age)
	}
	sort.Ints(out)
	return out
}

// expect lists perAge copies of each age.
func expect(days ...int) []int {
	var out []int
	for _, d := range days {
		for range perAge {
			out = append(out, d)
		}
	}
	return out
}

func (e *env) job(reg prometheus.Registerer, dry bool) *retention.Job {
	return retention.New(e.db, e.reg, retention.Config{DryRun: dry,
		Now: func() time.Time { return e.now }}, reg, slog.New(slog.DiscardHandler))
}

func byProject(r retention.Report) map[tenant.Key]retention.ProjectReport {
	out := map[tenant.Key]retention.ProjectReport{}
	for _, p := range r.Projects {
		out[tenant.Key{Account: p.Account, Project: p.Project}] = p
	}
	return out
}

func TestRetentionRemovesExactlyWhatIsPastEachTiersLimit(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()

	// A dry run reports and removes nothing.
	dry, err := e.job(nil, true).Run(ctx)
	require.NoError(t, err)
	require.True(t, dry.DryRun)
	require.Equal(t, expect(ages...), e.left(t, acme))

	reg := prometheus.NewRegistry()
	rep, err := e.job(reg, false).Run(ctx)
	require.NoError(t, err)
	require.Equal(t, byProject(dry), byProject(rep), "the dry run said what the run did")

	require.Equal(t, expect(0, 1, 6), e.left(t, acme))
	require.Equal(t, expect(0, 1, 6, 8, 20, 40), e.left(t, globex),
		"the same project id in another account keeps its own tier")
	require.Equal(t, expect(0, 1, 6, 8, 20, 40, 100, 200), e.left(t, initech))
	require.Equal(t, expect(0, 1, 6), e.left(t, ghost),
		"a project without a folder gets the default tier")

	got := byProject(rep)
	for k, removed := range map[tenant.Key]int{acme: 7, globex: 4, initech: 2, ghost: 7} {
		p := got[k]
		require.Equal(t, uint64(removed*perAge), p.Rows(), k.String())
		require.Positive(t, p.Partitions, "%s: old months are dropped whole", k)
		require.Equal(t, float64(removed*perAge),
			metric(t, reg, "guard_retention_rows_removed_total", k), k.String())
	}
	require.False(t, got[ghost].Provisioned)
	require.Equal(t, "free", got[ghost].Tier)
	rows, parts := rep.Totals()
	require.Equal(t, uint64(20*perAge), rows)
	require.Positive(t, parts)

	// Nothing is left to remove.
	again, err := e.job(nil, false).Run(ctx)
	require.NoError(t, err)
	require.Empty(t, again.Projects)
}

func TestRetentionFollowsATierChange(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	_, err := e.job(nil, false).Run(ctx)
	require.NoError(t, err)
	require.Equal(t, expect(0, 1, 6, 8, 20, 40), e.left(t, globex))

	// globex/proj_prod moves from pro to free; acme/proj_prod, the same
	// project id in another account, from free to pro.
	tenanttest.SetTier(t, e.root, globex, "free")
	tenanttest.SetTier(t, e.root, acme, "pro")
	require.NoError(t, e.reg.Reload())
	e.insert(t, acme, 20, 40)

	rep, err := e.job(nil, false).Run(ctx)
	require.NoError(t, err)
	require.Equal(t, expect(0, 1, 6), e.left(t, globex))
	require.Equal(t, expect(0, 1, 6, 20, 40), e.left(t, acme))
	got := byProject(rep)
	require.Equal(t, uint64(3*perAge), got[globex].Rows())
	require.Equal(t, "free", got[globex].Tier)
	_, ok := got[acme]
	require.False(t, ok, "nothing of acme is past the pro tier's limit")
}

func TestRetentionMutationTouchesNoOtherTenant(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	// Rows of everybody else in the month that straddles acme's cutoff.
	e.insert(t, globex, 7, 9)
	e.insert(t, initech, 7, 9)

	before := map[tenant.Key]int{}
	for _, k := range []tenant.Key{globex, initech} {
		before[k] = len(e.left(t, k))
	}
	sc, err := store.NewScope(acme.Account, acme.Project)
	require.NoError(t, err)
	require.NoError(t, e.db.DeleteBefore(ctx, sc, e.now.Add(-7*24*time.Hour)))
	require.Equal(t, expect(0, 1, 6), e.left(t, acme))
	for k, n := range before {
		require.Len(t, e.left(t, k), n, k.String())
	}
}

// metric returns the value of the counter of k in the named family.
func metric(t *testing.T, reg *prometheus.Registry, name string, k tenant.Key) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["account_id"] == k.Account && labels["project_id"] == k.Project {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s for %s", name, k)
	return 0
}
