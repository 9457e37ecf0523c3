package web

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/a-h/templ"

	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/store"
)

// maxRefLen bounds event and session ids taken from a URL.
const maxRefLen = 128

// validRef reports whether an event or session id from a URL may be looked
// up: 1-128 characters of A-Z a-z 0-9 _ - :. Anything else ('.', '*', '>',
// '/', spaces, control characters) is answered as not found before it
// reaches the engine or a query.
func validRef(s string) bool {
	if len(s) == 0 || len(s) > maxRefLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '_' || c == '-' || c == ':') {
			return false
		}
	}
	return true
}

// authorize asks the engine and returns the scope of an allowed decision.
// A denial, an unknown project or an invalid id all become errNotFound.
func (s *server) authorize(ctx context.Context, action authz.Action, kind authz.ResourceKind,
	project, id string) (store.Scope, error) {
	p := principal(ctx)
	if p == nil {
		return store.Scope{}, errSignIn
	}
	if !events.ValidID(project) || (kind != authz.KindProject && !validRef(id)) {
		return store.Scope{}, errNotFound
	}
	if kind == authz.KindProject {
		id = project
	}
	res := authz.Resource{Kind: kind, ID: id, Account: p.Account, Project: project}
	sc, _, err := s.Authz.Authorize(ctx, p, action, res)
	switch {
	case errors.Is(err, authz.ErrDenied):
		return store.Scope{}, errNotFound
	case err != nil:
		return store.Scope{}, err
	case !sc.Valid() || sc.Account() != p.Account || sc.Project() != project:
		// The engine must hand out exactly the project asked about.
		return store.Scope{}, errors.New("authorize: engine returned a scope for another project")
	}
	return sc, nil
}

// allowed reports whether an action is allowed, treating denial as false.
func (s *server) allowed(ctx context.Context, action authz.Action, kind authz.ResourceKind,
	project, id string) (bool, error) {
	_, err := s.authorize(ctx, action, kind, project, id)
	if errors.Is(err, errNotFound) {
		return false, nil
	}
	return err == nil, err
}

// projectScope authorizes action on the project named in the URL.
func (s *server) projectScope(r *http.Request, action authz.Action) (store.Scope, error) {
	return s.authorize(r.Context(), action, authz.KindProject, r.PathValue("project"), "")
}

// render writes a page with a status.
func (s *server) render(w http.ResponseWriter, r *http.Request, status int,
	c templ.Component) error {
	var buf bytes.Buffer
	if err := c.Render(r.Context(), &buf); err != nil {
		return fmt.Errorf("render page: %w", err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, err := buf.WriteTo(w)
	return err
}

// chrome builds the page frame's model: who is signed in, the project in
// view (empty for pages about no project), and the sign-out CSRF token.
func (s *server) chrome(r *http.Request, project string) Chrome {
	c := Chrome{Project: project}
	if p := principal(r.Context()); p != nil {
		c.SignedIn = true
		c.Subject = clean(p.Subject, 80)
		c.Account = clean(p.Account, 64)
		c.CSRF = s.csrfToken(r)
		c.Projects = s.Authz.Projects(p)
		if project != "" {
			c.CanSessions, _ = s.allowed(r.Context(), authz.ViewSession, authz.KindProject,
				project, "")
			c.CanExports, _ = s.allowed(r.Context(), authz.ExportAudit, authz.KindProject,
				project, "")
			if !c.CanExports {
				c.CanExports, _ = s.allowed(r.Context(), authz.ViewAlerts, authz.KindProject,
					project, "")
			}
			c.CanAlerts = s.Alerts != nil && s.Alerts.Store != nil
			if c.CanAlerts {
				c.CanAlerts, _ = s.allowed(r.Context(), authz.ViewAlerts, authz.KindProject,
					project, "")
			}
			c.CanExplain, _ = s.allowed(r.Context(), authz.ExplainAccess, authz.KindProject,
				project, "")
		}
	}
	return c
}
