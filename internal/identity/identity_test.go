package identity_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/identity"
)

// signer is a private key with its algorithm and kid.
type signer struct {
	alg  jwa.SignatureAlgorithm
	kid  string
	priv crypto.Signer
}

var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	ecKey    *ecdsa.PrivateKey
	edKey    ed25519.PrivateKey
)

func testKeys(t *testing.T) (rs, es, ed signer) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		rsaKey, err = rsa.GenerateKey(rand.Reader, 2048)
		require.NoError(t, err)
		ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		_, edKey, err = ed25519.GenerateKey(rand.Reader)
		require.NoError(t, err)
	})
	return signer{jwa.RS256(), "rsa-1", rsaKey},
		signer{jwa.ES256(), "ec-1", ecKey},
		signer{jwa.EdDSA(), "ed-1", edKey}
}

// jwksJSON returns a JWKS with the public keys of signers.
func jwksJSON(t *testing.T, signers ...signer) []byte {
	t.Helper()
	set := jwk.NewSet()
	for _, s := range signers {
		k, err := jwk.Import(s.priv.Public())
		require.NoError(t, err)
		require.NoError(t, k.Set(jwk.KeyIDKey, s.kid))
		require.NoError(t, set.AddKey(k))
	}
	b, err := json.Marshal(set)
	require.NoError(t, err)
	return b
}

func writeJWKS(t *testing.T, signers ...signer) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "jwks.json")
	require.NoError(t, os.WriteFile(p, jwksJSON(t, signers...), 0o644))
	return p
}

type claims map[string]any

// validClaims is a token for acme with two projects.
func validClaims() claims {
	now := time.Now()
	return claims{
		"iss":        "https://id.example.test",
		"aud":        []string{"observatory"},
		"sub":        "user-42",
		"exp":        now.Add(time.Hour).Unix(),
		"iat":        now.Unix(),
		"account_id": "acme",
		"project_id": []string{"proj_prod", "proj_staging"},
		"roles":      []string{"viewer", "proj_prod:analyst"},
		"labels":     map[string]string{"region": "eu"},
	}
}

func sign(t *testing.T, s signer, c claims) string {
	t.Helper()
	payload, err := json.Marshal(c)
	require.NoError(t, err)
	hdr := jws.NewHeaders()
	require.NoError(t, hdr.Set(jws.KeyIDKey, s.kid))
	require.NoError(t, hdr.Set(jws.TypeKey, "JWT"))
	out, err := jws.Sign(payload, jws.WithKey(s.alg, s.priv, jws.WithProtectedHeaders(hdr)))
	require.NoError(t, err)
	return string(out)
}

func newVerifier(t *testing.T, cfg identity.Config) *identity.Verifier {
	t.Helper()
	v, err := identity.NewVerifier(context.Background(), cfg)
	require.NoError(t, err)
	return v
}

func TestVerifyAcceptsEachAlgorithm(t *testing.T) {
	rs, es, ed := testKeys(t)
	v := newVerifier(t, identity.Config{
		JWKSFile: writeJWKS(t, rs, es, ed),
		Issuer:   "https://id.example.test",
		Audience: "observatory",
	})
	for _, s := range []signer{rs, es, ed} {
		t.Run(s.alg.String(), func(t *testing.T) {
			p, err := v.Verify(context.Background(), sign(t, s, validClaims()))
			require.NoError(t, err)
			require.Equal(t, "user-42", p.Subject)
			require.Equal(t, "acme", p.Account)
			require.Equal(t, map[string][]string{
				"proj_prod":    {"viewer", "analyst"},
				"proj_staging": {"viewer"},
			}, p.Roles)
			require.Equal(t, map[string]string{"region": "eu"}, p.Labels)
			require.Equal(t, []string{"proj_prod", "proj_staging"}, p.Projects())
		})
	}
}

// A token shaped like ZeroID's: RS256 or ES256, a spiffe subject, one
// project_id string, scopes and identity claims, and no roles.
func TestVerifyAcceptsZeroIDTokens(t *testing.T) {
	rs, es, _ := testKeys(t)
	jwks := writeJWKS(t, rs, es)
	now := time.Now()
	c := claims{
		"iss":           "https://auth.zeroid.dev",
		"sub":           "spiffe://zeroid.dev/acme/proj_prod/agent/support-bot",
		"aud":           []string{"https://auth.zeroid.dev"},
		"iat":           now.Unix(),
		"exp":           now.Add(time.Hour).Unix(),
		"jti":           "0c5e1f1e-5a4b-4d43-9a53-6d8a7f0b2f11",
		"account_id":    "acme",
		"project_id":    "proj_prod",
		"grant_type":    "client_credentials",
		"identity_type": "agent",
		"trust_level":   "verified_third_party",
		"scopes":        []string{"traces:read"},
		"act":           map[string]string{"sub": "user-7"},
	}
	for _, s := range []signer{rs, es} {
		v := newVerifier(t, identity.Config{JWKSFile: jwks, Issuer: "https://auth.zeroid.dev"})
		p, err := v.Verify(context.Background(), sign(t, s, c))
		require.NoError(t, err)
		require.Equal(t, "spiffe://zeroid.dev/acme/proj_prod/agent/support-bot", p.Subject)
		require.Equal(t, "acme", p.Account)
		require.Equal(t, map[string][]string{"proj_prod": {}}, p.Roles)

		v = newVerifier(t, identity.Config{JWKSFile: jwks, DefaultRoles: []string{"viewer"}})
		p, err = v.Verify(context.Background(), sign(t, s, c))
		require.NoError(t, err)
		require.Equal(t, map[string][]string{"proj_prod": {"viewer"}}, p.Roles)
	}
}

func TestVerifyRejects(t *testing.T) {
	rs, es, ed := testKeys(t)
	v := newVerifier(t, identity.Config{
		JWKSFile: writeJWKS(t, rs, es, ed),
		Issuer:   "https://id.example.test",
		Audience: "observatory",
		Leeway:   5 * time.Second,
	})
	_, otherEd, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)

	with := func(mod func(c claims)) claims {
		c := validClaims()
		mod(c)
		return c
	}
	valid := sign(t, ed, validClaims())
	parts := strings.Split(valid, ".")

	cases := map[string]string{
		"alg none": unsigned(t, map[string]any{"alg": "none", "typ": "JWT"}, validClaims()),
		"alg none with kid": unsigned(t, map[string]any{"alg": "none", "kid": ed.kid},
			validClaims()),
		"HS256 with RSA public key PEM as secret": hmacSigned(t, rs.kid,
			publicPEM(t, rs.priv.Public()), validClaims()),
		"HS256 with Ed25519 public key as secret": hmacSigned(t, ed.kid,
			[]byte(edKey.Public().(ed25519.PublicKey)), validClaims()),
		"HS256 with JWKS JSON as secret": hmacSigned(t, rs.kid, jwksJSON(t, rs), validClaims()),
		"wrong key, same kid":            sign(t, signer{jwa.EdDSA(), ed.kid, otherEd}, validClaims()),
		"wrong key, unknown kid":         sign(t, signer{jwa.EdDSA(), "ed-2", otherEd}, validClaims()),
		"RSA key of another kid":         sign(t, signer{jwa.RS256(), es.kid, rsaKey}, validClaims()),
		"tampered payload": parts[0] + "." + b64(t, with(func(c claims) {
			c["account_id"] = "globex"
		})) + "." + parts[2],
		"tampered header": b64(t, map[string]any{"alg": "EdDSA", "kid": "ed-1", "x": 1}) +
			"." + parts[1] + "." + parts[2],
		"signature stripped": parts[0] + "." + parts[1] + ".",
		"expired": sign(t, ed, with(func(c claims) {
			c["exp"] = time.Now().Add(-time.Minute).Unix()
		})),
		"not yet valid": sign(t, ed, with(func(c claims) {
			c["nbf"] = time.Now().Add(time.Minute).Unix()
		})),
		"no exp":             sign(t, ed, with(func(c claims) { delete(c, "exp") })),
		"wrong issuer":       sign(t, ed, with(func(c claims) { c["iss"] = "https://evil.test" })),
		"no issuer":          sign(t, ed, with(func(c claims) { delete(c, "iss") })),
		"wrong audience":     sign(t, ed, with(func(c claims) { c["aud"] = []string{"other"} })),
		"no audience":        sign(t, ed, with(func(c claims) { delete(c, "aud") })),
		"no sub":             sign(t, ed, with(func(c claims) { delete(c, "sub") })),
		"empty sub":          sign(t, ed, with(func(c claims) { c["sub"] = "" })),
		"no account":         sign(t, ed, with(func(c claims) { delete(c, "account_id") })),
		"account not text":   sign(t, ed, with(func(c claims) { c["account_id"] = 7 })),
		"no project":         sign(t, ed, with(func(c claims) { delete(c, "project_id") })),
		"empty projects":     sign(t, ed, with(func(c claims) { c["project_id"] = []string{} })),
		"project not text":   sign(t, ed, with(func(c claims) { c["project_id"] = []any{1} })),
		"role for ungranted": sign(t, ed, with(func(c claims) { c["roles"] = []string{"other:admin"} })),
		"roles not text":     sign(t, ed, with(func(c claims) { c["roles"] = []any{true} })),
		"labels not object":  sign(t, ed, with(func(c claims) { c["labels"] = "region=eu" })),
		"label value number": sign(t, ed, with(func(c claims) {
			c["labels"] = map[string]any{"n": 1}
		})),
		"not a JWT":  "hello",
		"empty":      "",
		"huge token": strings.Repeat("a", 20000),
	}
	for _, bad := range []string{"a.b", "*", ">", "a b", " acme", "acme\n", "..", "a/b", "",
		strings.Repeat("x", 65), "acme.>", "é"} {
		cases["account "+bad] = sign(t, ed, with(func(c claims) { c["account_id"] = bad }))
		cases["project "+bad] = sign(t, ed, with(func(c claims) {
			c["project_id"] = []string{"proj_prod", bad}
		}))
		cases["projects claim "+bad] = sign(t, ed, with(func(c claims) { c["projects"] = bad }))
		cases["role "+bad] = sign(t, ed, with(func(c claims) { c["roles"] = []string{bad} }))
		cases["scoped role project "+bad] = sign(t, ed, with(func(c claims) {
			c["roles"] = []string{bad + ":viewer"}
		}))
		cases["label key "+bad] = sign(t, ed, with(func(c claims) {
			c["labels"] = map[string]string{bad: "x"}
		}))
	}

	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			p, err := v.Verify(context.Background(), tok)
			require.ErrorIs(t, err, identity.ErrInvalidToken)
			require.Nil(t, p)
		})
	}

	t.Run("leeway accepts a token just expired", func(t *testing.T) {
		c := validClaims()
		c["exp"] = time.Now().Add(-2 * time.Second).Unix()
		_, err := v.Verify(context.Background(), sign(t, ed, c))
		require.NoError(t, err)
	})
}

// A key meant for encryption verifies nothing, and a JWKS holding a weak RSA
// key is refused as a whole.
func TestVerifyIgnoresUnfitKeys(t *testing.T) {
	_, es, _ := testKeys(t)
	ec, err := jwk.Import(es.priv.Public())
	require.NoError(t, err)
	require.NoError(t, ec.Set(jwk.KeyIDKey, es.kid))
	require.NoError(t, ec.Set(jwk.KeyUsageKey, "enc"))
	b, err := json.Marshal(map[string]any{"keys": []any{ec}})
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "jwks.json")
	require.NoError(t, os.WriteFile(path, b, 0o644))
	v := newVerifier(t, identity.Config{JWKSFile: path})
	_, err = v.Verify(context.Background(), sign(t, es, validClaims()))
	require.ErrorIs(t, err, identity.ErrInvalidToken)
	require.ErrorContains(t, err, "no trusted key")

	small, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	// jwx refuses to import a weak RSA key, so write its JWK by hand.
	weak := map[string]string{
		"kty": "RSA", "kid": "rsa-small", "e": "AQAB",
		"n": base64.RawURLEncoding.EncodeToString(small.N.Bytes()),
	}
	b, err = json.Marshal(map[string]any{"keys": []any{weak}})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b, 0o644))
	_, err = identity.NewVerifier(context.Background(), identity.Config{JWKSFile: path})
	require.ErrorContains(t, err, "too small")
}

func TestVerifyProjectsClaim(t *testing.T) {
	_, _, ed := testKeys(t)
	v := newVerifier(t, identity.Config{JWKSFile: writeJWKS(t, ed)})
	c := validClaims()
	c["project_id"] = "proj_prod"
	c["projects"] = []string{"proj_a", "proj_prod"}
	c["roles"] = "admin"
	delete(c, "labels")
	p, err := v.Verify(context.Background(), sign(t, ed, c))
	require.NoError(t, err)
	require.Equal(t, map[string][]string{"proj_prod": {"admin"}, "proj_a": {"admin"}}, p.Roles)
	require.Nil(t, p.Labels)

	// Custom claim names.
	v = newVerifier(t, identity.Config{JWKSFile: writeJWKS(t, ed),
		ClaimAccount: "tenant", ClaimProjects: "apps", ClaimRoles: "perms"})
	c = validClaims()
	c["tenant"], c["apps"], c["perms"] = "globex", "support-bot", []string{"auditor"}
	p, err = v.Verify(context.Background(), sign(t, ed, c))
	require.NoError(t, err)
	require.Equal(t, "globex", p.Account)
	require.Equal(t, map[string][]string{"support-bot": {"auditor"}}, p.Roles,
		"project_id is not read when another claim names the projects")
}

func TestVerifierConfig(t *testing.T) {
	ctx := context.Background()
	_, err := identity.NewVerifier(ctx, identity.Config{})
	require.Error(t, err)
	_, err = identity.NewVerifier(ctx, identity.Config{JWKSFile: "/nonexistent/jwks.json"})
	require.Error(t, err)
	_, _, ed := testKeys(t)
	_, err = identity.NewVerifier(ctx, identity.Config{JWKSFile: writeJWKS(t, ed),
		DefaultRoles: []string{"a.b"}})
	require.Error(t, err)
}

// Keys come from a URL through the cache; an unknown kid triggers a refresh
// so a rotated key is accepted without waiting for the next refresh.
func TestVerifyJWKSURL(t *testing.T) {
	rs, es, ed := testKeys(t)
	var mu sync.Mutex
	served := jwksJSON(t, rs)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(served)
	}))
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v := newVerifier(t, identity.Config{JWKSURL: srv.URL})
	_, err := v.Verify(ctx, sign(t, rs, validClaims()))
	require.NoError(t, err)

	mu.Lock()
	served = jwksJSON(t, rs, es)
	mu.Unlock()
	_, err = v.Verify(ctx, sign(t, es, validClaims()))
	require.NoError(t, err)

	// Refreshes on unknown kids are rate limited, and a key that is not
	// served is never trusted.
	_, err = v.Verify(ctx, sign(t, ed, validClaims()))
	require.ErrorIs(t, err, identity.ErrInvalidToken)
}

func TestVerifyJWKSFileRotation(t *testing.T) {
	rs, es, _ := testKeys(t)
	path := writeJWKS(t, rs)
	v := newVerifier(t, identity.Config{JWKSFile: path})
	_, err := v.Verify(context.Background(), sign(t, rs, validClaims()))
	require.NoError(t, err)

	require.NoError(t, os.WriteFile(path, jwksJSON(t, es), 0o644))
	_, err = v.Verify(context.Background(), sign(t, es, validClaims()))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := v.Verify(context.Background(), sign(t, rs, validClaims()))
		return err != nil
	}, 5*time.Second, 100*time.Millisecond, "a withdrawn key stops verifying")
}

func unsigned(t *testing.T, hdr map[string]any, c claims) string {
	return b64(t, hdr) + "." + b64(t, c) + "."
}

func hmacSigned(t *testing.T, kid string, secret []byte, c claims) string {
	t.Helper()
	payload, err := json.Marshal(c)
	require.NoError(t, err)
	hdr := jws.NewHeaders()
	require.NoError(t, hdr.Set(jws.KeyIDKey, kid))
	out, err := jws.Sign(payload, jws.WithKey(jwa.HS256(), secret, jws.WithProtectedHeaders(hdr)))
	require.NoError(t, err)
	return string(out)
}

func publicPEM(t *testing.T, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func b64(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return base64.RawURLEncoding.EncodeToString(b)
}
