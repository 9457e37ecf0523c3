package web_test

import (
	"context"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/PuerkitoBio/goquery"
	"github.com/stretchr/testify/require"
)

// signinForm loads the paste-a-token form and returns its hidden fields.
func signinForm(t *testing.T, c *http.Client, u string) url.Values {
	t.Helper()
	status, doc := getDoc(t, c, u)
	require.Equal(t, http.StatusOK, status)
	vals := url.Values{}
	doc.Find(`form[action="/signin"] input[type=hidden]`).Each(func(_ int, s *goquery.Selection) {
		vals.Set(s.AttrOr("name", ""), s.AttrOr("value", ""))
	})
	require.NotEmpty(t, vals.Get("csrf"))
	return vals
}

func TestSigninRedirectsOnlyOnSite(t *testing.T) {
	e := newEnv(t)
	tok := e.token(t, "acme", []string{"proj_prod"}, []string{"viewer"})
	cases := map[string]string{
		"/p/proj_prod/traces?outcome=blocked": "/p/proj_prod/traces?outcome=blocked",
		"https://evil.example/":               "/",
		"//evil.example/x":                    "/",
		"/\\evil.example":                     "/",
		"javascript:alert(1)":                 "/",
		"/%0d%0aSet-Cookie:x=1":               "/%0d%0aSet-Cookie:x=1",
		"":                                    "/",
	}
	for next, want := range cases {
		t.Run(next, func(t *testing.T) {
			jar, _ := cookiejar.New(nil)
			c := noRedirect(jar)
			vals := signinForm(t, c, e.srv.URL+"/signin?next="+url.QueryEscape(next))
			vals.Set("token", tok)
			resp, err := c.PostForm(e.srv.URL+"/signin", vals)
			require.NoError(t, err)
			readAll(t, resp)
			require.Equal(t, http.StatusSeeOther, resp.StatusCode)
			require.Equal(t, want, resp.Header.Get("Location"))
		})
	}
}

func TestSigninNeedsCSRFAndAValidToken(t *testing.T) {
	e := newEnv(t)
	tok := e.token(t, "acme", []string{"proj_prod"}, []string{"viewer"})
	jar, _ := cookiejar.New(nil)
	c := noRedirect(jar)
	vals := signinForm(t, c, e.srv.URL+"/signin")

	resp, err := c.PostForm(e.srv.URL+"/signin", url.Values{"token": {tok}})
	require.NoError(t, err)
	readAll(t, resp)
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "no CSRF token")

	vals.Set("token", tok+"x")
	resp, err = c.PostForm(e.srv.URL+"/signin", vals)
	require.NoError(t, err)
	body := readAll(t, resp)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Contains(t, body, "could not be verified")
	require.NotContains(t, body, "signature", "the verifier's own error stays in the log")

	status, _ := get(t, c, e.srv.URL+"/signin?token=garbage")
	require.Equal(t, http.StatusUnauthorized, status)
}

func TestSessionCookieFlagsAndSignout(t *testing.T) {
	e := newEnv(t)
	srv, err := e.server(context.Background(), false)
	require.NoError(t, err)
	defer srv.Close()
	tok := e.token(t, "acme", []string{"proj_prod"}, []string{"viewer"})

	jar, _ := cookiejar.New(nil)
	c := noRedirect(jar)
	resp, err := c.Get(srv.URL + "/signin")
	require.NoError(t, err)
	readAll(t, resp)
	var csrf *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "obs_csrf" {
			csrf = ck
		}
	}
	require.NotNil(t, csrf)
	form := url.Values{"token": {tok}, "csrf": {csrf.Value}}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/signin", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(csrf)
	resp, err = http.DefaultTransport.RoundTrip(req)
	require.NoError(t, err)
	readAll(t, resp)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	var session *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "obs_session" {
			session = ck
		}
	}
	require.NotNil(t, session)
	require.True(t, session.Secure)
	require.True(t, session.HttpOnly)
	require.Equal(t, http.SameSiteLaxMode, session.SameSite)

	// Sign-out is a form with a CSRF token; without it nothing happens.
	get := func() *http.Response {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
		req.AddCookie(session)
		resp, err := http.DefaultTransport.RoundTrip(req)
		require.NoError(t, err)
		return resp
	}
	resp = get()
	doc, err := goquery.NewDocumentFromReader(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	token := doc.Find(`form[action="/signout"] input[name=csrf]`).AttrOr("value", "")
	require.NotEmpty(t, token)

	post := func(v url.Values) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/signout",
			strings.NewReader(v.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(session)
		resp, err := http.DefaultTransport.RoundTrip(req)
		require.NoError(t, err)
		readAll(t, resp)
		return resp
	}
	require.Equal(t, http.StatusForbidden, post(url.Values{"csrf": {"forged"}}).StatusCode)
	resp = post(url.Values{"csrf": {token}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	cleared := false
	for _, ck := range resp.Cookies() {
		cleared = cleared || (ck.Name == "obs_session" && ck.MaxAge < 0)
	}
	require.True(t, cleared)
}

func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t)
	resp, err := http.Get(e.srv.URL + "/signin")
	require.NoError(t, err)
	readAll(t, resp)
	csp := resp.Header.Get("Content-Security-Policy")
	require.Contains(t, csp, "script-src 'self'")
	require.NotContains(t, csp, "unsafe-inline")
	require.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
	require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
}
