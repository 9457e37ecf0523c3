// Package identity verifies viewer tokens (signed JWTs) and turns their
// claims into an authz.Principal. It is the only way a Principal is made:
// the account, projects and roles of a request come from a verified token,
// never from anything else the client sends.
package identity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/guardwatch/observatory/internal/authz"
)

// ErrInvalidToken is returned for every token that is not accepted: bad
// signature, wrong algorithm or key, expired, wrong issuer or audience, or
// claims that break the id rules. The wrapped detail is for logs only.
var ErrInvalidToken = errors.New("identity: invalid token")

// Default claim names. They follow the agent identity convention used by
// ZeroID: account_id, project_id (one id or a list), plus roles and labels.
const (
	DefaultClaimAccount  = "account_id"
	DefaultClaimProjects = "project_id"
	DefaultClaimRoles    = "roles"
	DefaultClaimLabels   = "labels"
	// ClaimProjectsList is also read for projects, whatever ClaimProjects is.
	ClaimProjectsList = "projects"
)

// maxTokenBytes bounds what Verify parses.
const maxTokenBytes = 16 << 10

// Config says where keys come from and which claims to read.
type Config struct {
	// JWKSFile is a JSON Web Key Set file; it is read again when it changes.
	JWKSFile string
	// JWKSURL is fetched and kept fresh by the key cache. One of JWKSFile
	// and JWKSURL is required.
	JWKSURL string
	// Issuer, when set, must equal the token's iss.
	Issuer string
	// Audience, when set, must be one of the token's aud values.
	Audience string
	// Claim names; empty means the Default* constant.
	ClaimAccount, ClaimProjects, ClaimRoles, ClaimLabels string
	// Leeway is the clock skew allowed on exp, nbf and iat. Default 0.
	Leeway time.Duration
	// DefaultRoles are granted in every project of a token that carries no
	// roles claim at all, e.g. "viewer" for tokens of an identity server
	// that issues none. Default: none, so such a token can do nothing.
	DefaultRoles []string
	// HTTPClient fetches JWKSURL. Default: a client with a 10 s timeout.
	HTTPClient *http.Client
}

func (c *Config) setDefaults() {
	if c.ClaimAccount == "" {
		c.ClaimAccount = DefaultClaimAccount
	}
	if c.ClaimProjects == "" {
		c.ClaimProjects = DefaultClaimProjects
	}
	if c.ClaimRoles == "" {
		c.ClaimRoles = DefaultClaimRoles
	}
	if c.ClaimLabels == "" {
		c.ClaimLabels = DefaultClaimLabels
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
}

// Verifier checks viewer tokens. It is safe for concurrent use.
type Verifier struct {
	cfg  Config
	keys keySource
}

// NewVerifier returns a verifier for cfg. With JWKSURL the key set is
// fetched once before it returns and then refreshed in the background
// until ctx ends.
func NewVerifier(ctx context.Context, cfg Config) (*Verifier, error) {
	cfg.setDefaults()
	for _, r := range cfg.DefaultRoles {
		if !validRole(r) {
			return nil, fmt.Errorf("identity config: default role %q breaks the id rule", r)
		}
	}
	var (
		src keySource
		err error
	)
	switch {
	case cfg.JWKSFile != "" && cfg.JWKSURL != "":
		return nil, errors.New("identity config: set only one of JWKS file and JWKS URL")
	case cfg.JWKSFile != "":
		src, err = newFileKeys(cfg.JWKSFile)
	case cfg.JWKSURL != "":
		src, err = newURLKeys(ctx, cfg.JWKSURL, cfg.HTTPClient)
	default:
		return nil, errors.New("identity config: a JWKS file or URL is required")
	}
	if err != nil {
		return nil, err
	}
	return &Verifier{cfg: cfg, keys: src}, nil
}

// Verify checks the token's signature, algorithm, times, issuer and
// audience, then its claims, and returns the principal it names. Every
// failure wraps ErrInvalidToken.
func (v *Verifier) Verify(ctx context.Context, token string) (*authz.Principal, error) {
	if len(token) > maxTokenBytes {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrInvalidToken, maxTokenBytes)
	}
	opts := []jwt.ParseOption{
		jwt.WithKeyProvider(keyProvider{src: v.keys}),
		jwt.WithValidate(true),
		jwt.WithContext(ctx),
		jwt.WithAcceptableSkew(v.cfg.Leeway),
		jwt.WithRequiredClaim(jwt.ExpirationKey),
		jwt.WithRequiredClaim(jwt.SubjectKey),
	}
	if v.cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.cfg.Issuer))
	}
	if v.cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(v.cfg.Audience))
	}
	tok, err := jwt.ParseString(token, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	p, err := principalFrom(tok, &v.cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	return p, nil
}
