package authz_test

import (
	"bytes"
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/authz"
)

// shipped is the policy tree the project ships for the demo tenants.
const shipped = "../../policies"

// copyTree copies the shipped tree into a temporary folder, then writes
// files (path relative to the tree → content) over it.
func copyTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(shipped, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(shipped, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	require.NoError(t, err)
	writeFiles(t, dst, files)
	return dst
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for rel, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
}

// syncBuffer is a log sink that tests can read while the engine writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func mustLoad(t *testing.T, dir string) (*authz.Engine, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	e, err := authz.Load(dir, slog.New(slog.NewJSONHandler(buf, nil)))
	require.NoError(t, err)
	return e, buf
}

func user(account string, roles map[string][]string) *authz.Principal {
	return &authz.Principal{
		Subject: "spiffe://example.test/" + account + "/user",
		Account: account,
		Roles:   roles,
	}
}

func allowed(t *testing.T, e *authz.Engine, p *authz.Principal, a authz.Action,
	res authz.Resource) bool {
	t.Helper()
	_, d, err := e.Authorize(context.Background(), p, a, res)
	if err != nil {
		require.ErrorIs(t, err, authz.ErrDenied)
		require.False(t, d.Allowed)
		return false
	}
	require.True(t, d.Allowed)
	return true
}

func trace(project string) authz.Resource {
	return authz.Resource{Kind: authz.KindTrace, ID: "trace-1", Project: project}
}
