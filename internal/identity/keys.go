package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/lestrrat-go/httprc/v3"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
)

// Accepted signature algorithms. Everything else, "none" and the HMAC
// family in particular, is refused before any key is looked at: with HMAC a
// published public key would become a shared secret.
var allowedAlgs = map[string]bool{
	jwa.RS256().String(): true,
	jwa.ES256().String(): true,
	jwa.EdDSA().String(): true,
}

const (
	minRSABits      = 2048
	fileCheckPeriod = time.Second
	refreshPeriod   = 30 * time.Second
)

// keySource yields the trusted key set.
type keySource interface {
	// keys returns the current set.
	keys(ctx context.Context) (jwk.Set, error)
	// refresh returns a fresher set after a token named an unknown key id,
	// so that a rotated key is picked up; it may return the same set.
	refresh(ctx context.Context) (jwk.Set, error)
}

// keyProvider hands jwx the keys that may verify one signature: those
// matching the header's kid whose type fits the header's algorithm.
type keyProvider struct{ src keySource }

// FetchKeys implements jws.KeyProvider.
func (kp keyProvider) FetchKeys(ctx context.Context, sink jws.KeySink, sig *jws.Signature,
	_ *jws.Message) error {
	hdr := sig.ProtectedHeaders()
	alg, ok := hdr.Algorithm()
	if !ok || !allowedAlgs[alg.String()] {
		return fmt.Errorf("algorithm %q is not accepted", alg.String())
	}
	kid, _ := hdr.KeyID()
	set, err := kp.src.keys(ctx)
	if err != nil {
		return fmt.Errorf("load verification keys: %w", err)
	}
	if sendKeys(sink, set, alg, kid) > 0 {
		return nil
	}
	if kid != "" {
		if set, err = kp.src.refresh(ctx); err == nil && sendKeys(sink, set, alg, kid) > 0 {
			return nil
		}
	}
	return fmt.Errorf("no trusted key with kid %q for algorithm %s", kid, alg)
}

// sendKeys sends every key of set that may verify a signature made with
// alg under kid, and returns how many it sent.
func sendKeys(sink jws.KeySink, set jwk.Set, alg jwa.SignatureAlgorithm, kid string) int {
	n := 0
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		if kid != "" {
			if id, _ := k.KeyID(); id != kid {
				continue
			}
		}
		if use, ok := k.KeyUsage(); ok && use != "sig" {
			continue
		}
		if ka, ok := k.Algorithm(); ok && ka.String() != alg.String() {
			continue
		}
		raw, err := publicRaw(k)
		if err != nil || !fits(alg, raw) {
			continue
		}
		sink.Key(alg, raw)
		n++
	}
	return n
}

// publicRaw returns the Go public key of a JWK, dropping any private part.
func publicRaw(k jwk.Key) (any, error) {
	pub, err := k.PublicKey()
	if err != nil {
		return nil, err
	}
	var raw any
	if err := jwk.Export(pub, &raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// fits reports whether key is of the one type alg works with.
func fits(alg jwa.SignatureAlgorithm, key any) bool {
	switch alg.String() {
	case jwa.RS256().String():
		k, ok := key.(*rsa.PublicKey)
		return ok && k.N.BitLen() >= minRSABits
	case jwa.ES256().String():
		k, ok := key.(*ecdsa.PublicKey)
		return ok && k.Curve == elliptic.P256()
	case jwa.EdDSA().String():
		_, ok := key.(ed25519.PublicKey)
		return ok
	}
	return false
}

// fileKeys reads a JWKS file and reads it again when it changes, so keys
// can be rotated or withdrawn without a restart.
type fileKeys struct {
	path string

	mu      sync.Mutex
	set     jwk.Set
	mod     time.Time
	size    int64
	checked time.Time
}

func newFileKeys(path string) (*fileKeys, error) {
	f := &fileKeys{path: path}
	if err := f.load(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *fileKeys) load() error {
	fi, err := os.Stat(f.path)
	if err != nil {
		return fmt.Errorf("read JWKS file: %w", err)
	}
	set, err := jwk.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("read JWKS file %s: %w", f.path, err)
	}
	if set.Len() == 0 {
		return fmt.Errorf("read JWKS file %s: no keys", f.path)
	}
	f.set, f.mod, f.size = set, fi.ModTime(), fi.Size()
	return nil
}

func (f *fileKeys) keys(context.Context) (jwk.Set, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.checked) < fileCheckPeriod {
		return f.set, nil
	}
	f.checked = time.Now()
	fi, err := os.Stat(f.path)
	if err == nil && (!fi.ModTime().Equal(f.mod) || fi.Size() != f.size) {
		// A file caught half-written keeps the previous keys until the
		// next check.
		_ = f.load()
	}
	return f.set, nil
}

func (f *fileKeys) refresh(ctx context.Context) (jwk.Set, error) {
	f.mu.Lock()
	f.checked = time.Time{}
	f.mu.Unlock()
	return f.keys(ctx)
}

// urlKeys keeps a remote JWKS in jwx's cache, which refreshes it in the
// background following the server's cache headers.
type urlKeys struct {
	url   string
	cache *jwk.Cache

	mu        sync.Mutex
	refreshed time.Time
}

func newURLKeys(ctx context.Context, url string, client *http.Client) (*urlKeys, error) {
	cache, err := jwk.NewCache(ctx, httprc.NewClient())
	if err != nil {
		return nil, fmt.Errorf("start JWKS cache: %w", err)
	}
	err = cache.Register(ctx, url,
		jwk.WithHTTPClient(client),
		jwk.WithMinInterval(refreshPeriod),
		jwk.WithMaxInterval(time.Hour),
	)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS from %s: %w", url, err)
	}
	return &urlKeys{url: url, cache: cache}, nil
}

func (u *urlKeys) keys(ctx context.Context) (jwk.Set, error) {
	return u.cache.Lookup(ctx, u.url)
}

func (u *urlKeys) refresh(ctx context.Context) (jwk.Set, error) {
	u.mu.Lock()
	due := time.Since(u.refreshed) >= refreshPeriod
	if due {
		u.refreshed = time.Now()
	}
	u.mu.Unlock()
	if !due {
		return nil, errors.New("JWKS refreshed recently")
	}
	return u.cache.Refresh(ctx, u.url)
}
