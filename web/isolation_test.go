package web_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/identity"
)

// notFound is the reference answer: an id that exists nowhere.
func notFound(t *testing.T, c *http.Client, base string) (int, string) {
	t.Helper()
	status, body := get(t, c, base+"/p/proj_prod/traces/evt-does-not-exist")
	require.Equal(t, http.StatusNotFound, status)
	return status, body
}

func TestIsolationAnswersLikeNotFound(t *testing.T) {
	e := newEnv(t)
	base := e.srv.URL
	acme := signIn(t, base, e.token(t, "acme", []string{"proj_prod"}, []string{"admin"}))
	wantStatus, wantBody := notFound(t, acme, base)

	// The acme viewer can see its own crafted event and session.
	status, _ := get(t, acme, base+"/p/proj_prod/traces/evt-acme-shared")
	require.Equal(t, http.StatusOK, status)

	paths := map[string]string{
		"another account's trace, same project id": "/p/proj_prod/traces/evt-globex-only",
		"another account's project":                "/p/support-bot/traces",
		"another project of the same account":      "/p/proj_staging/traces",
		"a trace of the other project":             "/p/proj_staging/traces/evt-staging-only",
		"overview of the other project":            "/p/proj_staging",
		"sessions of the other project":            "/p/proj_staging/sessions",
		"tail of another account":                  "/p/support-bot/tail",
		"a session that exists in another account": "/p/proj_prod/sessions/sess-globex-only",
		"a session of the other project":           "/p/proj_prod/sessions/sess-staging-only",
		"a guessed event id":                       "/p/proj_prod/traces/evt-00000001",
		"a guessed project":                        "/p/proj_secret/traces",
		"an account id in place of a project":      "/p/globex/traces",
	}
	hostile := []string{".", "..", "*", ">", "a.b", "a*", "a>b", "a b", "a\x00b", "a\nb",
		"a\x7fb", "%2e%2e", "evt-globex-only.", "\u202eevt", "a/b"}
	for _, id := range hostile {
		esc := url.PathEscape(id)
		paths["event id "+url.QueryEscape(id)] = "/p/proj_prod/traces/" + esc
		paths["session id "+url.QueryEscape(id)] = "/p/proj_prod/sessions/" + esc
		paths["project id "+url.QueryEscape(id)] = "/p/" + esc + "/traces"
	}
	for name, p := range paths {
		t.Run(name, func(t *testing.T) {
			status, body := get(t, acme, base+p)
			require.Equal(t, wantStatus, status, p)
			require.Equal(t, wantBody, body, p)
		})
	}
}

func TestSharedSessionIDIsTwoSessions(t *testing.T) {
	e := newEnv(t)
	base := e.srv.URL
	acme := signIn(t, base, e.token(t, "acme", []string{"proj_prod"}, []string{"analyst"}))
	status, doc := getDoc(t, acme, base+"/p/proj_prod/sessions/sess-shared")
	require.Equal(t, http.StatusOK, status)
	items := doc.Find(`[data-testid=timeline-item]`)
	require.Equal(t, 1, items.Length(), "only acme's decision of the shared session id")
	require.Contains(t, text(items), "crafted acme/proj_prod")
	require.NotContains(t, text(doc.Selection), "globex")
}

// TestBadTokensAnswerUnauthorizedWhateverThePath: a bearer token that does
// not verify gets one 401, the same for a project that exists, another
// tenant's and none at all, so it tells nothing about what exists.
func TestBadTokensAnswerUnauthorizedWhateverThePath(t *testing.T) {
	e := newEnv(t)
	base := e.srv.URL

	good := e.token(t, "acme", []string{"proj_prod"}, []string{"admin"})
	otherKey := t.TempDir()
	require.NoError(t, identity.GenerateDevKey(otherKey))
	foreign, err := identity.Mint(otherKey, identity.MintClaims{Account: "acme",
		Projects: []string{"proj_prod"}, Roles: []string{"admin"}})
	require.NoError(t, err)
	expired := e.token(t, "acme", []string{"proj_prod"}, []string{"admin"},
		func(c *identity.MintClaims) { c.Now = time.Now().Add(-2 * time.Hour) })
	header, payload, _ := cut3(good)
	tampered := header + "." + flipLast(payload) + "." + sigOf(good)
	unsigned := "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + payload + "."

	tokens := map[string]string{"tampered": tampered, "expired": expired,
		"unsigned": unsigned, "signed by another key": foreign, "garbage": "not-a-token"}
	tokens["not a bearer token"] = ""
	for name, tok := range tokens {
		t.Run(name, func(t *testing.T) {
			auth := "Bearer " + tok
			if tok == "" {
				auth = "Basic YWNtZTpwdw=="
			}
			bodies := map[string]string{}
			for _, p := range []string{"/p/proj_prod/traces",
				"/p/proj_prod/traces/evt-acme-shared", "/p/proj_support/traces",
				"/p/no-such-project/traces/evt-none", "/api/p/proj_prod/traces",
				"/api/p/no-such-project/traces"} {
				req, _ := http.NewRequest(http.MethodGet, base+p, nil)
				req.Header.Set("Authorization", auth)
				resp, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				body := readAll(t, resp)
				require.Equal(t, http.StatusUnauthorized, resp.StatusCode, p)
				require.Equal(t, `Bearer error="invalid_token"`,
					resp.Header.Get("WWW-Authenticate"), p)
				kind := "page"
				if strings.HasPrefix(p, "/api/") {
					kind = "api"
				}
				if want, ok := bodies[kind]; ok {
					require.Equal(t, want, body, "same answer whatever %s names", p)
				}
				bodies[kind] = body
				require.NotContains(t, body, "evt-", "no decision of any tenant")
			}
		})
	}

	// A session cookie that no longer verifies sends the viewer to sign in,
	// with the same answer whatever the path names, and nothing of the page.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	signInAgain := func(t *testing.T, cookie *http.Cookie, path string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.AddCookie(cookie)
		resp, err := noFollow.Do(req)
		require.NoError(t, err)
		body := readAll(t, resp)
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		require.True(t, strings.HasPrefix(resp.Header.Get("Location"), "/signin"))
		require.NotContains(t, body, "data-testid", "no page content")
	}

	t.Run("forged session cookie", func(t *testing.T) {
		forged := &http.Cookie{Name: "obs_session", Value: "Zm9v.YmFy"}
		signInAgain(t, forged, "/p/proj_prod/traces")
		signInAgain(t, forged, "/p/no-such-project/traces")
	})

	t.Run("session outlives its token", func(t *testing.T) {
		short := e.token(t, "acme", []string{"proj_prod"}, []string{"admin"},
			func(c *identity.MintClaims) { c.TTL = 2 * time.Second })
		c := signIn(t, base, short)
		time.Sleep(2500 * time.Millisecond)
		u, _ := url.Parse(base)
		var session *http.Cookie
		for _, ck := range c.Jar.Cookies(u) {
			if ck.Name == "obs_session" {
				session = ck
			}
		}
		require.NotNil(t, session)
		signInAgain(t, session, "/p/proj_prod/traces/evt-acme-shared")
	})

	t.Run("a valid bearer token works", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, base+"/p/proj_prod/traces/evt-acme-shared", nil)
		req.Header.Set("Authorization", "Bearer "+good)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		readAll(t, resp)
		require.Equal(t, http.StatusOK, resp.StatusCode)
	})
}
