package main

import (
	"bufio"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/export"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestExportFilterFromFlags(t *testing.T) {
	now := time.Date(2025, 4, 10, 12, 0, 0, 0, time.UTC)
	c := exportCmd{From: "2025-03-01", To: "2025-03-31", TZ: "UTC",
		Query: "outcome=blocked&severity=high&category=pii", Category: "jailbreak",
		Decision: []string{"deny"}}
	f, err := c.filter(now)
	require.NoError(t, err)
	require.Equal(t, time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC), f.From)
	require.Equal(t, time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC), f.To, "end of the last day")
	require.Equal(t, []string{"blocked"}, f.Outcomes)
	require.Equal(t, []string{"deny"}, f.Decisions)
	require.Equal(t, "high", f.MinSeverity)
	require.Equal(t, "jailbreak", f.Category, "a flag replaces the query's value")

	for _, q := range []string{"account_id=globex", "project=proj_staging", "range=24h",
		"from=2020-01-01", "outcome=nope"} {
		c := exportCmd{From: "2025-03-01", To: "2025-03-02", TZ: "UTC", Query: q}
		_, err := c.filter(now)
		require.Error(t, err, q)
	}
	c = exportCmd{From: "2025-03-01T00:00", To: "2025-03-01T06:00", TZ: "Europe/Berlin"}
	f, err = c.filter(now)
	require.NoError(t, err)
	require.Equal(t, time.Date(2025, 2, 28, 23, 0, 0, 0, time.UTC), f.From)
}

func TestExportAndVerifyCommands(t *testing.T) {
	addr := testenv.ClickHouse(t)
	db := testenv.Database(t, addr)
	st, err := store.Open(t.Context(), store.Config{Addr: addr, Database: db,
		Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	defer st.Close()
	g := gen.New(1, []gen.Tenant{{Account: "acme", Project: "proj_prod"},
		{Account: "globex", Project: "proj_prod"}}, nil)
	base := time.Now().UTC().Add(-2 * time.Hour)
	var n int
	var evs []*events.Event
	for i := range 120 {
		ev := g.Next()
		ev.OccurredAt = base.Add(time.Duration(i) * time.Second)
		if ev.AccountID == "acme" {
			n++
		}
		evs = append(evs, ev)
	}
	require.NoError(t, st.Insert(context.Background(), evs))

	dir := t.TempDir()
	require.NoError(t, (&exportKeyCmd{Dir: dir}).Run())
	out := filepath.Join(dir, "acme.ndjson")
	c := exportCmd{clickHouseFlags: clickHouseFlags{CHAddr: addr, CHDB: db},
		Account: "acme", Project: "proj_prod", TZ: "UTC",
		From:   base.Add(-time.Minute).Format(time.RFC3339),
		To:     time.Now().UTC().Format(time.RFC3339),
		Format: "ndjson", Out: out, SigningKey: filepath.Join(dir, export.SigningKeyFile),
		Actor: "cli:tester", Settle: time.Millisecond, MemLimit: 100 << 20}
	require.NoError(t, c.Run())

	f, err := os.Open(out)
	require.NoError(t, err)
	lines := 0
	for sc := bufio.NewScanner(f); sc.Scan(); lines++ {
		require.Contains(t, sc.Text(), `"account_id":"acme"`)
	}
	f.Close()
	require.Equal(t, n, lines)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		require.False(t, strings.HasSuffix(e.Name(), ".partial"), "no leftover temporary file")
	}

	v := verifyCmd{File: out, Manifest: out + ".manifest.json",
		PublicKey: filepath.Join(dir, export.PublicKeyFile)}
	require.NoError(t, v.Run())
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	b[10] ^= 1
	require.NoError(t, os.WriteFile(out, b, 0o600))
	require.ErrorIs(t, v.Run(), errVerify, "a changed file fails")
}
