package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/identity"
)

// authzCmd groups the authorization tools.
type authzCmd struct {
	Explain explainCmd `cmd:"" help:"Show how the policies decide one request of a token."`
}

// explainCmd verifies a token, decides one request against a policy folder
// and prints the decision with its determining policies. It exits 0 for
// both allow and deny; it fails only when the token or policies are bad.
type explainCmd struct {
	Token        string `name:"token" required:"" env:"GUARD_TOKEN" help:"Viewer token (JWT); - reads it from stdin."`
	Action       string `name:"action" required:"" enum:"list_traces,view_trace,view_content,view_session,export_audit,view_alerts,manage_alerts,explain_access" help:"Action: ${enum}."`
	Project      string `name:"project" required:"" help:"Project of the request, as in the URL."`
	ResourceKind string `name:"resource-kind" default:"Project" enum:"Project,Trace,Session,Export,AlertSubscription" help:"Resource kind: ${enum}."`
	ResourceID   string `name:"resource-id" help:"Resource id; required for kinds other than Project."`
	Policies     string `name:"policies" env:"GUARD_POLICIES" default:"policies" type:"existingdir" help:"Cedar policy folder."`
	JWKS         string `name:"jwks" env:"GUARD_JWKS_FILE" help:"JWKS file of the token issuer; default: the dev key's jwks.json."`
	JWKSURL      string `name:"jwks-url" env:"GUARD_JWKS_URL" help:"JWKS URL of the token issuer."`
	DevKeyDir    string `name:"dev-key-dir" env:"GUARD_DEV_KEY_DIR" default:".dev-keys" help:"Dev key folder, used when no JWKS is given."`
	Issuer       string `name:"issuer" env:"GUARD_ISSUER" help:"Required token issuer (iss)."`
	Audience     string `name:"audience" env:"GUARD_AUDIENCE" help:"Required token audience (aud)."`
}

// Run prints the explanation on stdout.
func (c *explainCmd) Run() error {
	return c.run(context.Background(), os.Stdin, os.Stdout)
}

func (c *explainCmd) run(ctx context.Context, in io.Reader, out io.Writer) error {
	token, err := c.readToken(in)
	if err != nil {
		return err
	}
	jwks := c.JWKS
	if jwks == "" && c.JWKSURL == "" {
		jwks = filepath.Join(c.DevKeyDir, identity.DevJWKSFile)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	v, err := identity.NewVerifier(ctx, identity.Config{JWKSFile: jwks, JWKSURL: c.JWKSURL,
		Issuer: c.Issuer, Audience: c.Audience})
	if err != nil {
		return fmt.Errorf("start token verifier: %w", err)
	}
	p, err := v.Verify(ctx, token)
	if err != nil {
		return fmt.Errorf("verify token: %w", err)
	}

	// Only warnings reach stderr: the decision itself is printed below.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	engine, err := authz.Load(c.Policies, log)
	if err != nil {
		return err
	}
	res := authz.Resource{
		Kind:    authz.ResourceKind(c.ResourceKind),
		ID:      c.ResourceID,
		Project: c.Project,
	}
	_, err = io.WriteString(out, engine.Explain(ctx, p, authz.Action(c.Action), res))
	return err
}

func (c *explainCmd) readToken(in io.Reader) (string, error) {
	if c.Token != "-" {
		return strings.TrimSpace(c.Token), nil
	}
	line, err := bufio.NewReader(io.LimitReader(in, 64<<10)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read token from stdin: %w", err)
	}
	return strings.TrimSpace(line), nil
}
