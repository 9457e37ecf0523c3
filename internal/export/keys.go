package export

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Files GenerateKey writes into its folder.
const (
	SigningKeyFile = "export-signing-key.pem" // Ed25519 private key, PKCS #8, mode 0600
	PublicKeyFile  = "export-public-key.pem"  // its public key, PKIX, for verifiers
)

// GenerateKey makes a manifest signing key in dir: an Ed25519 private key
// and its public key, both PEM. An existing private key is kept and its
// public key file rewritten, so running it twice changes nothing.
func GenerateKey(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create key folder: %w", err)
	}
	keyPath := filepath.Join(dir, SigningKeyFile)
	priv, err := LoadSigningKey(keyPath)
	if errors.Is(err, os.ErrNotExist) {
		if _, priv, err = ed25519.GenerateKey(rand.Reader); err != nil {
			return fmt.Errorf("generate signing key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return fmt.Errorf("encode signing key: %w", err)
		}
		b := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		if err := writeNew(keyPath, b, 0o600); err != nil {
			return fmt.Errorf("write signing key: %w", err)
		}
	} else if err != nil {
		return err
	}
	pub, err := PublicKeyPEM(priv.Public().(ed25519.PublicKey))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, PublicKeyFile), pub, 0o644); err != nil {
		return fmt.Errorf("write public key: %w", err)
	}
	return nil
}

// writeNew creates path with b, failing if it exists.
func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LoadSigningKey reads an Ed25519 private key from a PKCS #8 PEM file.
func LoadSigningKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("signing key %s: not a PEM PRIVATE KEY", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: not an Ed25519 key", path)
	}
	return priv, nil
}

// LoadPublicKey reads an Ed25519 public key from a PKIX PEM file.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read public key: %w", err)
	}
	return ParsePublicKey(b)
}

// ParsePublicKey reads an Ed25519 public key from PKIX PEM bytes.
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("public key: not a PEM PUBLIC KEY")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("public key: not an Ed25519 key")
	}
	return pub, nil
}

// PublicKeyPEM encodes a public key as PKIX PEM, the form verifiers load.
func PublicKeyPEM(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// KeyID names a public key in manifests: the first 16 bytes of the
// SHA-256 of the key, in hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:16])
}
