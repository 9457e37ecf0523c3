package alert

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"time"

	"github.com/guardwatch/observatory/internal/filter"
)

// Subscription is one alert rule of one project. Its JSON form is what the
// API shows: it never carries the signing secret, which only Create hands
// out, once.
type Subscription struct {
	ID        string `json:"id"`
	AccountID string `json:"account_id"`
	ProjectID string `json:"project_id"`
	Spec
	// Version counts saves; the evaluator starts a fresh window for every
	// group when it changes, so an edited rule never fires on old counts.
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	CreatedBy string    `json:"created_by"`

	secret string        // signs webhook bodies; never marshalled
	match  filter.Filter // Spec.Match, compiled
}

// Filter returns the compiled match of the subscription.
func (s *Subscription) Filter() filter.Filter { return s.match }

// record is the stored form of a subscription: the subscription plus its
// secret. It exists only between this package and the bucket.
type record struct {
	Subscription
	Secret string `json:"secret"`
}

const (
	idPrefix     = "sub_"
	secretPrefix = "whsec_"
)

// newID returns a fresh subscription id: "sub_" and 20 hex digits, inside
// the id rules, so it can be a token of a KV key.
func newID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return idPrefix + hex.EncodeToString(b[:])
}

// newSecret returns a fresh signing secret with 256 bits of entropy. The
// HMAC key is the secret string itself, prefix included.
func newSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return secretPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}
