package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/guardwatch/observatory/internal/identity"
)

// tokenCmd mints a dev sign-in token with a local key, made on first use.
// The server accepts it when it verifies with the same folder's jwks.json
// (serve --dev-key-dir, or --jwks-file DIR/jwks.json).
type tokenCmd struct {
	KeyDir   string            `name:"key-dir" env:"GUARD_DEV_KEY_DIR" default:".dev-keys" help:"Dev signing key folder; a key is made if missing."`
	Account  string            `name:"account" required:"" help:"Account id (account_id claim)."`
	Projects []string          `name:"project" required:"" help:"Project id; repeat or separate with commas."`
	Roles    []string          `name:"role" help:"Role in every project (viewer, analyst, auditor, admin) or <project>:<role>; repeatable."`
	Subject  string            `name:"subject" default:"dev-user" help:"Subject (sub claim)."`
	TTL      time.Duration     `name:"ttl" default:"1h" help:"Lifetime of the token."`
	Labels   map[string]string `name:"label" help:"Label as key=value, passed to policies as context.labels; repeatable."`
	Issuer   string            `name:"issuer" default:"observatory-dev" help:"Issuer (iss claim)."`
	Audience string            `name:"audience" help:"Audience (aud claim), if the server requires one."`
}

// Run prints the token on stdout, and on stderr how to verify it.
func (c *tokenCmd) Run() error {
	return c.run(os.Stdout, os.Stderr)
}

func (c *tokenCmd) run(out, info io.Writer) error {
	if err := identity.GenerateDevKey(c.KeyDir); err != nil {
		return fmt.Errorf("prepare dev key: %w", err)
	}
	tok, err := identity.Mint(c.KeyDir, identity.MintClaims{
		Subject:  c.Subject,
		Account:  c.Account,
		Projects: c.Projects,
		Roles:    c.Roles,
		Labels:   c.Labels,
		Issuer:   c.Issuer,
		Audience: c.Audience,
		TTL:      c.TTL,
	})
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(out, tok); err != nil {
		return fmt.Errorf("print token: %w", err)
	}
	fmt.Fprintf(info, "signed with the dev key in %s; verify with --jwks-file %s\n",
		c.KeyDir, filepath.Join(c.KeyDir, identity.DevJWKSFile))
	return nil
}
