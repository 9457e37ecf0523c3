package web_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/export"
	"github.com/guardwatch/observatory/internal/identity"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/web"
)

// exportEnv is the test environment with exports on.
type exportEnv struct {
	*env
	base string
	exp  *export.Exporter
}

func newExportEnv(t *testing.T) *exportEnv {
	t.Helper()
	e := newEnv(t)
	dir := t.TempDir()
	require.NoError(t, export.GenerateKey(dir))
	key, err := export.LoadSigningKey(filepath.Join(dir, export.SigningKeyFile))
	require.NoError(t, err)
	exp, err := export.New(export.Config{Store: e.st, SigningKey: key,
		Settle: time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	v, err := identity.NewVerifier(context.Background(), identity.Config{
		JWKSFile: filepath.Join(e.keyDir, identity.DevJWKSFile)})
	require.NoError(t, err)
	eng, err := authz.Load(filepath.Join("..", "policies"), nil)
	require.NoError(t, err)
	h, err := web.NewServer(web.Deps{Store: e.st, Verifier: v, Authz: eng,
		SessionSecret:   []byte("web-test-secret-0123456789abcdef-0123"),
		InsecureCookies: true, Logger: slog.New(slog.DiscardHandler), Exports: exp})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &exportEnv{env: e, base: srv.URL, exp: exp}
}

// exportForm opens the export page at u and returns the download form's
// target and fields.
func exportForm(t *testing.T, c *http.Client, u string) (string, url.Values) {
	t.Helper()
	status, doc := getDoc(t, c, u)
	require.Equal(t, http.StatusOK, status)
	form := doc.Find(`[data-testid=export-form]`)
	require.Equal(t, 1, form.Length())
	vals := url.Values{}
	form.Find("input[type=hidden]").Each(func(_ int, s *goquery.Selection) {
		vals.Add(s.AttrOr("name", ""), s.AttrOr("value", ""))
	})
	return form.AttrOr("action", ""), vals
}

func post(t *testing.T, c *http.Client, u string, vals url.Values) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.PostForm(u, vals)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b
}

func TestExportFromTheTracesPage(t *testing.T) {
	e := newExportEnv(t)
	c := signIn(t, e.base, e.token(t, "acme", []string{"proj_prod"}, []string{"auditor"}))

	status, doc := getDoc(t, c, e.base+"/p/proj_prod/traces?range=24h&outcome=blocked")
	require.Equal(t, http.StatusOK, status)
	link := doc.Find(`[data-testid=export]`)
	require.Equal(t, 1, link.Length(), "the traces page offers an export")
	action, vals := exportForm(t, c, e.base+link.AttrOr("href", ""))
	require.Equal(t, "/p/proj_prod/export", action)
	require.Equal(t, "blocked", vals.Get("outcome"))
	from, err := time.Parse(time.RFC3339Nano, vals.Get("from"))
	require.NoError(t, err)
	to, err := time.Parse(time.RFC3339Nano, vals.Get("to"))
	require.NoError(t, err)
	require.Equal(t, 24*time.Hour, to.Sub(from), "the page fixes the preset as exact times")

	vals.Set("format", "csv")
	resp, body := post(t, c, e.base+action, vals)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.Contains(t, resp.Header.Get("Content-Disposition"), "attachment")
	id := resp.Header.Get("X-Export-Id")
	require.Contains(t, resp.Header.Get("Content-Disposition"), id)

	// Every blocked decision of acme/proj_prod in the range, not a page.
	var want []string
	for _, ev := range e.events["acme/proj_prod"] {
		if ev.Outcome == "blocked" && !ev.OccurredAt.Before(from) && ev.OccurredAt.Before(to) {
			want = append(want, ev.EventID)
		}
	}
	rows, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	require.NoError(t, err)
	var got []string
	for _, r := range rows[1:] {
		got = append(got, r[1])
		require.Equal(t, "acme", r[3])
		require.Equal(t, "proj_prod", r[4])
		require.Equal(t, "blocked", r[18])
	}
	require.ElementsMatch(t, want, got)
	require.Greater(t, len(got), 0)

	// The manifest is on the exports page and verifies the file.
	status, doc = getDoc(t, c, e.base+"/p/proj_prod/exports")
	require.Equal(t, http.StatusOK, status)
	row := doc.Find(`[data-testid=export-row][data-export="` + id + `"]`)
	require.Equal(t, 1, row.Length())
	murl := row.Find(`[data-testid=manifest-link]`).AttrOr("href", "")
	status, manifest := get(t, c, e.base+murl)
	require.Equal(t, http.StatusOK, status)
	status, pem := get(t, c, e.base+doc.Find(`[data-testid=public-key]`).AttrOr("href", ""))
	require.Equal(t, http.StatusOK, status)
	pub, err := export.ParsePublicKey([]byte(pem))
	require.NoError(t, err)
	m, err := export.Verify(bytes.NewReader(body), []byte(manifest), pub)
	require.NoError(t, err)
	require.Equal(t, "tester@acme", m.ExportedBy)
	require.Equal(t, "outcome=blocked", m.Filter)
	require.EqualValues(t, len(got), m.Rows)
}

func TestExportNeedsTheFormToken(t *testing.T) {
	e := newExportEnv(t)
	c := signIn(t, e.base, e.token(t, "acme", []string{"proj_prod"}, []string{"auditor"}))
	action, vals := exportForm(t, c, e.base+"/p/proj_prod/export?range=1h")
	vals.Set("format", "ndjson")
	vals.Set("csrf", "forged")
	resp, _ := post(t, c, e.base+action, vals)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	recs, err := e.st.ListExports(t.Context(), mustScope(t, "acme", "proj_prod"), "", 10)
	require.NoError(t, err)
	require.Empty(t, recs, "nothing ran")
}

// A viewer whose token names a project, and forged form fields naming
// another tenant, still export only the project the URL names within
// the viewer's own account.
func TestExportIgnoresForgedTenantFields(t *testing.T) {
	e := newExportEnv(t)
	c := signIn(t, e.base, e.token(t, "acme", []string{"proj_prod"}, []string{"auditor"}))
	action, vals := exportForm(t, c, e.base+"/p/proj_prod/export?range=24h")
	for k, v := range map[string]string{"account_id": "globex", "account": "globex",
		"project_id": "support-bot", "project": "proj_staging", "tenant": "globex/proj_prod",
		"format": "ndjson"} {
		vals.Set(k, v)
	}
	resp, body := post(t, c, e.base+action, vals)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	lines := strings.Split(strings.TrimSpace(string(body)), "\n")
	require.Len(t, lines, len(e.events["acme/proj_prod"]))
	require.NotContains(t, string(body), `"account_id":"globex"`)
	require.NotContains(t, string(body), "proj_staging")
}

func TestExportForbiddenLooksLikeNotFound(t *testing.T) {
	e := newExportEnv(t)
	auditor := signIn(t, e.base, e.token(t, "acme", []string{"proj_prod", "proj_staging"},
		[]string{"auditor"}))
	viewer := signIn(t, e.base, e.token(t, "acme", []string{"proj_prod"}, []string{"viewer"}))
	wantStatus, wantBody := notFound(t, auditor, e.base)

	_, vals := exportForm(t, auditor, e.base+"/p/proj_prod/export?range=24h")
	vals.Set("format", "csv")
	try := func(t *testing.T, c *http.Client, path string) {
		t.Helper()
		status, body := get(t, c, e.base+path+"/export?range=24h")
		require.Equal(t, wantStatus, status, path)
		require.Equal(t, wantBody, body, path)
		resp, b := post(t, c, e.base+path+"/export", vals)
		require.Equal(t, wantStatus, resp.StatusCode, path)
		require.Equal(t, wantBody, string(b), path)
		for _, sub := range []string{"/exports", "/exports/public-key",
			"/exports/exp_00000000000000000000/manifest"} {
			status, body := get(t, c, e.base+path+sub)
			require.Equal(t, wantStatus, status, path+sub)
			require.Equal(t, wantBody, body, path+sub)
		}
	}
	t.Run("another account's project", func(t *testing.T) { try(t, auditor, "/p/support-bot") })
	t.Run("a project of no one", func(t *testing.T) { try(t, auditor, "/p/proj_secret") })
	t.Run("an account id as project", func(t *testing.T) { try(t, auditor, "/p/globex") })
	t.Run("a free tier project", func(t *testing.T) { try(t, auditor, "/p/proj_staging") })
	t.Run("a viewer without export_audit", func(t *testing.T) { try(t, viewer, "/p/proj_prod") })
	for _, id := range []string{".", "..", "*", ">", "a.b", "proj_prod.>", "proj_prod*",
		"..%2fproj_prod", "a b", "proj_prod\x00"} {
		t.Run("project id "+url.QueryEscape(id), func(t *testing.T) {
			try(t, auditor, "/p/"+url.PathEscape(id))
		})
	}

	// No export ran for any of them.
	for _, p := range []string{"proj_prod", "proj_staging"} {
		recs, err := e.st.ListExports(t.Context(), mustScope(t, "acme", p), "", 10)
		require.NoError(t, err)
		require.Empty(t, recs, p)
	}
	status, doc := getDoc(t, viewer, e.base+"/p/proj_prod/traces")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, 0, doc.Find(`[data-testid=export]`).Length(), "no export button")
}

func TestExportLogShowsAdminsEveryExportAndOthersTheirOwn(t *testing.T) {
	e := newExportEnv(t)
	alice := signIn(t, e.base, e.token(t, "acme", []string{"proj_prod"}, []string{"auditor"},
		func(c *identity.MintClaims) { c.Subject = "alice" }))
	bob := signIn(t, e.base, e.token(t, "acme", []string{"proj_prod"}, []string{"auditor"},
		func(c *identity.MintClaims) { c.Subject = "bob" }))
	admin := signIn(t, e.base, e.token(t, "acme", []string{"proj_prod"}, []string{"admin"},
		func(c *identity.MintClaims) { c.Subject = "root" }))
	ids := map[string]string{}
	for name, c := range map[string]*http.Client{"alice": alice, "bob": bob} {
		action, vals := exportForm(t, c, e.base+"/p/proj_prod/export?range=1h")
		vals.Set("format", "parquet")
		vals.Set("gzip", "1")
		resp, _ := post(t, c, e.base+action, vals)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "application/gzip", resp.Header.Get("Content-Type"))
		ids[name] = resp.Header.Get("X-Export-Id")
	}
	rowsOf := func(c *http.Client) map[string]string {
		status, doc := getDoc(t, c, e.base+"/p/proj_prod/exports")
		require.Equal(t, http.StatusOK, status)
		out := map[string]string{}
		doc.Find(`[data-testid=export-row]`).Each(func(_ int, s *goquery.Selection) {
			out[s.AttrOr("data-export", "")] = text(s)
		})
		return out
	}
	all := rowsOf(admin)
	require.Len(t, all, 2)
	require.Contains(t, all[ids["alice"]], "alice")
	require.Contains(t, all[ids["alice"]], "parquet.gz")
	require.Contains(t, all[ids["bob"]], "bob")
	mine := rowsOf(alice)
	require.Len(t, mine, 1)
	require.Contains(t, mine, ids["alice"])

	// Bob's manifest: his and the admin's to read, not alice's.
	murl := "/p/proj_prod/exports/" + ids["bob"] + "/manifest"
	for name, c := range map[string]*http.Client{"bob": bob, "admin": admin} {
		status, _ := get(t, c, e.base+murl)
		require.Equal(t, http.StatusOK, status, name)
	}
	wantStatus, wantBody := notFound(t, alice, e.base)
	status, body := get(t, alice, e.base+murl)
	require.Equal(t, wantStatus, status)
	require.Equal(t, wantBody, body)
}

func TestExportPageStatesTheRange(t *testing.T) {
	e := newExportEnv(t)
	c := signIn(t, e.base, e.token(t, "acme", []string{"proj_prod"}, []string{"auditor"}))
	status, doc := getDoc(t, c, e.base+
		"/p/proj_prod/export?from=2025-03-01&to=2025-03-31&severity=high")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "2025-03-01T00:00:00.000Z", text(doc.Find(`[data-testid=export-from]`)))
	require.Equal(t, "2025-04-01T00:00:00.000Z", text(doc.Find(`[data-testid=export-to]`)),
		"a date-only end is the end of that day")
	summary := text(doc.Find(`[data-testid=export-summary]`))
	require.Contains(t, summary, "From (inclusive)")
	require.Contains(t, summary, "To (exclusive)")
	require.Contains(t, summary, "UTC")
	require.Contains(t, text(doc.Find(`[data-testid=export-filters]`)), "high")
	require.Contains(t, text(doc.Find(`[data-testid=export-range-rule]`)),
		"one at exactly the To time is not")

	// The upper bound: stored up to the start minus the settle delay, in UTC.
	bound := text(doc.Find(`[data-testid=export-bound]`))
	require.Contains(t, bound, "start minus "+e.exp.Settle().String())
	require.Regexp(t, `stored up to \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC`, bound)
	require.Contains(t, bound, "left out")

	// Projects have an Exports link for those who may export.
	require.Equal(t, 1, doc.Find(`[data-testid=nav-exports]`).Length())
	viewer := signIn(t, e.base, e.token(t, "acme", []string{"proj_prod"}, []string{"viewer"}))
	status, doc = getDoc(t, viewer, e.base+"/p/proj_prod/traces")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, 0, doc.Find(`[data-testid=nav-exports]`).Length())
}

func TestExportsOffWithoutAKey(t *testing.T) {
	e := newEnv(t)
	c := signIn(t, e.srv.URL, e.token(t, "acme", []string{"proj_prod"}, []string{"auditor"}))
	status, doc := getDoc(t, c, e.srv.URL+"/p/proj_prod/traces")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, 0, doc.Find(`[data-testid=export]`).Length())
	status, doc = getDoc(t, c, e.srv.URL+"/p/proj_prod/export?range=1h")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, 1, doc.Find(`[data-testid=export-disabled]`).Length())
}

func mustScope(t *testing.T, account, project string) store.Scope {
	t.Helper()
	sc, err := store.NewScope(account, project)
	require.NoError(t, err)
	return sc
}
