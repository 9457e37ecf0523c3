package web_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/go-json-experiment/json"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/alert"
	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/identity"
	"github.com/guardwatch/observatory/internal/testenv"
	"github.com/guardwatch/observatory/web"
)

// alertEnv is an observatory with alerts on: real ClickHouse, real NATS
// KV buckets, real Cedar policies and a real receiver for test sends.
type alertEnv struct {
	*env
	srv   *httptest.Server
	store *alert.Store
	hooks *hookReceiver
}

// newAlertEnv builds the env; allow is the webhook allow-list.
func newAlertEnv(t *testing.T, allow ...string) *alertEnv {
	t.Helper()
	e := newEnv(t)
	ns := testenv.NATS(t)
	nc, err := nats.Connect(ns.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	prefixes, err := alert.ParseCIDRs(allow)
	require.NoError(t, err)
	guard := alert.NewGuard(prefixes)
	st, err := alert.OpenStore(ctx, js, alert.StoreConfig{Guard: guard})
	require.NoError(t, err)
	sender, err := alert.NewSender(alert.SenderConfig{Guard: guard, JS: js,
		Retry: alert.RetryPolicy{MaxAttempts: 2, Initial: 10 * time.Millisecond,
			MaxElapsed: 5 * time.Second, AttemptTimeout: 2 * time.Second}})
	require.NoError(t, err)

	v, err := identity.NewVerifier(ctx, identity.Config{
		JWKSFile: filepath.Join(e.keyDir, identity.DevJWKSFile)})
	require.NoError(t, err)
	eng, err := authz.Load(filepath.Join("..", "policies"), nil)
	require.NoError(t, err)
	h, err := web.NewServer(web.Deps{Store: e.st, Verifier: v, Authz: eng,
		SessionSecret: []byte("web-test-secret-0123456789abcdef-0123"), InsecureCookies: true,
		Logger: slog.New(slog.DiscardHandler),
		Alerts: &web.AlertDeps{Store: st, Sender: sender}})
	require.NoError(t, err)
	a := &alertEnv{env: e, srv: httptest.NewServer(h), store: st, hooks: newHookReceiver(t)}
	t.Cleanup(a.srv.Close)
	return a
}

// hookReceiver records the webhooks it gets.
type hookReceiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []*http.Request
	bod [][]byte
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.got, h.bod = append(h.got, r), append(h.bod, b)
		h.mu.Unlock()
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookReceiver) last() (*http.Request, []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.got) == 0 {
		return nil, nil
	}
	return h.got[len(h.got)-1], h.bod[len(h.bod)-1]
}

// call makes an API request with a bearer token (or none) and returns
// status and body.
func call(t *testing.T, c *http.Client, method, u, token, body string,
	hdr ...string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	return resp.StatusCode, readAll(t, resp)
}

func specJSON(name, target string) string {
	return `{"name":"` + name + `","match":{"outcome":"blocked","severity":"high"},` +
		`"threshold":3,"window":"5m","group_by":"user","cooldown":"10m",` +
		`"channel":{"type":"webhook","url":"` + target + `"}}`
}

type created struct {
	Subscription alert.Subscription `json:"subscription"`
	Secret       string             `json:"secret"`
}

func TestAlertAPILifecycle(t *testing.T) {
	a := newAlertEnv(t, "127.0.0.1/32")
	tok := a.token(t, "acme", []string{"proj_prod"}, []string{"admin"})
	base := a.srv.URL + "/api/p/proj_prod/alerts"

	status, body := call(t, nil, "POST", base, tok, specJSON("Injections", a.hooks.srv.URL))
	require.Equal(t, http.StatusCreated, status, body)
	var c created
	require.NoError(t, json.Unmarshal([]byte(body), &c))
	require.Regexp(t, `^whsec_`, c.Secret)
	sub := c.Subscription
	require.Equal(t, "acme", sub.AccountID)
	require.Equal(t, 3, sub.Threshold)
	require.Equal(t, alert.Duration(5*time.Minute), sub.Window)

	for _, u := range []string{base, base + "/" + sub.ID, base + "/" + sub.ID + "/deliveries"} {
		status, body = call(t, nil, "GET", u, tok, "")
		require.Equal(t, http.StatusOK, status, u)
		require.NotContains(t, body, c.Secret, "the secret is returned only at creation")
	}

	upd := strings.Replace(specJSON("Injections v2", a.hooks.srv.URL), `"threshold":3`,
		`"threshold":4`, 1)
	status, body = call(t, nil, "PUT", base+"/"+sub.ID, tok, upd)
	require.Equal(t, http.StatusOK, status, body)
	require.Contains(t, body, `"threshold":4`)
	require.Contains(t, body, `"version":2`)
	require.NotContains(t, body, c.Secret)

	// A test send reaches the receiver, signed with the secret.
	status, body = call(t, nil, "POST", base+"/"+sub.ID+"/test", tok, "")
	require.Equal(t, http.StatusOK, status, body)
	require.Contains(t, body, `"status":"delivered"`)
	req, raw := a.hooks.last()
	require.NotNil(t, req)
	m := hmac.New(sha256.New, []byte(c.Secret))
	m.Write([]byte(req.Header.Get(alert.HeaderTimestamp) + "."))
	m.Write(raw)
	require.Equal(t, "v1="+hex.EncodeToString(m.Sum(nil)), req.Header.Get(alert.HeaderSignature))
	require.Contains(t, string(raw), `"test":true`)

	status, body = call(t, nil, "GET", base+"/"+sub.ID+"/deliveries", tok, "")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, body, `"test":true`)

	status, _ = call(t, nil, "DELETE", base+"/"+sub.ID, tok, "")
	require.Equal(t, http.StatusNoContent, status)
	status, body = call(t, nil, "GET", base+"/"+sub.ID, tok, "")
	require.Equal(t, http.StatusNotFound, status)
	require.JSONEq(t, `{"error":"not found"}`, body)
}

func TestAlertAPIAnswersOtherTenantsLikeNotFound(t *testing.T) {
	a := newAlertEnv(t, "127.0.0.1/32")
	acme := a.token(t, "acme", []string{"proj_prod", "proj_staging"}, []string{"admin"})
	status, body := call(t, nil, "POST", a.srv.URL+"/api/p/proj_prod/alerts", acme,
		specJSON("acme only", a.hooks.srv.URL))
	require.Equal(t, http.StatusCreated, status, body)
	var c created
	require.NoError(t, json.Unmarshal([]byte(body), &c))
	id := c.Subscription.ID

	_, want := call(t, nil, "GET", a.srv.URL+"/api/p/proj_prod/alerts/sub_00000000000000000000",
		acme, "")
	globex := a.token(t, "globex", []string{"proj_prod", "support-bot"}, []string{"admin"})
	viewer := a.token(t, "acme", []string{"proj_prod"}, []string{"viewer"})
	spec := specJSON("x", a.hooks.srv.URL)
	cases := []struct {
		name, token, method, path, body string
	}{
		{"same project id in another account", globex, "GET", "/api/p/proj_prod/alerts/" + id, ""},
		{"update from another account", globex, "PUT", "/api/p/proj_prod/alerts/" + id, spec},
		{"delete from another account", globex, "DELETE", "/api/p/proj_prod/alerts/" + id, ""},
		{"test from another account", globex, "POST",
			"/api/p/proj_prod/alerts/" + id + "/test", ""},
		{"deliveries from another account", globex, "GET",
			"/api/p/proj_prod/alerts/" + id + "/deliveries", ""},
		{"another account's project", acme, "GET", "/api/p/support-bot/alerts", ""},
		{"create in another account's project", acme, "POST", "/api/p/support-bot/alerts", spec},
		{"free tier project", acme, "GET", "/api/p/proj_staging/alerts", ""},
		{"create in a free tier project", acme, "POST", "/api/p/proj_staging/alerts", spec},
		{"the id under another project", acme, "GET", "/api/p/proj_staging/alerts/" + id, ""},
		{"viewer role lists", viewer, "GET", "/api/p/proj_prod/alerts", ""},
		{"viewer role reads", viewer, "GET", "/api/p/proj_prod/alerts/" + id, ""},
		{"viewer role creates", viewer, "POST", "/api/p/proj_prod/alerts", spec},
		{"a key wildcard as id", acme, "GET", "/api/p/proj_prod/alerts/*", ""},
		{"a key level as id", acme, "GET", "/api/p/proj_prod/alerts/" + id + ".x", ""},
		{"an unknown API path", acme, "GET", "/api/p/proj_prod/nothing", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := call(t, nil, tc.method, a.srv.URL+tc.path, tc.token, tc.body)
			require.Equal(t, http.StatusNotFound, status)
			require.Equal(t, want, body)
		})
	}
	// A forged token gets one 401, whichever project's alerts it asks for.
	forged := acme[:len(acme)-2] + "xx"
	s1, b1 := call(t, nil, "GET", a.srv.URL+"/api/p/proj_prod/alerts", forged, "")
	s2, b2 := call(t, nil, "GET", a.srv.URL+"/api/p/no-such/alerts/"+id, forged, "")
	require.Equal(t, http.StatusUnauthorized, s1)
	require.Equal(t, s1, s2)
	require.Equal(t, b1, b2)

	// Nothing changed for the owner.
	status, body = call(t, nil, "GET", a.srv.URL+"/api/p/proj_prod/alerts/"+id, acme, "")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, body, `"name":"acme only"`)
}

func TestAlertTargetsAreChecked(t *testing.T) {
	a := newAlertEnv(t) // no allow-list
	tok := a.token(t, "acme", []string{"proj_prod"}, []string{"admin"})
	for _, target := range []string{
		a.hooks.srv.URL, "http://127.0.0.1:8080/hook", "http://169.254.169.254/latest",
		"http://[::ffff:10.0.0.1]/hook", "http://localhost:9000/hook",
		"http://100.100.100.200/", "http://[::1]/", "https://user:pw@93.184.215.14/",
		"gopher://93.184.215.14/",
	} {
		t.Run(target, func(t *testing.T) {
			status, body := call(t, nil, "POST", a.srv.URL+"/api/p/proj_prod/alerts", tok,
				specJSON("x", target))
			require.Equal(t, http.StatusBadRequest, status, body)
			require.Contains(t, body, `"field":"channel.url"`)
		})
	}
	status, body := call(t, nil, "GET", a.srv.URL+"/api/p/proj_prod/alerts", tok, "")
	require.Equal(t, http.StatusOK, status)
	require.JSONEq(t, `{"subscriptions":[]}`, body)
}

func TestAlertAPIRefusesMalformedBodies(t *testing.T) {
	a := newAlertEnv(t, "127.0.0.1/32")
	tok := a.token(t, "acme", []string{"proj_prod"}, []string{"admin"})
	u := a.srv.URL + "/api/p/proj_prod/alerts"
	good := specJSON("x", a.hooks.srv.URL)
	cases := map[string]struct {
		body, ctype string
		status      int
	}{
		"unknown field": {strings.Replace(good, `"name"`, `"secret":"mine","name"`, 1), "", 400},
		"duplicate key": {strings.Replace(good, `"name":"x"`, `"name":"x","name":"y"`, 1),
			"", 400},
		"trailing data":   {good + `{}`, "", 400},
		"wrong type":      {strings.Replace(good, `"threshold":3`, `"threshold":"3"`, 1), "", 400},
		"bad duration":    {strings.Replace(good, `"5m"`, `"five"`, 1), "", 400},
		"bad match field": {strings.Replace(good, `"severity":"high"`, `"q":"x"`, 1), "", 400},
		"form body":       {"name=x", "application/x-www-form-urlencoded", 415},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			hdr := []string{}
			if tc.ctype != "" {
				hdr = []string{"Content-Type", tc.ctype}
			}
			status, body := call(t, nil, "POST", u, tok, tc.body, hdr...)
			require.Equal(t, tc.status, status, body)
			require.True(t, strings.HasPrefix(body, `{"error":`), body)
		})
	}
}

func TestAlertAPIWithSessionCookieNeedsCSRF(t *testing.T) {
	a := newAlertEnv(t, "127.0.0.1/32")
	tok := a.token(t, "acme", []string{"proj_prod"}, []string{"admin"})
	c := signIn(t, a.srv.URL, tok)
	u := a.srv.URL + "/api/p/proj_prod/alerts"
	spec := specJSON("cookie", a.hooks.srv.URL)

	status, _ := call(t, c, "POST", u, "", spec)
	require.Equal(t, http.StatusForbidden, status)
	status, _ = call(t, c, "POST", u, "", spec, "X-CSRF-Token", "forged")
	require.Equal(t, http.StatusForbidden, status)

	_, doc := getDoc(t, c, a.srv.URL+"/p/proj_prod/alerts")
	token := doc.Find(`[data-testid=alert-form] input[name=csrf]`).AttrOr("value", "")
	require.NotEmpty(t, token)
	status, body := call(t, c, "POST", u, "", spec, "X-CSRF-Token", token)
	require.Equal(t, http.StatusCreated, status, body)

	// Reads need no token; without any credential the API asks for one.
	status, _ = call(t, c, "GET", u, "", "")
	require.Equal(t, http.StatusOK, status)
	status, _ = call(t, nil, "GET", u, "", "")
	require.Equal(t, http.StatusUnauthorized, status)
}

func TestAlertPages(t *testing.T) {
	a := newAlertEnv(t, "127.0.0.1/32")
	base := a.srv.URL
	c := signIn(t, base, a.token(t, "acme", []string{"proj_prod"}, []string{"admin"}))

	status, doc := getDoc(t, c, base+"/p/proj_prod")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, 1, doc.Find(`.projnav a[href="/p/proj_prod/alerts"]`).Length(), "nav link")

	status, doc = getDoc(t, c, base+"/p/proj_prod/alerts")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, 1, doc.Find(`[data-testid=empty]`).Length())
	form := formValues(doc, `[data-testid=alert-form]`)
	form.Set("name", "Blocked injections")
	form.Set("category", "prompt_injection")
	form.Set("url", a.hooks.srv.URL+"/hook")

	// A refused target re-renders the form with the problem.
	bad := cloneValues(form)
	bad.Set("url", "http://169.254.169.254/")
	status, doc = postDoc(t, c, base+"/p/proj_prod/alerts", bad)
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, text(doc.Find(`[data-testid=form-error]`)), "channel.url")
	require.Equal(t, "Blocked injections",
		doc.Find(`[data-testid=alert-form] input[name=name]`).AttrOr("value", ""))

	// Without the CSRF token nothing is created.
	nocsrf := cloneValues(form)
	nocsrf.Del("csrf")
	status, _ = postDoc(t, c, base+"/p/proj_prod/alerts", nocsrf)
	require.Equal(t, http.StatusForbidden, status)

	status, doc = postDoc(t, c, base+"/p/proj_prod/alerts", form)
	require.Equal(t, http.StatusCreated, status)
	secret := text(doc.Find(`[data-testid=secret-value]`))
	require.Regexp(t, `^whsec_`, secret)
	require.Contains(t, text(doc.Find(`[data-testid=alert-summary]`)),
		"category = prompt_injection")

	status, doc = getDoc(t, c, base+"/p/proj_prod/alerts")
	require.Equal(t, http.StatusOK, status)
	rows := doc.Find(`[data-testid=alert-row]`)
	require.Equal(t, 1, rows.Length())
	href := rows.Find("a").AttrOr("href", "")
	status, body := get(t, c, base+href)
	require.Equal(t, http.StatusOK, status)
	require.NotContains(t, body, secret, "the secret is shown once")

	// The test button sends a sample and the delivery is listed.
	doc, err := goquery.NewDocumentFromReader(strings.NewReader(body))
	require.NoError(t, err)
	status, doc = postDoc(t, c, base+href+"/test", url.Values{
		"csrf": {doc.Find(`form[action$="/test"] input[name=csrf]`).AttrOr("value", "")}})
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, text(doc.Find(`[data-testid=notice]`)), "Test alert delivered")
	require.Equal(t, 1, doc.Find(`[data-testid=delivery]`).Length())
	req, _ := a.hooks.last()
	require.NotNil(t, req)

	// Edit, then delete.
	edit := formValues(doc, `[data-testid=alert-form]`)
	edit.Set("threshold", "5")
	resp, err := c.PostForm(base+href, edit)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	_, doc = getDoc(t, c, base+href)
	require.Contains(t, text(doc.Find(`[data-testid=alert-summary]`)), "5 matches within 1m")

	resp, err = c.PostForm(base+href+"/delete", url.Values{"csrf": {edit.Get("csrf")}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	status, _ = get(t, c, base+href)
	require.Equal(t, http.StatusNotFound, status)
}

func TestAlertPagesAnswerOtherTenantsLikeNotFound(t *testing.T) {
	a := newAlertEnv(t, "127.0.0.1/32")
	base := a.srv.URL
	acme := a.token(t, "acme", []string{"proj_prod"}, []string{"admin"})
	_, body := call(t, nil, "POST", base+"/api/p/proj_prod/alerts", acme,
		specJSON("acme only", a.hooks.srv.URL))
	var c created
	require.NoError(t, json.Unmarshal([]byte(body), &c))
	id := c.Subscription.ID

	globex := signIn(t, base, a.token(t, "globex", []string{"proj_prod", "support-bot"},
		[]string{"admin"}))
	wantStatus, want := get(t, globex, base+"/p/proj_prod/traces/evt-does-not-exist")
	require.Equal(t, http.StatusNotFound, wantStatus)
	for _, p := range []string{"/p/proj_prod/alerts/" + id, "/p/proj_prod/alerts/" + id + ".x",
		"/p/proj_staging/alerts", "/p/support-bot/alerts/" + id} {
		status, got := get(t, globex, base+p)
		require.Equal(t, wantStatus, status, p)
		require.Equal(t, want, got, p)
	}
	// Posting to another tenant's subscription: the same answer, no effect.
	_, doc := getDoc(t, globex, base+"/p/support-bot/alerts")
	csrf := doc.Find(`input[name=csrf]`).First().AttrOr("value", "")
	for _, p := range []string{"/p/proj_prod/alerts/" + id + "/delete",
		"/p/proj_prod/alerts/" + id + "/test", "/p/proj_prod/alerts/" + id} {
		resp, err := globex.PostForm(base+p, url.Values{"csrf": {csrf}, "name": {"x"}})
		require.NoError(t, err)
		require.Equal(t, wantStatus, resp.StatusCode, p)
		require.Equal(t, want, readAll(t, resp), p)
	}
	status, _ := call(t, nil, "GET", base+"/api/p/proj_prod/alerts/"+id, acme, "")
	require.Equal(t, http.StatusOK, status)
	require.Nil(t, func() *http.Request { r, _ := a.hooks.last(); return r }(),
		"no test alert was sent")

	// A viewer sees no alerts link and no alerts page.
	viewer := signIn(t, base, a.token(t, "acme", []string{"proj_prod"}, []string{"viewer"}))
	_, doc = getDoc(t, viewer, base+"/p/proj_prod")
	require.Equal(t, 0, doc.Find(`.projnav a[href="/p/proj_prod/alerts"]`).Length())
	status, got := get(t, viewer, base+"/p/proj_prod/alerts")
	require.Equal(t, http.StatusNotFound, status)
	_, want = get(t, viewer, base+"/p/proj_prod/traces/evt-does-not-exist")
	require.Equal(t, want, got)
}

// formValues collects the named fields of a form as a browser would
// submit them.
func formValues(doc *goquery.Document, sel string) url.Values {
	v := url.Values{}
	form := doc.Find(sel).First()
	form.Find("input").Each(func(_ int, s *goquery.Selection) {
		name := s.AttrOr("name", "")
		if name == "" {
			return
		}
		if typ := s.AttrOr("type", ""); typ == "checkbox" {
			if _, on := s.Attr("checked"); on {
				v.Set(name, s.AttrOr("value", "on"))
			}
			return
		}
		v.Set(name, s.AttrOr("value", ""))
	})
	form.Find("select").Each(func(_ int, s *goquery.Selection) {
		opt := s.Find("option[selected]").First()
		if opt.Length() == 0 {
			opt = s.Find("option").First()
		}
		v.Set(s.AttrOr("name", ""), opt.AttrOr("value", ""))
	})
	return v
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

func postDoc(t *testing.T, c *http.Client, u string, v url.Values) (int, *goquery.Document) {
	t.Helper()
	resp, err := c.Post(u, "application/x-www-form-urlencoded",
		bytes.NewReader([]byte(v.Encode())))
	require.NoError(t, err)
	doc, err := goquery.NewDocumentFromReader(strings.NewReader(readAll(t, resp)))
	require.NoError(t, err)
	return resp.StatusCode, doc
}
