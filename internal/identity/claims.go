package identity

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/events"
)

// Bounds on what one token may carry.
const (
	maxSubjectLen  = 1024
	maxProjects    = 256
	maxRoles       = 256
	maxLabels      = 32
	maxLabelValLen = 256
)

// principalFrom checks the claims of a verified token and builds the
// principal. Roles apply to every project of the token, except entries of
// the form "<project>:<role>", which apply to that project only.
func principalFrom(tok jwt.Token, cfg *Config) (*authz.Principal, error) {
	sub, _ := tok.Subject()
	if !printable(sub, maxSubjectLen) {
		return nil, fmt.Errorf("claim sub: must be 1-%d printable characters", maxSubjectLen)
	}
	account, err := stringClaim(tok, cfg.ClaimAccount)
	if err != nil {
		return nil, err
	}
	if !events.ValidID(account) {
		return nil, fmt.Errorf("claim %s: %s", cfg.ClaimAccount, idRule)
	}

	projects, err := projectsOf(tok, cfg)
	if err != nil {
		return nil, err
	}
	roles, err := rolesOf(tok, cfg, projects)
	if err != nil {
		return nil, err
	}
	labels, err := labelsOf(tok, cfg.ClaimLabels)
	if err != nil {
		return nil, err
	}
	return &authz.Principal{Subject: sub, Account: account, Roles: roles, Labels: labels}, nil
}

const idRule = "ids are 1-64 characters of A-Z a-z 0-9 _ -"

// projectsOf reads the project claim and the "projects" claim, each one id
// or a list of ids, and returns their union in token order.
func projectsOf(tok jwt.Token, cfg *Config) ([]string, error) {
	names := []string{cfg.ClaimProjects}
	if cfg.ClaimProjects != ClaimProjectsList {
		names = append(names, ClaimProjectsList)
	}
	var out []string
	for _, name := range names {
		if !tok.Has(name) {
			continue
		}
		ids, err := stringsClaim(tok, name)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			if !events.ValidID(id) {
				return nil, fmt.Errorf("claim %s: %q: %s", name, id, idRule)
			}
			if !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("claim %s: the token names no project", cfg.ClaimProjects)
	}
	if len(out) > maxProjects {
		return nil, fmt.Errorf("claim %s: more than %d projects", cfg.ClaimProjects, maxProjects)
	}
	return out, nil
}

// rolesOf maps each project to its roles. Every project of the token is a
// key, with an empty list when no role applies there.
func rolesOf(tok jwt.Token, cfg *Config, projects []string) (map[string][]string, error) {
	entries := cfg.DefaultRoles
	if tok.Has(cfg.ClaimRoles) {
		var err error
		if entries, err = stringsClaim(tok, cfg.ClaimRoles); err != nil {
			return nil, err
		}
	}
	if len(entries) > maxRoles {
		return nil, fmt.Errorf("claim %s: more than %d entries", cfg.ClaimRoles, maxRoles)
	}
	out := make(map[string][]string, len(projects))
	for _, p := range projects {
		out[p] = []string{}
	}
	add := func(project, role string) {
		if !slices.Contains(out[project], role) {
			out[project] = append(out[project], role)
		}
	}
	for _, e := range entries {
		project, role, scoped := strings.Cut(e, ":")
		if !scoped {
			role = e
		}
		if !validRole(role) || (scoped && !events.ValidID(project)) {
			return nil, fmt.Errorf("claim %s: %q: roles are <role> or <project>:<role>; %s",
				cfg.ClaimRoles, e, idRule)
		}
		if !scoped {
			for _, p := range projects {
				add(p, role)
			}
			continue
		}
		if _, ok := out[project]; !ok {
			return nil, fmt.Errorf("claim %s: %q names a project the token does not grant",
				cfg.ClaimRoles, e)
		}
		add(project, role)
	}
	return out, nil
}

// validRole accepts the built-in roles and any other id-shaped name, which
// project policies may test with principal.roles.contains(...).
func validRole(r string) bool { return events.ValidID(r) }

// labelsOf reads the optional labels claim: an object of string values.
func labelsOf(tok jwt.Token, name string) (map[string]string, error) {
	if !tok.Has(name) {
		return nil, nil
	}
	var raw any
	if err := tok.Get(name, &raw); err != nil {
		return nil, fmt.Errorf("claim %s: %w", name, err)
	}
	obj, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("claim %s: must be an object of strings", name)
	}
	if len(obj) > maxLabels {
		return nil, fmt.Errorf("claim %s: more than %d labels", name, maxLabels)
	}
	out := make(map[string]string, len(obj))
	for k, v := range obj {
		s, ok := v.(string)
		if !ok || !events.ValidID(k) || !printable(s, maxLabelValLen) {
			return nil, fmt.Errorf("claim %s: label %q: keys follow the id rule, values are "+
				"1-%d printable characters", name, k, maxLabelValLen)
		}
		out[k] = s
	}
	return out, nil
}

func stringClaim(tok jwt.Token, name string) (string, error) {
	var raw any
	if err := tok.Get(name, &raw); err != nil {
		return "", fmt.Errorf("claim %s: missing", name)
	}
	s, ok := raw.(string)
	if !ok {
		return "", fmt.Errorf("claim %s: must be a string", name)
	}
	return s, nil
}

// stringsClaim reads a claim that is one string or a list of strings.
func stringsClaim(tok jwt.Token, name string) ([]string, error) {
	var raw any
	if err := tok.Get(name, &raw); err != nil {
		return nil, fmt.Errorf("claim %s: %w", name, err)
	}
	switch v := raw.(type) {
	case string:
		return []string{v}, nil
	case []string:
		return v, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				return nil, fmt.Errorf("claim %s: must be a string or a list of strings", name)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("claim %s: must be a string or a list of strings", name)
}

func printable(s string, max int) bool {
	if s == "" || len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}
