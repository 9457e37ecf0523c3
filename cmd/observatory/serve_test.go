package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A tiers file that does not load stops start-up with an error naming the
// flag and its variable, before anything else is opened.
func TestServeRefusesABadTiersFile(t *testing.T) {
	dir := t.TempDir()
	policies := filepath.Join("..", "..", "policies")
	bad := filepath.Join(dir, "tiers.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("default: gold\ntiers: {}\n"), 0o644))
	for name, file := range map[string]string{"invalid": bad,
		"missing": filepath.Join(dir, "none.yaml")} {
		c := &serveCmd{Tiers: file, Policies: policies, Reload: 10 * time.Second,
			DevKeyDir: filepath.Join(dir, "keys")}
		err := run(t.Context(), c, slog.New(slog.DiscardHandler))
		var ce *configError
		require.ErrorAs(t, err, &ce, name)
		require.Contains(t, err.Error(), "--tiers (GUARD_TIERS)", name)
		require.NoDirExists(t, c.DevKeyDir, "%s: nothing was set up", name)
	}

	c := &serveCmd{Tiers: filepath.Join("..", "..", "deploy", "tiers.yaml"), Policies: policies,
		Reload: time.Millisecond}
	err := run(t.Context(), c, slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "--tenants-reload")
}
