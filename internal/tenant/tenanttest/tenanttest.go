// Package tenanttest writes tiers files and policy folders for tests.
package tenanttest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/guardwatch/observatory/internal/tenant"
)

// Tiers is a tiers file with three small tiers: free (7 days, 50 events/s),
// pro (90 days, 1,000 events/s) and enterprise (365 days, 20,000 events/s).
const Tiers = `
default: free
tiers:
  free:
    retention: 7d
    ingest: { events_per_second: 50, burst: 50 }
    query: { rows_per_page: 100, max_range: 7d, concurrent: 2 }
    export: { max_rows: 0 }
  pro:
    retention: 90d
    ingest: { events_per_second: 1000, burst: 2000 }
    query: { rows_per_page: 500, max_range: 90d, concurrent: 4 }
    export: { max_rows: 1000000, max_range: 31d, concurrent: 1, per_day: 10 }
  enterprise:
    retention: 365d
    ingest: { events_per_second: 20000, burst: 40000 }
    query: { rows_per_page: 1000, max_range: 365d, concurrent: 8 }
    export: { max_rows: 10000000, max_range: 365d, concurrent: 2, per_day: 50 }
`

// Tree writes tiersYAML and a policy folder holding a baseline folder per
// tier and a project.json for each project, and returns the tiers file and
// the policy root.
func Tree(tb testing.TB, tiersYAML string, projects map[tenant.Key]string) (string, string) {
	tb.Helper()
	dir := tb.TempDir()
	tiersFile := filepath.Join(dir, "tiers.yaml")
	root := filepath.Join(dir, "policies")
	if err := os.WriteFile(tiersFile, []byte(tiersYAML), 0o644); err != nil {
		tb.Fatal(err)
	}
	t, err := tenant.ParseTiers([]byte(tiersYAML))
	if err != nil {
		tb.Fatalf("tiers: %v", err)
	}
	for _, name := range t.Names() {
		d := filepath.Join(root, "tiers", name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "baseline.cedar"), nil, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	for k, tier := range projects {
		SetTier(tb, root, k, tier)
	}
	return tiersFile, root
}

// SetTier writes the project.json of k with tier, creating its folder.
func SetTier(tb testing.TB, root string, k tenant.Key, tier string) {
	tb.Helper()
	d := filepath.Join(root, "projects", k.Account, k.Project)
	if err := os.MkdirAll(d, 0o755); err != nil {
		tb.Fatal(err)
	}
	b := []byte(`{"tier": "` + tier + `"}` + "\n")
	if err := os.WriteFile(filepath.Join(d, "project.json"), b, 0o644); err != nil {
		tb.Fatal(err)
	}
}

// Remove deletes the policy folder of k.
func Remove(tb testing.TB, root string, k tenant.Key) {
	tb.Helper()
	if err := os.RemoveAll(filepath.Join(root, "projects", k.Account, k.Project)); err != nil {
		tb.Fatal(err)
	}
}
