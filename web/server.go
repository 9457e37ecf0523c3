// Package web is the observatory's server-rendered UI: sign-in, projects,
// traces with filters and facets, trace and session detail, an overview
// with charts and a live tail. Every handler asks the authorization engine
// first and reads ClickHouse only through the scope an allowed decision
// hands out.
package web

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/export"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/tenant"
)

// Verifier turns a sign-in token into a verified principal.
// *identity.Verifier implements it.
type Verifier interface {
	Verify(ctx context.Context, token string) (*authz.Principal, error)
}

// Authorizer decides requests. *authz.Engine implements it.
type Authorizer interface {
	Authorize(ctx context.Context, p *authz.Principal, action authz.Action,
		res authz.Resource) (store.Scope, authz.Decision, error)
	Projects(p *authz.Principal) []string
}

// Deps are what the UI needs to run.
type Deps struct {
	Store    *store.Store
	Verifier Verifier
	Authz    Authorizer
	// Alerts serves alert subscriptions; nil turns the alert pages off.
	Alerts *AlertDeps
	// SessionSecret signs session cookies and CSRF tokens; at least 32
	// bytes. Sessions do not survive a change of secret.
	SessionSecret []byte
	// InsecureCookies drops the Secure attribute from cookies, for a dev
	// server on http://localhost. Default false: cookies are Secure.
	InsecureCookies bool
	// Logger receives request errors; default slog.Default().
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// TailInterval is how often the live tail polls; default 1s.
	TailInterval time.Duration
	// QueryTimeout bounds each page's reads; default 15s.
	QueryTimeout time.Duration
	// Exports writes audit exports; nil turns exports off.
	Exports *export.Exporter
	// Tiers gives each project's tier, whose query and export limits the
	// server applies (rows per page, longest range, concurrent queries;
	// exports offered, rows, range, concurrent and per day). Reload it to
	// change a limit; the server reads the current snapshot per request.
	// nil applies no tier limits, only the store's own bounds.
	Tiers *tenant.Registry
}

// ErrConfig reports missing or invalid dependencies.
var ErrConfig = errors.New("web: invalid configuration")

type server struct {
	Deps
	log *slog.Logger
	mux *http.ServeMux
	// queries counts each project's running ClickHouse-reading requests.
	queries *queryGate
	// exportGate admits exports within their project's tier limits.
	exportGate *export.Gate
}

// NewServer returns the UI's handler. It fails when a dependency is
// missing or the session secret is shorter than 32 bytes.
func NewServer(d Deps) (http.Handler, error) {
	switch {
	case d.Store == nil || d.Verifier == nil || d.Authz == nil:
		return nil, errors.Join(ErrConfig, errors.New("store, verifier and authz are required"))
	case len(d.SessionSecret) < 32:
		return nil, errors.Join(ErrConfig, errors.New("session secret must be at least 32 bytes"))
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.TailInterval <= 0 {
		d.TailInterval = time.Second
	}
	if d.QueryTimeout <= 0 {
		d.QueryTimeout = 15 * time.Second
	}
	s := &server{Deps: d, log: d.Logger.With("component", "web"), mux: http.NewServeMux(),
		queries: newQueryGate(), exportGate: export.NewGate(d.Store, d.Now)}
	s.routes()
	return s.secure(s.cleanPaths(s.mux)), nil
}

// cleanPaths answers a path with "." or ".." segments or empty segments
// as not found, where ServeMux would redirect to the cleaned path: an id
// like ".." must get the same answer as any other id that does not exist.
func (s *server) cleanPaths(next http.Handler) http.Handler {
	notFound := s.handle(func(http.ResponseWriter, *http.Request) error { return errNotFound })
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if p == "" || p[0] != '/' || strings.Contains(p, "//") ||
			strings.Contains(p+"/", "/./") || strings.Contains(p+"/", "/../") {
			notFound.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *server) routes() {
	m := s.mux
	m.Handle("GET /static/", staticHandler())
	m.Handle("GET /healthz", s.handle(s.healthz))

	m.Handle("GET /signin", s.handle(s.signinPage))
	m.Handle("POST /signin", s.handle(s.signin))
	m.Handle("POST /signout", s.handle(s.signout))
	s.alertRoutes()

	m.Handle("GET /{$}", s.viewer(s.projects))
	m.Handle("GET /p/{project}", s.viewer(s.overview))
	m.Handle("GET /p/{project}/traces", s.viewer(s.traces))
	m.Handle("GET /p/{project}/traces/{event}", s.viewer(s.trace))
	m.Handle("GET /p/{project}/sessions", s.viewer(s.sessions))
	m.Handle("GET /p/{project}/sessions/{session}", s.viewer(s.session))
	m.Handle("GET /p/{project}/tail", s.viewer(s.tail))
	m.Handle("GET /p/{project}/access", s.viewer(s.accessPage))
	m.Handle("POST /p/{project}/access", s.viewer(s.accessToken))
	s.exportRoutes(m)
	m.Handle("GET /api/p/{project}/traces", s.api(s.apiTraces))
	m.Handle("/", s.handle(func(http.ResponseWriter, *http.Request) error {
		return errNotFound
	}))
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) error {
	if err := s.Store.Ping(r.Context()); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
	return nil
}

// secure sets the headers every response carries.
func (s *server) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; "+
			"style-src 'self'; img-src 'self' data:; connect-src 'self'; "+
			"font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}
