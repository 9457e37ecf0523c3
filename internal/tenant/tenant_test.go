package tenant_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/tenant"
	"github.com/guardwatch/observatory/internal/tenant/tenanttest"
)

func TestShippedTiersMatchShippedPolicies(t *testing.T) {
	reg, err := tenant.OpenRegistry("../../deploy/tiers.yaml", "../../policies", nil)
	require.NoError(t, err)
	s := reg.Snapshot()
	require.Equal(t, []string{"custom", "enterprise", "free", "pro"}, s.Tiers.Names())

	tier, ok := s.Tier(tenant.Key{Account: "acme", Project: "proj_prod"})
	require.True(t, ok)
	require.Equal(t, "enterprise", tier.Name)
	tier, ok = s.Tier(tenant.Key{Account: "globex", Project: "proj_prod"})
	require.True(t, ok)
	require.Equal(t, "pro", tier.Name)
	require.Equal(t, 90*24*time.Hour, tier.Retention.D())

	tier, ok = s.Tier(tenant.Key{Account: "nobody", Project: "proj_prod"})
	require.False(t, ok, "a project without a folder is not provisioned")
	require.Equal(t, "free", tier.Name, "and gets the default tier")
}

func TestParseTiersRefusesMistakes(t *testing.T) {
	base := `
default: free
tiers:
  free:
    retention: 7d
    ingest: { events_per_second: 5, burst: 5 }
    query: { rows_per_page: 100, max_range: 7d, concurrent: 1 }
`
	_, err := tenant.ParseTiers([]byte(base))
	require.NoError(t, err)

	for name, tc := range map[string]struct{ from, to, want string }{
		"unknown field":     {"burst: 5", "burst: 5, brust: 6", "brust"},
		"days with a unit":  {"retention: 7d", "retention: 7 days", "want 30d"},
		"short retention":   {"retention: 7d", "retention: 10m", "retention must be"},
		"no ingest rate":    {"events_per_second: 5", "events_per_second: 0", "events_per_second"},
		"default unlisted":  {"default: free", "default: gold", `default tier "gold"`},
		"tier id":           {"  free:", "  fr.ee:", "name must be"},
		"foreign baseline":  {"    retention: 7d", "    baseline: tiers/pro\n    retention: 7d", "baseline must be tiers/free"},
		"too many per page": {"rows_per_page: 100", "rows_per_page: 100000", "rows_per_page"},
	} {
		t.Run(name, func(t *testing.T) {
			doc := strings.Replace(base, tc.from, tc.to, 1)
			if name == "default unlisted" {
				doc = strings.Replace(doc, "default: free", tc.to, 1)
			}
			_, err := tenant.ParseTiers([]byte(doc))
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"30d": 30 * 24 * time.Hour, "36h": 36 * time.Hour, "90m": 90 * time.Minute,
	} {
		d, err := tenant.ParseDuration(in)
		require.NoError(t, err, in)
		require.Equal(t, want, d.D(), in)
	}
	require.Equal(t, "30d", tenant.Duration(30*24*time.Hour).String())
	require.Equal(t, "36h0m0s", tenant.Duration(36*time.Hour).String())
	for _, bad := range []string{"d", "-3d", "1.5d", "soon", ""} {
		_, err := tenant.ParseDuration(bad)
		require.Error(t, err, bad)
	}
}

func TestTierChangeTakesEffectWithoutRestart(t *testing.T) {
	k := tenant.Key{Account: "acme", Project: "proj_prod"}
	tiersFile, root := tenanttest.Tree(t, tenanttest.Tiers, map[tenant.Key]string{k: "free"})
	reg, err := tenant.OpenRegistry(tiersFile, root, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	var changes atomic.Int32
	reg.OnChange(func(old, cur *tenant.Snapshot) { changes.Add(1) })
	go reg.Watch(t.Context(), 20*time.Millisecond)

	tier, _ := reg.Snapshot().Tier(k)
	require.Equal(t, 7*24*time.Hour, tier.Retention.D())

	// The project moves to pro: its retention and quota follow.
	tenanttest.SetTier(t, root, k, "pro")
	require.Eventually(t, func() bool {
		tier, _ := reg.Snapshot().Tier(k)
		return tier.Name == "pro"
	}, 5*time.Second, 10*time.Millisecond)
	tier, _ = reg.Snapshot().Tier(k)
	require.Equal(t, 90*24*time.Hour, tier.Retention.D())
	require.Equal(t, 1000.0, tier.Ingest.EventsPerSecond)
	require.Positive(t, changes.Load())

	// A tier's own limits change in the tiers file.
	b, err := os.ReadFile(tiersFile)
	require.NoError(t, err)
	b = []byte(strings.Replace(string(b), "retention: 90d", "retention: 120d", 1))
	require.NoError(t, os.WriteFile(tiersFile, b, 0o644))
	require.Eventually(t, func() bool {
		tier, _ := reg.Snapshot().Tier(k)
		return tier.Retention.D() == 120*24*time.Hour
	}, 5*time.Second, 10*time.Millisecond)
}

func TestBrokenReloadKeepsThePreviousTiers(t *testing.T) {
	k := tenant.Key{Account: "acme", Project: "p"}
	tiersFile, root := tenanttest.Tree(t, tenanttest.Tiers, map[tenant.Key]string{k: "pro"})
	reg, err := tenant.OpenRegistry(tiersFile, root, slog.New(slog.DiscardHandler))
	require.NoError(t, err)

	tenanttest.SetTier(t, root, k, "platinum") // not a tier
	require.ErrorContains(t, reg.Reload(), `tier "platinum"`)
	tier, _ := reg.Snapshot().Tier(k)
	require.Equal(t, "pro", tier.Name)

	require.NoError(t, os.WriteFile(tiersFile, []byte("tiers: ["), 0o644))
	require.Error(t, reg.Reload())
	tier, _ = reg.Snapshot().Tier(k)
	require.Equal(t, "pro", tier.Name)
}

func TestProvisionWritesAFolderThePolicyLoaderAccepts(t *testing.T) {
	root := copyPolicies(t)
	tiers, err := tenant.LoadTiers("../../deploy/tiers.yaml")
	require.NoError(t, err)

	res, err := tenant.Provision(root, tiers, "umbrella", "proj_prod", "custom")
	require.NoError(t, err)
	require.True(t, res.Created)

	eng, err := authz.Load(root, slog.New(slog.DiscardHandler))
	require.NoError(t, err, "the policy loader reads the provisioned project")
	tier, ok := eng.Tier("umbrella", "proj_prod")
	require.True(t, ok)
	require.Equal(t, "custom", tier)

	// Again on the same tier: nothing changes.
	res, err = tenant.Provision(root, tiers, "umbrella", "proj_prod", "custom")
	require.NoError(t, err)
	require.False(t, res.Created)
	require.Empty(t, res.PreviousTier)

	// A tier change keeps the region the project already had.
	res, err = tenant.Provision(root, tiers, "globex", "support-bot", "enterprise")
	require.NoError(t, err)
	require.Equal(t, "pro", res.PreviousTier)
	b, err := os.ReadFile(filepath.Join(root, "projects/globex/support-bot/project.json"))
	require.NoError(t, err)
	require.JSONEq(t, `{"tier":"enterprise","region":"eu"}`, string(b))
	require.NoError(t, eng.Reload())
	tier, _ = eng.Tier("globex", "support-bot")
	require.Equal(t, "enterprise", tier)
}

func TestProvisionRefusesBadInput(t *testing.T) {
	root := t.TempDir()
	tiers, err := tenant.LoadTiers("../../deploy/tiers.yaml")
	require.NoError(t, err)
	for _, tc := range []struct{ account, project, tier, want string }{
		{"acme", "p", "gold", "unknown tier"},
		{"ac.me", "p", "pro", "invalid id"},
		{"acme", "../p", "pro", "invalid id"},
		{"acme", "*", "pro", "invalid id"},
		{"", "p", "pro", "invalid id"},
		{"acme", strings.Repeat("p", 65), "pro", "invalid id"},
	} {
		_, err := tenant.Provision(root, tiers, tc.account, tc.project, tc.tier)
		require.ErrorContains(t, err, tc.want, "%+v", tc)
	}
	entries, err := os.ReadDir(root)
	require.NoError(t, err)
	require.Empty(t, entries, "nothing written")
}

// copyPolicies copies the shipped policy tree into a temporary folder.
func copyPolicies(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	require.NoError(t, os.CopyFS(dst, os.DirFS("../../policies")))
	return dst
}
