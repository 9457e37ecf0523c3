package authz

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	cedar "github.com/cedar-policy/cedar-go"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/store"
)

// Engine answers authorization questions from a policy folder. It is safe
// for concurrent use; a reload swaps the whole policy tree at once, so a
// request is always decided by one consistent tree.
type Engine struct {
	dir string
	log *slog.Logger
	cur atomic.Pointer[tree]

	mu       sync.Mutex // serialises reloads and guards the fields below
	loadedAt time.Time
	lastErr  error
}

// Load reads and validates the policy folder at dir (layout in
// policies/README.md) and returns an engine deciding from it. Every problem
// of every file is reported, each naming its file and line. A nil log
// discards the decision log.
func Load(dir string, log *slog.Logger) (*Engine, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t, err := loadTree(dir)
	if err != nil {
		return nil, fmt.Errorf("load policies from %s: %w", dir, err)
	}
	e := &Engine{dir: dir, log: log.With("component", "authz"), loadedAt: time.Now()}
	e.cur.Store(t)
	e.log.Info("policies loaded", "dir", dir, "files", t.files, "projects", len(t.projects))
	return e, nil
}

// Reload reads the policy folder again. On any error the previous tree
// stays in force, the error is logged and returned: a broken edit never
// opens access.
func (e *Engine) Reload() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, err := loadTree(e.dir)
	if err != nil {
		e.lastErr = err
		e.log.Error("policy reload failed; keeping the previous policies",
			"dir", e.dir, "err", err)
		return fmt.Errorf("reload policies from %s: %w", e.dir, err)
	}
	e.cur.Store(t)
	e.loadedAt, e.lastErr = time.Now(), nil
	e.log.Info("policies reloaded", "dir", e.dir, "files", t.files, "projects", len(t.projects))
	return nil
}

// LastReload returns when the policies in force were loaded and the error
// of the latest reload attempt, nil when that attempt succeeded. Health
// checks use it to show that a broken edit is waiting to be fixed.
func (e *Engine) LastReload() (time.Time, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.loadedAt, e.lastErr
}

// Tier returns the tier of a project and whether the project exists in the
// account's policy tree.
func (e *Engine) Tier(account, project string) (string, bool) {
	pp, ok := e.cur.Load().projects[tenantKey{account: account, project: project}]
	if !ok {
		return "", false
	}
	return pp.tier, true
}

// Projects returns, sorted, the projects of the principal's token that
// exist in its account's policy tree.
func (e *Engine) Projects(p *Principal) []string {
	if p == nil {
		return nil
	}
	t := e.cur.Load()
	var out []string
	for _, proj := range p.Projects() {
		if _, ok := t.projects[tenantKey{account: p.Account, project: proj}]; ok {
			out = append(out, proj)
		}
	}
	return out
}

// Decision is the outcome of one authorization request.
type Decision struct {
	// Allowed is true only when a permit applied, no forbid applied and
	// evaluation raised no error.
	Allowed bool
	// Policies are the ids of the determining policies: the permits that
	// allowed, or the forbids that denied. Ids are the @id annotation or
	// "<file>:<index>".
	Policies []string
	// Errors are evaluation errors, each naming its policy. Any error
	// denies the request.
	Errors []string
	// Reason says in words why, e.g. "no policy permits" or "unknown project".
	Reason string
	// Tier is the project's tier, empty when the project is unknown.
	Tier string
}

// Authorize decides whether the principal may perform action on res. The
// policy set is the one of the project res.Project inside the principal's
// own account; res.Account, when set, is checked against the principal's.
// On allow it returns the store scope of that project. On deny it returns
// ErrDenied, the same for a forbidden request and an unknown project, so
// callers answer both alike. Every decision is logged.
func (e *Engine) Authorize(ctx context.Context, p *Principal, action Action,
	res Resource) (store.Scope, Decision, error) {
	res, reason := normalize(p, action, res)
	d := Decision{Reason: reason}
	if reason == "" {
		d = e.decide(p, action, res)
	}
	var scope store.Scope
	if d.Allowed {
		s, err := store.NewScope(p.Account, res.Project)
		if err != nil {
			d = Decision{Reason: "invalid scope: " + err.Error(), Tier: d.Tier}
		} else {
			scope = s
		}
	}
	e.logDecision(ctx, p, action, res, d)
	if !d.Allowed {
		return store.Scope{}, d, ErrDenied
	}
	return scope, d, nil
}

// decide evaluates one normalized request against the tree in force.
func (e *Engine) decide(p *Principal, action Action, req Resource) Decision {
	pp, ok := e.cur.Load().projects[tenantKey{account: p.Account, project: req.Project}]
	if !ok {
		return Decision{Reason: "unknown project"}
	}
	entities, creq := buildRequest(p, action, req, pp)
	ok2, diag := cedar.Authorize(pp.set, entities, creq)
	d := Decision{Allowed: bool(ok2), Tier: pp.tier}
	for _, r := range diag.Reasons {
		d.Policies = append(d.Policies, string(r.PolicyID))
	}
	for _, de := range diag.Errors {
		d.Errors = append(d.Errors, de.String())
	}
	_, granted := p.Roles[req.Project]
	switch {
	case len(d.Errors) > 0:
		d.Allowed, d.Reason = false, "policy evaluation error"
	case d.Allowed && (req.Account != p.Account || !granted):
		// The global invariants should have forbidden this; deny anyway so
		// a tree that lost its invariants still cannot cross tenants.
		d.Allowed, d.Reason = false, "tenancy check: project not granted to this account"
	case d.Allowed:
		d.Reason = "permitted"
	case len(d.Policies) > 0:
		d.Reason = "forbidden by policy"
	default:
		d.Reason = "no policy permits"
	}
	return d
}

// normalize checks the ids of a request and fills defaults. It returns a
// reason when the request must be denied without evaluation.
func normalize(p *Principal, action Action, res Resource) (Resource, string) {
	switch {
	case p == nil:
		return res, "no principal"
	case !validSubject(p.Subject):
		return res, "invalid subject"
	case !events.ValidID(p.Account):
		return res, "invalid account id"
	case !slices.Contains(Actions, action):
		return res, "unknown action"
	}
	if res.Account == "" {
		res.Account = p.Account
	}
	if res.Kind == "" {
		res.Kind = KindProject
	}
	switch {
	case !events.ValidID(res.Account):
		return res, "invalid resource account id"
	case !events.ValidID(res.Project):
		return res, "invalid project id"
	case !slices.Contains(resourceKinds, res.Kind):
		return res, "unknown resource kind"
	case res.Kind == KindProject && res.ID != "" && res.ID != res.Project:
		return res, "project resource id differs from its project"
	case res.Kind != KindProject && !validResourceID(res.ID):
		return res, "invalid resource id"
	}
	return res, ""
}

// logDecision writes one line per decision; evaluation errors also get a
// warning of their own so they stand out.
func (e *Engine) logDecision(ctx context.Context, p *Principal, action Action,
	res Resource, d Decision) {
	var subject, account string
	if p != nil {
		subject, account = p.Subject, p.Account
	}
	attrs := []slog.Attr{
		slog.String("subject", subject),
		slog.String("account", account),
		slog.String("action", string(action)),
		slog.String("resource_account", res.Account),
		slog.String("project", res.Project),
		slog.String("resource_kind", string(res.Kind)),
		slog.String("resource_id", res.ID),
		slog.Bool("allowed", d.Allowed),
		slog.Any("policies", d.Policies),
		slog.String("reason", d.Reason),
	}
	if len(d.Errors) > 0 {
		e.log.LogAttrs(ctx, slog.LevelWarn, "authz evaluation error",
			append(attrs, slog.Any("errors", d.Errors))...)
		return
	}
	e.log.LogAttrs(ctx, slog.LevelInfo, "authz decision", attrs...)
}
