package web

import (
	"context"
	"net/http"
	"slices"
	"strings"

	"github.com/guardwatch/observatory/internal/authz"
)

// explainer explains a decision in words; *authz.Engine implements it.
type explainer interface {
	Explain(ctx context.Context, p *authz.Principal, action authz.Action,
		res authz.Resource) string
}

// explainKinds are the resource kinds the access page offers.
var explainKinds = []authz.ResourceKind{authz.KindProject, authz.KindTrace,
	authz.KindSession, authz.KindExport, authz.KindAlertSubscription}

// tokenNotAccepted answers every pasted token that cannot be explained:
// invalid, expired, or of another account. It names no account.
const tokenNotAccepted = "Token not accepted."

// AccessView is the access page: what the engine decides for a request in
// the project, for the signed-in admin or for a pasted token.
type AccessView struct {
	Chrome
	Path    string // the page's own path, both forms' action
	Actions []string
	Kinds   []string
	Action  string
	Kind    string
	ID      string
	// For says whose request Result explains: "you" or "token".
	For        string
	Result     string // the engine's explanation; empty when none
	TokenError string // why a pasted token is not explained
}

// accessPage explains a request by the signed-in admin.
func (s *server) accessPage(w http.ResponseWriter, r *http.Request) error {
	sc, err := s.projectScope(r, authz.ExplainAccess)
	if err != nil {
		return err
	}
	ex, ok := s.Authz.(explainer)
	if !ok {
		return errNotFound
	}
	v, res, action, err := s.accessView(r, sc.Project(), r.URL.Query().Get)
	if err != nil {
		return err
	}
	p := principal(r.Context())
	res.Account = p.Account
	v.For, v.Result = "you", ex.Explain(r.Context(), p, action, res)
	return s.render(w, r, http.StatusOK, AccessPage(v))
}

// accessToken explains a request by the viewer of a pasted token of the
// admin's own account.
func (s *server) accessToken(w http.ResponseWriter, r *http.Request) error {
	sc, err := s.projectScope(r, authz.ExplainAccess)
	if err != nil {
		return err
	}
	ex, ok := s.Authz.(explainer)
	if !ok {
		return errNotFound
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4*maxTokenBytes)
	if err := r.ParseForm(); err != nil {
		return &userError{Status: http.StatusBadRequest, Msg: "The form could not be read."}
	}
	if err := s.checkCSRFOf(r, r.PostForm.Get("csrf")); err != nil {
		return err
	}
	v, res, action, err := s.accessView(r, sc.Project(), r.PostForm.Get)
	if err != nil {
		return err
	}
	admin := principal(r.Context())
	other, err := s.verifyToken(r, strings.TrimSpace(r.PostForm.Get("token")))
	if err != nil || other == nil || other.Account != admin.Account {
		v.TokenError = tokenNotAccepted
		return s.render(w, r, http.StatusOK, AccessPage(v))
	}
	res.Account = admin.Account
	v.For, v.Result = "token", ex.Explain(r.Context(), other, action, res)
	return s.render(w, r, http.StatusOK, AccessPage(v))
}

// accessView reads and checks the request to explain: action (default
// list_traces), kind (default Project) and, for kinds other than Project,
// an id. The resource is in project; its account is left to the caller.
func (s *server) accessView(r *http.Request, project string,
	param func(string) string) (AccessView, authz.Resource, authz.Action, error) {
	v := AccessView{Chrome: s.chrome(r, project), Path: projectPath(project, "access")}
	v.Section = "access"
	for _, a := range authz.Actions {
		v.Actions = append(v.Actions, string(a))
	}
	for _, k := range explainKinds {
		v.Kinds = append(v.Kinds, string(k))
	}
	v.Action, v.Kind = param("action"), param("kind")
	v.ID = strings.TrimSpace(param("id"))
	if v.Action == "" {
		v.Action = string(authz.ListTraces)
	}
	if v.Kind == "" {
		v.Kind = string(authz.KindProject)
	}
	if !slices.Contains(v.Actions, v.Action) {
		return v, authz.Resource{}, "", badParam("action", "must be one of %s",
			strings.Join(v.Actions, ", "))
	}
	if !slices.Contains(v.Kinds, v.Kind) {
		return v, authz.Resource{}, "", badParam("kind", "must be one of %s",
			strings.Join(v.Kinds, ", "))
	}
	res := authz.Resource{Kind: authz.ResourceKind(v.Kind), Project: project}
	if res.Kind == authz.KindProject {
		v.ID, res.ID = "", project
	} else {
		if !validRef(v.ID) {
			return v, authz.Resource{}, "", badParam("id",
				"1-%d characters of letters, digits, _ - : for a %s", maxRefLen, v.Kind)
		}
		res.ID = v.ID
	}
	return v, res, authz.Action(v.Action), nil
}
