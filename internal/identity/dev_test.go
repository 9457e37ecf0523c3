package identity_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/identity"
)

func TestDevKeyAndMint(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, identity.GenerateDevKey(dir))
	key1, err := os.ReadFile(filepath.Join(dir, identity.DevKeyFile))
	require.NoError(t, err)
	jwks1, err := os.ReadFile(filepath.Join(dir, identity.DevJWKSFile))
	require.NoError(t, err)
	fi, err := os.Stat(filepath.Join(dir, identity.DevKeyFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	// Idempotent: the key is reused and the JWKS left as it was.
	require.NoError(t, identity.GenerateDevKey(dir))
	key2, _ := os.ReadFile(filepath.Join(dir, identity.DevKeyFile))
	jwks2, _ := os.ReadFile(filepath.Join(dir, identity.DevJWKSFile))
	require.Equal(t, key1, key2)
	require.Equal(t, jwks1, jwks2)

	tok, err := identity.Mint(dir, identity.MintClaims{
		Subject:  "alice",
		Account:  "globex",
		Projects: []string{"proj_prod", "support-bot"},
		Roles:    []string{"viewer", "support-bot:analyst"},
		Labels:   map[string]string{"region": "eu"},
		Audience: "observatory",
		TTL:      time.Minute,
	})
	require.NoError(t, err)

	v, err := identity.NewVerifier(context.Background(), identity.Config{
		JWKSFile: filepath.Join(dir, identity.DevJWKSFile),
		Issuer:   identity.DevIssuer,
		Audience: "observatory",
	})
	require.NoError(t, err)
	p, err := v.Verify(context.Background(), tok)
	require.NoError(t, err)
	require.Equal(t, "alice", p.Subject)
	require.Equal(t, "globex", p.Account)
	require.Equal(t, map[string][]string{
		"proj_prod": {"viewer"}, "support-bot": {"viewer", "analyst"},
	}, p.Roles)
	require.Equal(t, map[string]string{"region": "eu"}, p.Labels)

	expired, err := identity.Mint(dir, identity.MintClaims{
		Account: "globex", Projects: []string{"proj_prod"},
		Now: time.Now().Add(-2 * time.Hour), TTL: time.Hour,
	})
	require.NoError(t, err)
	_, err = v.Verify(context.Background(), expired)
	require.ErrorIs(t, err, identity.ErrInvalidToken)
}

func TestMintRejectsBadIDs(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, identity.GenerateDevKey(dir))
	for _, c := range []identity.MintClaims{
		{Account: "a.b", Projects: []string{"p"}},
		{Account: "acme", Projects: []string{"*"}},
		{Account: "acme"},
		{Account: "", Projects: []string{"p"}},
	} {
		_, err := identity.Mint(dir, c)
		require.Error(t, err, "%+v", c)
	}
	_, err := identity.Mint(t.TempDir(), identity.MintClaims{Account: "a", Projects: []string{"p"}})
	require.ErrorIs(t, err, os.ErrNotExist)
}
