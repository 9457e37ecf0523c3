package export_test

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/export"
)

func TestVerify(t *testing.T) {
	st := openStore(t)
	seed(t, st, 30, acme)
	dir := t.TempDir()
	require.NoError(t, export.GenerateKey(dir))
	key, err := export.LoadSigningKey(filepath.Join(dir, export.SigningKeyFile))
	require.NoError(t, err)
	pub, err := export.LoadPublicKey(filepath.Join(dir, export.PublicKeyFile))
	require.NoError(t, err)
	e := newExporter(t, st, func(c *export.Config) { c.SigningKey = key })
	require.Equal(t, pub, e.PublicKey())

	file, res := run(t, e, export.Request{Scope: mustScope(t, "acme", "proj_prod"),
		Filter: parseFilter(t, "range=24h"), Format: export.CSV, Gzip: true})
	m, err := export.Verify(bytes.NewReader(file), res.Signed, pub)
	require.NoError(t, err)
	require.Equal(t, res.Manifest, *m)
	require.EqualValues(t, 30, m.Rows)
	require.Equal(t, export.KeyID(pub), m.KeyID)

	t.Run("a changed byte", func(t *testing.T) {
		bad := bytes.Clone(file)
		bad[len(bad)/2] ^= 1
		_, err := export.Verify(bytes.NewReader(bad), res.Signed, pub)
		require.ErrorIs(t, err, export.ErrFileChanged)
	})
	t.Run("a byte more or less", func(t *testing.T) {
		_, err := export.Verify(bytes.NewReader(append(bytes.Clone(file), '\n')), res.Signed, pub)
		require.ErrorIs(t, err, export.ErrFileChanged)
		_, err = export.Verify(bytes.NewReader(file[:len(file)-1]), res.Signed, pub)
		require.ErrorIs(t, err, export.ErrFileChanged)
	})
	t.Run("another file with its own manifest's hash", func(t *testing.T) {
		other, _ := run(t, e, export.Request{Scope: mustScope(t, "acme", "proj_prod"),
			Filter: parseFilter(t, "range=24h&outcome=blocked"), Format: export.CSV})
		_, err := export.Verify(bytes.NewReader(other), res.Signed, pub)
		require.ErrorIs(t, err, export.ErrFileChanged)
	})

	edits := map[string]func(string) string{
		"rows": func(s string) string {
			return strings.Replace(s, `"rows": 30`, `"rows": 29`, 1)
		},
		"sha256 of another file": func(s string) string {
			return strings.Replace(s, res.Manifest.SHA256, strings.Repeat("0", 64), 1)
		},
		"account": func(s string) string {
			return strings.Replace(s, `"account_id": "acme"`, `"account_id": "globex"`, 1)
		},
		"range": func(s string) string {
			return strings.Replace(s, res.Manifest.Range.From, "2000-01-01T00:00:00.000Z", 1)
		},
		"exporter": func(s string) string {
			return strings.Replace(s, `"exported_by": "tester"`, `"exported_by": "someone"`, 1)
		},
	}
	for name, edit := range edits {
		t.Run("manifest "+name+" changed", func(t *testing.T) {
			bad := edit(string(res.Signed))
			require.NotEqual(t, string(res.Signed), bad)
			_, err := export.Verify(bytes.NewReader(file), []byte(bad), pub)
			require.ErrorIs(t, err, export.ErrSignature)
		})
	}
	t.Run("manifest with a member added", func(t *testing.T) {
		bad := strings.Replace(string(res.Signed), "{", `{"note": "x",`, 1)
		_, err := export.Verify(bytes.NewReader(file), []byte(bad), pub)
		require.ErrorIs(t, err, export.ErrManifest)
	})
	t.Run("manifest with a repeated member", func(t *testing.T) {
		bad := strings.Replace(string(res.Signed), "{", `{"rows": 1,`, 1)
		_, err := export.Verify(bytes.NewReader(file), []byte(bad), pub)
		require.ErrorIs(t, err, export.ErrManifest)
	})
	t.Run("manifest signed by another key", func(t *testing.T) {
		m2 := res.Manifest
		m2.Rows = 29
		resigned, err := m2.Sign(newKey(t))
		require.NoError(t, err)
		_, err = export.Verify(bytes.NewReader(file), resigned, pub)
		require.ErrorIs(t, err, export.ErrSignature)
	})
	t.Run("another key's public key", func(t *testing.T) {
		other := newKey(t).Public().(ed25519.PublicKey)
		_, err := export.Verify(bytes.NewReader(file), res.Signed, other)
		require.ErrorIs(t, err, export.ErrSignature)
	})
}

func TestGenerateKeyKeepsAnExistingKey(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, export.GenerateKey(dir))
	first, err := os.ReadFile(filepath.Join(dir, export.SigningKeyFile))
	require.NoError(t, err)
	info, err := os.Stat(filepath.Join(dir, export.SigningKeyFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	require.NoError(t, export.GenerateKey(dir))
	second, err := os.ReadFile(filepath.Join(dir, export.SigningKeyFile))
	require.NoError(t, err)
	require.Equal(t, first, second)

	_, err = export.LoadPublicKey(filepath.Join(dir, export.SigningKeyFile))
	require.Error(t, err, "a private key is not a public key")
	_, err = export.LoadSigningKey(filepath.Join(dir, export.PublicKeyFile))
	require.Error(t, err)
}
