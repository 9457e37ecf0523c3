package web_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAccessExplainForAdmin(t *testing.T) {
	e := newEnv(t)
	base := e.srv.URL
	admin := signIn(t, base, e.token(t, "acme", []string{"proj_prod"}, []string{"admin"}))

	status, doc := getDoc(t, admin, base+"/p/proj_prod/access?action=list_traces&kind=Project")
	require.Equal(t, http.StatusOK, status)
	out := doc.Find(`[data-testid=access-explain]`).Text()
	require.Contains(t, out, "decision: ALLOW")
	require.Contains(t, out, "role.admin")
	require.Equal(t, 1, doc.Find(`[data-testid=nav-access]`).Length(), "nav link for admins")
	require.Equal(t, 1, doc.Find(`[data-testid=access-token-form] input[name=csrf]`).Length())

	// The nav link is shown to admins only.
	viewer := signIn(t, base, e.token(t, "acme", []string{"proj_prod"}, []string{"viewer"}))
	status, doc = getDoc(t, viewer, base+"/p/proj_prod/traces")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, 0, doc.Find(`[data-testid=nav-access]`).Length())
}

func TestAccessExplainForbiddenLooksLikeNotFound(t *testing.T) {
	e := newEnv(t)
	base := e.srv.URL
	viewer := signIn(t, base, e.token(t, "acme", []string{"proj_prod"}, []string{"viewer"}))
	wantStatus, wantBody := notFound(t, viewer, base)

	for _, p := range []string{"/p/proj_prod/access", "/p/proj_nope/access"} {
		status, body := get(t, viewer, base+p)
		require.Equal(t, wantStatus, status, p)
		require.Equal(t, wantBody, body, p)
	}
	// A forged POST from a viewer is answered the same way.
	resp, err := viewer.PostForm(base+"/p/proj_prod/access", url.Values{"token": {"x"}})
	require.NoError(t, err)
	body := readAll(t, resp)
	require.Equal(t, wantStatus, resp.StatusCode)
	require.Equal(t, wantBody, body)
}

// accessCSRF reads the token form's CSRF field from the access page.
func accessCSRF(t *testing.T, c *http.Client, base string) string {
	t.Helper()
	status, doc := getDoc(t, c, base+"/p/proj_prod/access")
	require.Equal(t, http.StatusOK, status)
	csrf := doc.Find(`[data-testid=access-token-form] input[name=csrf]`).AttrOr("value", "")
	require.NotEmpty(t, csrf)
	return csrf
}

func TestAccessExplainPastedToken(t *testing.T) {
	e := newEnv(t)
	base := e.srv.URL
	admin := signIn(t, base, e.token(t, "acme", []string{"proj_prod"}, []string{"admin"}))
	csrf := accessCSRF(t, admin, base)
	form := func(token string) url.Values {
		return url.Values{"csrf": {csrf}, "action": {"export_audit"}, "kind": {"Project"},
			"token": {token}}
	}

	viewerTok := e.token(t, "acme", []string{"proj_prod"}, []string{"viewer"})
	status, doc := postDoc(t, admin, base+"/p/proj_prod/access", form(viewerTok))
	require.Equal(t, http.StatusOK, status)
	out := doc.Find(`[data-testid=access-explain]`).Text()
	require.Contains(t, out, "decision: DENY")
	require.Contains(t, out, "tester@acme")
	require.Equal(t, 0, doc.Find(`[data-testid=access-token-error]`).Length())

	// Another account's token and an invalid token get the same answer,
	// which names no account.
	otherTok := e.token(t, "globex", []string{"proj_prod"}, []string{"viewer"})
	status, doc = postDoc(t, admin, base+"/p/proj_prod/access", form(otherTok))
	require.Equal(t, http.StatusOK, status)
	otherMsg := text(doc.Find(`[data-testid=access-token-error]`))
	require.Equal(t, "Token not accepted.", otherMsg)
	require.Equal(t, 0, doc.Find(`[data-testid=access-explain]`).Length())
	require.NotContains(t, text(doc.Selection), "globex")

	status, doc = postDoc(t, admin, base+"/p/proj_prod/access", form("not-a-token"))
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, otherMsg, text(doc.Find(`[data-testid=access-token-error]`)))
	require.Equal(t, 0, doc.Find(`[data-testid=access-explain]`).Length())

	// Without the CSRF token nothing is explained.
	nocsrf := form(viewerTok)
	nocsrf.Del("csrf")
	status, doc = postDoc(t, admin, base+"/p/proj_prod/access", nocsrf)
	require.Equal(t, http.StatusForbidden, status)
	require.Equal(t, 0, doc.Find(`[data-testid=access-explain]`).Length())
}

func TestAccessExplainBadParams(t *testing.T) {
	e := newEnv(t)
	base := e.srv.URL
	admin := signIn(t, base, e.token(t, "acme", []string{"proj_prod"}, []string{"admin"}))
	for param, q := range map[string]string{
		"action": "action=drop_tables&kind=Project",
		"kind":   "action=list_traces&kind=Account",
		"id":     "action=view_trace&kind=Trace&id=a.b",
	} {
		status, doc := getDoc(t, admin, base+"/p/proj_prod/access?"+q)
		require.Equal(t, http.StatusBadRequest, status, q)
		require.Contains(t, text(doc.Find(`[data-testid=error-message]`)), param+":", q)
	}
}
