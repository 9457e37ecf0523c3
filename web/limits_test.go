package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/export"
	"github.com/guardwatch/observatory/internal/identity"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/tenant"
	"github.com/guardwatch/observatory/internal/tenant/tenanttest"
	"github.com/guardwatch/observatory/web"
)

// limitTiers are the tiers of the limit tests. globex/proj_prod is on pro,
// made small so that a handful of requests reaches each limit;
// acme/proj_prod is on enterprise, far from every limit; acme/proj_staging
// is on free as shipped.
const limitTiers = `
default: free
tiers:
  free:
    retention: 7d
    ingest: { events_per_second: 50, burst: 500 }
    query: { rows_per_page: 100, max_range: 7d, concurrent: 2 }
    export: { max_rows: 0 }
  pro:
    retention: 90d
    ingest: { events_per_second: 1000, burst: 10000 }
    query: { rows_per_page: 20, max_range: 6h, concurrent: 1 }
    export: { max_rows: 40, max_range: 6h, concurrent: 1, per_day: 2 }
  enterprise:
    retention: 400d
    ingest: { events_per_second: 10000, burst: 100000 }
    query: { rows_per_page: 1000, max_range: 90d, concurrent: 8 }
    export: { max_rows: 10000000, max_range: 90d, concurrent: 2, per_day: 50 }
`

// tierEnv is an observatory with tier limits: the repository's policies
// copied to a folder the test may change, limitTiers, exports on, and
// ClickHouse reached through a proxy that can hold globex's queries.
type tierEnv struct {
	*env
	base      string
	reg       *tenant.Registry
	root      string // the policy folder
	tiersFile string
	hold      *holdProxy
}

func newTierEnv(t *testing.T) *tierEnv {
	t.Helper()
	e := newEnv(t)
	ctx := context.Background()
	discard := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	root := filepath.Join(dir, "policies")
	require.NoError(t, os.CopyFS(root, os.DirFS(filepath.Join("..", "policies"))))
	tiersFile := filepath.Join(dir, "tiers.yaml")
	require.NoError(t, os.WriteFile(tiersFile, []byte(limitTiers), 0o644))
	reg, err := tenant.OpenRegistry(tiersFile, root, discard)
	require.NoError(t, err)

	hold := newHoldProxy(t, e.addr, "globex")
	st, err := store.Open(ctx, store.Config{Addr: hold.Addr(), Database: e.db, Logger: discard})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	require.NoError(t, export.GenerateKey(dir))
	key, err := export.LoadSigningKey(filepath.Join(dir, export.SigningKeyFile))
	require.NoError(t, err)
	exp, err := export.New(export.Config{Store: st, SigningKey: key, Settle: time.Millisecond,
		Logger: discard})
	require.NoError(t, err)
	v, err := identity.NewVerifier(ctx, identity.Config{
		JWKSFile: filepath.Join(e.keyDir, identity.DevJWKSFile)})
	require.NoError(t, err)
	eng, err := authz.Load(root, nil)
	require.NoError(t, err)
	h, err := web.NewServer(web.Deps{Store: st, Verifier: v, Authz: eng,
		SessionSecret:   []byte("web-test-secret-0123456789abcdef-0123"),
		InsecureCookies: true, Logger: discard, Exports: exp, Tiers: reg})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &tierEnv{env: e, base: srv.URL, reg: reg, root: root, tiersFile: tiersFile,
		hold: hold}
}

// errorMessage is the message of an error page.
func errorMessage(t *testing.T, body string) string {
	t.Helper()
	doc, err := goquery.NewDocumentFromReader(strings.NewReader(body))
	require.NoError(t, err)
	return text(doc.Find(`[data-testid=error-message]`))
}

// apiGet fetches an API URL and decodes its JSON body into out.
func apiGet(t *testing.T, c *http.Client, u string, out any) *http.Response {
	t.Helper()
	resp, err := c.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	require.NoError(t, json.NewDecoder(resp.Body).Decode(out))
	return resp
}

type apiPage struct {
	Rows []struct {
		EventID string `json:"event_id"`
	} `json:"rows"`
	Limit int    `json:"limit"`
	Next  string `json:"next"`
	Error string `json:"error"`
	Field string `json:"field"`
}

// presetNames lists the time range presets a page offers.
func presetNames(doc *goquery.Document) []string {
	var out []string
	doc.Find(`nav.presets a`).Each(func(_ int, s *goquery.Selection) {
		out = append(out, text(s))
	})
	return out
}

func TestTierQueryLimits(t *testing.T) {
	e := newTierEnv(t)
	globex := signIn(t, e.base, e.token(t, "globex", []string{"proj_prod"}, []string{"auditor"}))
	acme := signIn(t, e.base, e.token(t, "acme", []string{"proj_prod", "proj_staging"},
		[]string{"auditor"}))
	// The same path is globex's pro project for globex's viewer and
	// acme's enterprise project for acme's.
	pro, ent := e.base+"/p/proj_prod", e.base+"/p/proj_prod"

	t.Run("rows per page", func(t *testing.T) {
		status, doc := getDoc(t, globex, pro+"/traces")
		require.Equal(t, http.StatusOK, status)
		require.Len(t, rowIDs(doc), 20, "the default page is cut to the tier's 20 rows")

		status, doc = getDoc(t, globex, pro+"/traces?limit=5")
		require.Equal(t, http.StatusOK, status)
		require.Len(t, rowIDs(doc), 5)
		older := doc.Find(`[data-testid=page-older]`).AttrOr("href", "")
		require.Contains(t, older, "limit=5", "paging keeps the page size")
		status, doc = getDoc(t, globex, e.base+older)
		require.Equal(t, http.StatusOK, status)
		require.Len(t, rowIDs(doc), 5)

		for _, path := range []string{"/traces?limit=21", "/sessions?limit=21",
			"/traces?limit=100000", "/traces?limit=0", "/traces?limit=x"} {
			status, body := get(t, globex, pro+path)
			require.Equal(t, http.StatusBadRequest, status, path)
			msg := errorMessage(t, body)
			require.True(t, strings.HasPrefix(msg, "limit: "), "%s: %q", path, msg)
			require.Contains(t, msg, "20", path)
		}

		var page apiPage
		resp := apiGet(t, globex, e.base+"/api/p/proj_prod/traces?limit=21", &page)
		require.Equal(t, http.StatusBadRequest, resp.StatusCode)
		require.Equal(t, "limit", page.Field, "the API names the parameter as for filters")
		require.Contains(t, page.Error, "at most 20 rows")
		require.False(t, strings.HasPrefix(page.Error, "limit:"), page.Error)
		page = apiPage{}
		resp = apiGet(t, globex, e.base+"/api/p/proj_prod/traces", &page)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Len(t, page.Rows, 20)
		require.Equal(t, 20, page.Limit)
		require.NotEmpty(t, page.Next)
		next := apiPage{}
		resp = apiGet(t, globex, e.base+"/api/p/proj_prod/traces?limit=20&after="+
			url.QueryEscape(page.Next), &next)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Len(t, next.Rows, 20)
		require.NotEqual(t, page.Rows[19].EventID, next.Rows[0].EventID)

		// The enterprise project in the same process pages far wider.
		status, doc = getDoc(t, acme, ent+"/traces?limit=500&range=90d")
		require.Equal(t, http.StatusOK, status)
		require.Len(t, rowIDs(doc), len(e.events["acme/proj_prod"]))
		// The free project: 100.
		status, body := get(t, acme, e.base+"/p/proj_staging/traces?limit=101")
		require.Equal(t, http.StatusBadRequest, status)
		require.Contains(t, errorMessage(t, body), "100")
	})

	t.Run("longest range", func(t *testing.T) {
		from := e.now.Add(-7 * time.Hour).Format(time.RFC3339)
		to := e.now.Format(time.RFC3339)
		custom := "?from=" + url.QueryEscape(from) + "&to=" + url.QueryEscape(to)
		for _, u := range []string{pro + "?range=24h", pro + "/traces?range=24h",
			pro + "/sessions?range=7d", pro + "/traces" + custom,
			pro + "/sessions/sess-globex-only?range=30d", pro + "/export?range=24h"} {
			status, body := get(t, globex, u)
			if strings.Contains(u, "/export") {
				// The export page states the export limit instead.
				require.Equal(t, http.StatusOK, status, u)
				doc, err := goquery.NewDocumentFromReader(strings.NewReader(body))
				require.NoError(t, err)
				require.Contains(t, text(doc.Find(`[data-testid=export-disabled]`)), "6h")
				continue
			}
			require.Equal(t, http.StatusBadRequest, status, u)
			msg := errorMessage(t, body)
			require.Contains(t, msg, "at most 6h", u)
			if strings.Contains(u, "from=") {
				require.True(t, strings.HasPrefix(msg, "from: "), msg)
			} else {
				require.True(t, strings.HasPrefix(msg, "range: "), msg)
			}
		}
		var page apiPage
		resp := apiGet(t, globex, e.base+"/api/p/proj_prod/traces?range=24h", &page)
		require.Equal(t, http.StatusBadRequest, resp.StatusCode)
		require.Contains(t, page.Error, "at most 6h")
		require.Equal(t, "range", page.Field)

		// Longer than any filter may be: the message names the tier's limit.
		status, body := get(t, globex,
			e.base+"/p/proj_prod/traces?from=2019-01-01T00:00:00Z&to=2023-01-01T00:00:00Z")
		require.Equal(t, http.StatusBadRequest, status)
		require.Equal(t, "from: the time range may span at most 6h on this project's tier "+
			"(pro)", errorMessage(t, body))

		// Without a range the pages open on the widest preset the tier
		// allows, and offer no longer one.
		status, doc := getDoc(t, globex, pro)
		require.Equal(t, http.StatusOK, status)
		require.Equal(t, []string{"15m", "1h", "6h"}, presetNames(doc))
		status, doc = getDoc(t, globex, pro+"/traces")
		require.Equal(t, http.StatusOK, status)
		require.Equal(t, []string{"15m", "1h", "6h"}, presetNames(doc))
		require.Contains(t, text(doc.Find(`.zone`)), "Last 6h")
		status, _ = get(t, globex, pro+"/sessions/sess-globex-only")
		require.Equal(t, http.StatusOK, status, "the timeline looks back as far as allowed")

		// Enterprise: 30 days is fine and 90d is offered; free stops at 7d.
		status, doc = getDoc(t, acme, ent+"/traces?range=30d")
		require.Equal(t, http.StatusOK, status)
		require.Contains(t, presetNames(doc), "90d")
		status, body = get(t, acme, e.base+"/p/proj_staging?range=30d")
		require.Equal(t, http.StatusBadRequest, status)
		require.Contains(t, errorMessage(t, body), "at most 7d")

		// The projects page lists a project whose tier the range exceeds
		// with a note instead of counts.
		status, doc = getDoc(t, acme, e.base+"/?range=30d")
		require.Equal(t, http.StatusOK, status)
		require.Equal(t, 1, doc.Find(`[data-testid=project-note]`).Length())
		require.Contains(t, text(doc.Find(`[data-testid=project-note]`)), "7d")
	})

	t.Run("limits never leak another tenant's project", func(t *testing.T) {
		wantStatus, wantBody := notFound(t, globex, e.base)
		for _, u := range []string{"/p/proj_staging/traces?limit=100000&range=90d",
			"/p/support-bot/traces?limit=100000", "/p/proj_staging?range=90d",
			"/p/support-bot/sessions?limit=0"} {
			for name, c := range map[string]*http.Client{"globex": globex, "acme": acme} {
				if name == "acme" && strings.HasPrefix(u, "/p/proj_staging") {
					continue // acme's own
				}
				status, body := get(t, c, e.base+u)
				require.Equal(t, wantStatus, status, name+u)
				require.Equal(t, wantBody, body, name+u)
			}
		}
		var page apiPage
		resp := apiGet(t, acme, e.base+"/api/p/support-bot/traces?limit=100000", &page)
		require.Equal(t, http.StatusNotFound, resp.StatusCode)
		require.Equal(t, "not found", page.Error)
	})
}

func TestTierConcurrentQueries(t *testing.T) {
	e := newTierEnv(t)
	globex := signIn(t, e.base, e.token(t, "globex", []string{"proj_prod"}, []string{"auditor"}))
	acme := signIn(t, e.base, e.token(t, "acme", []string{"proj_prod"}, []string{"auditor"}))

	// pro runs one query at a time: hold the first inside ClickHouse.
	e.hold.Hold()
	first := make(chan int, 1)
	go func() {
		resp, err := globex.Get(e.base + "/p/proj_prod/traces")
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	e.hold.waitHeld(t)

	for _, path := range []string{"/p/proj_prod", "/p/proj_prod/traces?range=1h",
		"/p/proj_prod/sessions", "/p/proj_prod/traces/evt-globex-only",
		"/p/proj_prod/exports"} {
		resp, err := globex.Get(e.base + path)
		require.NoError(t, err)
		body := readAll(t, resp)
		require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, path)
		require.Equal(t, "1", resp.Header.Get("Retry-After"), path)
		require.Contains(t, errorMessage(t, body), "at most 1 query at once", path)
	}
	var page apiPage
	resp := apiGet(t, globex, e.base+"/api/p/proj_prod/traces", &page)
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.Equal(t, "1", resp.Header.Get("Retry-After"))
	require.Contains(t, page.Error, "at most 1 query")

	// The enterprise project in the same process is not held back.
	status, _ := get(t, acme, e.base+"/p/proj_prod/traces")
	require.Equal(t, http.StatusOK, status)
	status, _ = get(t, acme, e.base+"/p/proj_prod")
	require.Equal(t, http.StatusOK, status)

	e.hold.Release()
	require.Equal(t, http.StatusOK, <-first)
	status, _ = get(t, globex, e.base+"/p/proj_prod/traces")
	require.Equal(t, http.StatusOK, status, "the slot is free again")
}

// tierExport posts an export of the project's decisions between from and
// to and returns the response and its body.
func tierExport(t *testing.T, c *http.Client, base, project string, from,
	to time.Time) (*http.Response, []byte) {
	t.Helper()
	q := url.Values{"from": {from.UTC().Format(time.RFC3339Nano)},
		"to": {to.UTC().Format(time.RFC3339Nano)}}
	action, vals := exportFormAnyState(t, c, base+"/p/"+project+"/export?"+q.Encode())
	vals.Set("format", "ndjson")
	return post(t, c, base+action, vals)
}

// exportFormAnyState reads the export page's CSRF token and filter fields
// even where the page disables the form, so that a test can post what a
// script would.
func exportFormAnyState(t *testing.T, c *http.Client, u string) (string, url.Values) {
	t.Helper()
	status, doc := getDoc(t, c, u)
	require.Equal(t, http.StatusOK, status)
	pu, err := url.Parse(u)
	require.NoError(t, err)
	f := pu.Query()
	csrf := doc.Find(`form[action="/signout"] input[name=csrf]`).AttrOr("value", "")
	require.NotEmpty(t, csrf)
	f.Set("csrf", csrf)
	return pu.Path, f
}

func TestTierExportLimits(t *testing.T) {
	e := newTierEnv(t)
	globex := signIn(t, e.base, e.token(t, "globex", []string{"proj_prod"}, []string{"auditor"}))
	acme := signIn(t, e.base, e.token(t, "acme", []string{"proj_prod", "proj_staging"},
		[]string{"auditor"}))
	logOf := func(account string) []store.ExportRecord {
		recs, err := e.st.ListExports(t.Context(), mustScope(t, account, "proj_prod"), "", 100)
		require.NoError(t, err)
		return recs
	}
	countIn := func(key string, from, to time.Time) int {
		n := 0
		for _, ev := range e.events[key] {
			if !ev.OccurredAt.Before(from) && ev.OccurredAt.Before(to) {
				n++
			}
		}
		return n
	}

	// Too many rows: pro exports at most 40 decisions per file.
	from, to := e.now.Add(-90*time.Minute), e.now.Add(time.Second)
	require.Greater(t, countIn("globex/proj_prod", from, to), 40)
	status, doc := getDoc(t, globex, e.base+"/p/proj_prod/export?from="+
		url.QueryEscape(from.Format(time.RFC3339))+"&to="+url.QueryEscape(to.Format(time.RFC3339)))
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, text(doc.Find(`[data-testid=export-disabled]`)), "at most 40")
	require.Equal(t, 0, doc.Find(`[data-testid=export-form]`).Length())
	resp, body := tierExport(t, globex, e.base, "proj_prod", from, to)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	msg := errorMessage(t, string(body))
	require.Contains(t, msg, "at most 40")
	require.Contains(t, msg, "Narrow the range")

	// Too long a range.
	resp, body = tierExport(t, globex, e.base, "proj_prod", e.now.Add(-7*time.Hour), e.now)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, errorMessage(t, string(body)), "exports at most 6h at once")
	require.Empty(t, logOf("globex"), "nothing refused was streamed or recorded")

	// Two exports a day; the third is refused until midnight UTC.
	from, to = e.now.Add(-10*time.Minute), e.now.Add(time.Second)
	want := countIn("globex/proj_prod", from, to)
	require.Greater(t, want, 0)
	require.LessOrEqual(t, want, 40)
	for i := range 2 {
		resp, body = tierExport(t, globex, e.base, "proj_prod", from, to)
		require.Equal(t, http.StatusOK, resp.StatusCode, "export %d: %s", i, body)
		require.Len(t, strings.Split(strings.TrimSpace(string(body)), "\n"), want)
	}
	resp, body = tierExport(t, globex, e.base, "proj_prod", from, to)
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.NotEmpty(t, resp.Header.Get("Retry-After"))
	require.Contains(t, errorMessage(t, string(body)), "2 exports per day")
	require.Len(t, logOf("globex"), 2)
	status, doc = getDoc(t, globex, e.base+"/p/proj_prod/export?range=15m")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, text(doc.Find(`[data-testid=export-disabled]`)), "2 started today")

	// The enterprise project of the same process: a whole day's
	// decisions, three times over.
	for range 3 {
		resp, body = tierExport(t, acme, e.base, "proj_prod", e.now.Add(-24*time.Hour),
			e.now.Add(time.Second))
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	}
	require.Len(t, logOf("acme"), 3)

	// The free project shows a disabled export button; Cedar's free
	// baseline forbids its exports before any limit is asked.
	status, doc = getDoc(t, acme, e.base+"/p/proj_staging/traces")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, 0, doc.Find(`[data-testid=export]`).Length())
	require.Contains(t, text(doc.Find(`.pagehead`)), "tier (free) includes no exports")
	wantStatus, wantBody := notFound(t, acme, e.base)
	resp, body = post(t, acme, e.base+"/p/proj_staging/export", url.Values{})
	require.Equal(t, wantStatus, resp.StatusCode)
	require.Equal(t, wantBody, string(body))
	// Another account's project: the uniform not found, not the limit.
	resp, body = post(t, globex, e.base+"/p/proj_staging/export", url.Values{})
	require.Equal(t, wantStatus, resp.StatusCode)
	require.Equal(t, wantBody, string(body))
}

func TestTierConcurrentExports(t *testing.T) {
	e := newTierEnv(t)
	globex := signIn(t, e.base, e.token(t, "globex", []string{"proj_prod"}, []string{"auditor"}))
	acme := signIn(t, e.base, e.token(t, "acme", []string{"proj_prod"}, []string{"auditor"}))
	from, to := e.now.Add(-10*time.Minute), e.now.Add(time.Second)
	q := url.Values{"from": {from.Format(time.RFC3339Nano)}, "to": {to.Format(time.RFC3339Nano)}}
	action, vals := exportFormAnyState(t, globex, e.base+"/p/proj_prod/export?"+q.Encode())
	vals.Set("format", "csv")

	// pro runs one export at a time: hold the first inside ClickHouse.
	e.hold.Hold()
	first := make(chan int, 1)
	go func() {
		resp, err := globex.PostForm(e.base+action, vals)
		if err != nil {
			first <- 0
			return
		}
		// The body ends only when the export has ended.
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	e.hold.waitHeld(t)
	resp, body := post(t, globex, e.base+action, vals)
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.NotEmpty(t, resp.Header.Get("Retry-After"))
	require.Contains(t, errorMessage(t, string(body)), "1 export at a time")

	// Enterprise exports run meanwhile.
	resp, body = tierExport(t, acme, e.base, "proj_prod", from, to)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))

	e.hold.Release()
	require.Equal(t, http.StatusOK, <-first)
	resp, body = post(t, globex, e.base+action, vals)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
}

func TestTierChangeTakesEffectAfterReload(t *testing.T) {
	e := newTierEnv(t)
	globex := signIn(t, e.base, e.token(t, "globex", []string{"proj_prod"}, []string{"auditor"}))
	acme := signIn(t, e.base, e.token(t, "acme", []string{"proj_prod"}, []string{"auditor"}))
	key := tenant.Key{Account: "globex", Project: "proj_prod"}

	status, _ := get(t, globex, e.base+"/p/proj_prod/traces?limit=100&range=24h")
	require.Equal(t, http.StatusBadRequest, status)

	// project.json: pro -> enterprise, read at the next reload.
	tenanttest.SetTier(t, e.root, key, "enterprise")
	status, _ = get(t, globex, e.base+"/p/proj_prod/traces?limit=100&range=24h")
	require.Equal(t, http.StatusBadRequest, status, "in force until the reload")
	require.NoError(t, e.reg.Reload())
	status, doc := getDoc(t, globex, e.base+"/p/proj_prod/traces?limit=100&range=24h")
	require.Equal(t, http.StatusOK, status)
	require.Len(t, rowIDs(doc), 100)
	require.Equal(t, 1, doc.Find(`[data-testid=export]`).Length())

	// tiers.yaml: pro loses its exports; the project goes back to pro.
	tenanttest.SetTier(t, e.root, key, "pro")
	noExports := strings.Replace(limitTiers,
		"export: { max_rows: 40, max_range: 6h, concurrent: 1, per_day: 2 }",
		"export: { max_rows: 0 }", 1)
	require.NotEqual(t, limitTiers, noExports)
	require.NoError(t, os.WriteFile(e.tiersFile, []byte(noExports), 0o644))
	require.NoError(t, e.reg.Reload())

	status, doc = getDoc(t, globex, e.base+"/p/proj_prod/traces")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, 0, doc.Find(`[data-testid=export]`).Length())
	require.Contains(t, text(doc.Find(`.pagehead`)), "tier (pro) includes no exports")
	status, doc = getDoc(t, globex, e.base+"/p/proj_prod/export?range=1h")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, text(doc.Find(`[data-testid=export-disabled]`)), "includes no exports")
	resp, body := tierExport(t, globex, e.base, "proj_prod", e.now.Add(-10*time.Minute), e.now)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Contains(t, errorMessage(t, string(body)), "tier (pro) includes no exports")
	recs, err := e.st.ListExports(t.Context(), mustScope(t, "globex", "proj_prod"), "", 10)
	require.NoError(t, err)
	require.Empty(t, recs)

	// Enterprise keeps its exports.
	resp, body = tierExport(t, acme, e.base, "proj_prod", e.now.Add(-10*time.Minute), e.now)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
}

// holdProxy forwards TCP connections to ClickHouse. While it holds, the
// answer to any query whose text names marker is kept back until Release,
// so that a request of that tenant stays inside ClickHouse as long as a
// test needs; other queries pass.
type holdProxy struct {
	ln     net.Listener
	target string
	marker []byte
	held   chan struct{}

	mu   sync.Mutex
	gate chan struct{} // closed by Release; nil when not holding
}

func newHoldProxy(t *testing.T, target, marker string) *holdProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &holdProxy{ln: ln, target: target, marker: []byte(marker),
		held: make(chan struct{}, 64)}
	go p.serve()
	t.Cleanup(func() {
		p.Release()
		ln.Close()
	})
	return p
}

func (p *holdProxy) Addr() string { return p.ln.Addr().String() }

// Hold keeps back the answers to queries naming the marker from now on.
func (p *holdProxy) Hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gate = make(chan struct{})
}

// Release lets every held answer through and stops holding.
func (p *holdProxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
}

// waitHeld waits until a query naming the marker is being held.
func (p *holdProxy) waitHeld(t *testing.T) {
	t.Helper()
	select {
	case <-p.held:
	case <-time.After(10 * time.Second):
		t.Fatal("no query was held")
	}
}

func (p *holdProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *holdProxy) handle(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	var gate atomic.Pointer[chan struct{}] // the hold on this connection's next answer
	go func() {
		defer server.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				if bytes.Contains(buf[:n], p.marker) {
					p.mu.Lock()
					g := p.gate
					p.mu.Unlock()
					if g != nil {
						gate.Store(&g)
						select {
						case p.held <- struct{}{}:
						default:
						}
					}
				}
				if _, err := server.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	defer client.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 {
			if g := gate.Swap(nil); g != nil {
				<-*g
			}
			if _, err := client.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
