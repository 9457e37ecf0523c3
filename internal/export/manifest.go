package export

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// ManifestVersion is the version of the manifest layout this package
// writes and verifies.
const ManifestVersion = 1

// SignatureAlgorithm is the only signature algorithm of manifests.
const SignatureAlgorithm = "Ed25519"

// Verification failures. Verify wraps one of them.
var (
	// ErrManifest is a manifest that cannot be read: not JSON, an unknown
	// or repeated field, or another version.
	ErrManifest = errors.New("export: malformed manifest")
	// ErrSignature is a manifest that was changed after signing, or that
	// was signed by another key.
	ErrSignature = errors.New("export: manifest signature does not verify")
	// ErrFileChanged is a file whose size or SHA-256 differs from its
	// manifest's.
	ErrFileChanged = errors.New("export: file does not match its manifest")
)

// Range is an export's time range, in UTC with milliseconds.
type Range struct {
	From string `json:"from"` // inclusive
	To   string `json:"to"`   // exclusive
	Note string `json:"note"`
}

// Bound is the fixed upper bound of an export: rows stored later are not
// in the file, whenever they occurred.
type Bound struct {
	StoredBy string `json:"ingested_at_max"` // inclusive
	Note     string `json:"note"`
}

// Manifest describes one export file and is signed with Ed25519. The
// signature covers the manifest's JSON encoding with an empty signature
// field (fields in the order below, compact); Verify rebuilds it from the
// decoded fields, so any change to a value breaks the signature.
type Manifest struct {
	Version         int    `json:"manifest_version"`
	ExportID        string `json:"export_id"`
	AccountID       string `json:"account_id"`
	ProjectID       string `json:"project_id"`
	Format          Format `json:"format"`
	Gzip            bool   `json:"gzip"`
	FileName        string `json:"file_name"`
	Filter          string `json:"filter"` // query string of the filter, without the range
	Range           Range  `json:"range"`
	UpperBound      Bound  `json:"upper_bound"`
	Order           string `json:"order"`
	ContentPreviews bool   `json:"content_previews"`
	Rows            int64  `json:"rows"`
	Bytes           int64  `json:"bytes"`
	SHA256          string `json:"sha256"` // hex, of the file as delivered
	ExportedAt      string `json:"exported_at"`
	ExportedBy      string `json:"exported_by"`
	KeyID           string `json:"key_id"`
	Algorithm       string `json:"signature_algorithm"`
	Signature       string `json:"signature"` // base64 (standard, padded)
}

// payload is what the signature covers.
func (m Manifest) payload() ([]byte, error) {
	m.Signature = ""
	b, err := json.Marshal(m, json.Deterministic(true))
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return b, nil
}

// Sign sets the key id, algorithm and signature of m and returns the
// manifest file: indented JSON ending in a newline.
func (m *Manifest) Sign(key ed25519.PrivateKey) ([]byte, error) {
	m.KeyID = KeyID(key.Public().(ed25519.PublicKey))
	m.Algorithm = SignatureAlgorithm
	p, err := m.payload()
	if err != nil {
		return nil, err
	}
	m.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(key, p))
	b, err := json.Marshal(m, json.Deterministic(true), jsontext.Multiline(true))
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// ParseManifest reads a manifest file and checks its signature with pub.
func ParseManifest(b []byte, pub ed25519.PublicKey) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m, json.RejectUnknownMembers(true)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	if m.Version != ManifestVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrManifest, m.Version, ManifestVersion)
	}
	if m.Algorithm != SignatureAlgorithm {
		return nil, fmt.Errorf("%w: algorithm %q", ErrSignature, m.Algorithm)
	}
	if m.KeyID != KeyID(pub) {
		return nil, fmt.Errorf("%w: signed by key %s, not by key %s", ErrSignature,
			m.KeyID, KeyID(pub))
	}
	sig, err := base64.StdEncoding.DecodeString(m.Signature)
	if err != nil {
		return nil, fmt.Errorf("%w: signature is not base64", ErrSignature)
	}
	p, err := m.payload()
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(pub, p, sig) {
		return nil, ErrSignature
	}
	return &m, nil
}

// Verify checks that file is the export its manifest describes: the
// manifest's signature verifies with pub, and the file has the size and
// SHA-256 the manifest states. It returns the verified manifest.
func Verify(file io.Reader, manifest []byte, pub ed25519.PublicKey) (*Manifest, error) {
	m, err := ParseManifest(manifest, pub)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	n, err := io.Copy(h, file)
	if err != nil {
		return nil, fmt.Errorf("read file: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if n != m.Bytes || sum != m.SHA256 {
		return m, fmt.Errorf("%w: %d bytes with SHA-256 %s, manifest says %d bytes with %s",
			ErrFileChanged, n, sum, m.Bytes, m.SHA256)
	}
	return m, nil
}
