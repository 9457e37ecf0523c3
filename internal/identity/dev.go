package identity

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/guardwatch/observatory/internal/events"
)

// Files GenerateDevKey writes into its folder.
const (
	DevKeyFile  = "dev-signing-key.pem" // Ed25519 private key, PKCS #8, mode 0600
	DevJWKSFile = "jwks.json"           // the public key, for Config.JWKSFile
)

// Defaults of MintClaims.
const (
	DevIssuer  = "observatory-dev"
	DevSubject = "dev-user"
	DevTTL     = time.Hour
)

// GenerateDevKey makes a local signing key for development: an Ed25519
// private key and a JWKS holding its public key, both in dir. When the key
// already exists it is kept and the JWKS is rewritten from it only when it
// differs, so running it twice changes nothing and minted tokens stay valid.
func GenerateDevKey(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create dev key folder: %w", err)
	}
	keyPath := filepath.Join(dir, DevKeyFile)
	priv, err := readDevKey(dir)
	if errors.Is(err, os.ErrNotExist) {
		if _, priv, err = ed25519.GenerateKey(rand.Reader); err != nil {
			return fmt.Errorf("generate dev key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return fmt.Errorf("encode dev key: %w", err)
		}
		block := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		if err := writeFileAtomic(keyPath, block, 0o600); err != nil {
			return fmt.Errorf("write dev key: %w", err)
		}
	} else if err != nil {
		return err
	}

	pub, err := publicJWK(priv)
	if err != nil {
		return err
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return fmt.Errorf("build dev JWKS: %w", err)
	}
	b, err := json.MarshalIndent(set, "", "  ")
	if err != nil {
		return fmt.Errorf("encode dev JWKS: %w", err)
	}
	b = append(b, '\n')
	jwksPath := filepath.Join(dir, DevJWKSFile)
	if old, err := os.ReadFile(jwksPath); err == nil && bytes.Equal(old, b) {
		return nil
	}
	if err := writeFileAtomic(jwksPath, b, 0o644); err != nil {
		return fmt.Errorf("write dev JWKS: %w", err)
	}
	return nil
}

// MintClaims are the claims of a dev token.
type MintClaims struct {
	Subject  string            // default DevSubject
	Account  string            // required
	Projects []string          // at least one
	Roles    []string          // "<role>" or "<project>:<role>"
	Labels   map[string]string // optional
	Issuer   string            // default DevIssuer
	Audience string            // optional
	TTL      time.Duration     // default DevTTL
	Now      time.Time         // issue time; default time.Now()
}

// Mint signs a dev token with the key GenerateDevKey wrote into keyDir.
// Its kid matches the JWKS there, so a Verifier reading that JWKS accepts
// it. Ids are checked here too, so a bad token fails at minting.
func Mint(keyDir string, c MintClaims) (string, error) {
	if c.Subject == "" {
		c.Subject = DevSubject
	}
	if c.Issuer == "" {
		c.Issuer = DevIssuer
	}
	if c.TTL <= 0 {
		c.TTL = DevTTL
	}
	if c.Now.IsZero() {
		c.Now = time.Now()
	}
	if err := events.CheckID("account_id", c.Account); err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	if len(c.Projects) == 0 {
		return "", errors.New("mint token: at least one project is required")
	}
	for _, p := range c.Projects {
		if err := events.CheckID("project_id", p); err != nil {
			return "", fmt.Errorf("mint token: %w", err)
		}
	}

	priv, err := readDevKey(keyDir)
	if err != nil {
		return "", err
	}
	key, err := jwk.Import(priv)
	if err != nil {
		return "", fmt.Errorf("mint token: import key: %w", err)
	}
	kid, err := keyID(priv.Public())
	if err != nil {
		return "", err
	}

	b := jwt.NewBuilder().
		Issuer(c.Issuer).
		Subject(c.Subject).
		IssuedAt(c.Now).
		NotBefore(c.Now).
		Expiration(c.Now.Add(c.TTL)).
		Claim(DefaultClaimAccount, c.Account).
		Claim(DefaultClaimProjects, slices.Clone(c.Projects))
	if c.Audience != "" {
		b = b.Audience([]string{c.Audience})
	}
	if len(c.Roles) > 0 {
		b = b.Claim(DefaultClaimRoles, slices.Clone(c.Roles))
	}
	if len(c.Labels) > 0 {
		b = b.Claim(DefaultClaimLabels, c.Labels)
	}
	tok, err := b.Build()
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.KeyIDKey, kid); err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	if err := hdr.Set(jws.TypeKey, "JWT"); err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.EdDSA(), key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("mint token: sign: %w", err)
	}
	return string(signed), nil
}

// readDevKey reads the Ed25519 private key of a dev key folder. A missing
// key is an error wrapping os.ErrNotExist.
func readDevKey(dir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, DevKeyFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read dev key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("read dev key %s: no PKCS #8 PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read dev key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("read dev key %s: not an Ed25519 key", path)
	}
	return priv, nil
}

// publicJWK returns the public JWK of a dev key with kid, alg and use set.
func publicJWK(priv ed25519.PrivateKey) (jwk.Key, error) {
	pub, err := jwk.Import(priv.Public())
	if err != nil {
		return nil, fmt.Errorf("import dev public key: %w", err)
	}
	kid, err := keyID(priv.Public())
	if err != nil {
		return nil, err
	}
	for name, v := range map[string]any{
		jwk.KeyIDKey: kid, jwk.AlgorithmKey: jwa.EdDSA(), jwk.KeyUsageKey: "sig",
	} {
		if err := pub.Set(name, v); err != nil {
			return nil, fmt.Errorf("set dev key %s: %w", name, err)
		}
	}
	return pub, nil
}

// keyID is the RFC 7638 SHA-256 thumbprint of a public key, so the same key
// always gets the same kid.
func keyID(pub crypto.PublicKey) (string, error) {
	k, err := jwk.Import(pub)
	if err != nil {
		return "", fmt.Errorf("import key for kid: %w", err)
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("key thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// writeFileAtomic writes through a temporary file and a rename, so a
// watcher or a concurrent reader never sees half a key.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
