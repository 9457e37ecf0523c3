package web_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/identity"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/web"
)

// env is an observatory served in-process over real ClickHouse data, real
// Cedar policies from the repository and real signed tokens.
type env struct {
	st     *store.Store
	addr   string // ClickHouse
	db     string // this test's database
	srv    *httptest.Server
	keyDir string
	now    time.Time
	// events holds what was inserted, by tenant "account/project".
	events map[string][]*events.Event
}

// newEnv builds a fresh environment for one test: its own database with
// generated traffic of the demo tenants plus the crafted events the
// isolation tests aim at, a dev key and a server.
func newEnv(t testing.TB) *env {
	t.Helper()
	addr := clickhouseAddr(t)
	db := database(t, addr)
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{Addr: addr, Database: db,
		Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	e := &env{st: st, addr: addr, db: db, now: time.Now().UTC(),
		events: map[string][]*events.Event{}, keyDir: t.TempDir()}
	require.NoError(t, e.seed(ctx))
	require.NoError(t, identity.GenerateDevKey(e.keyDir))
	e.srv, err = e.server(ctx, true)
	require.NoError(t, err)
	t.Cleanup(e.srv.Close)
	return e
}

// server builds an observatory handler over the env's store.
func (e *env) server(ctx context.Context, insecure bool) (*httptest.Server, error) {
	v, err := identity.NewVerifier(ctx, identity.Config{
		JWKSFile: filepath.Join(e.keyDir, identity.DevJWKSFile)})
	if err != nil {
		return nil, err
	}
	eng, err := authz.Load(filepath.Join("..", "policies"), nil)
	if err != nil {
		return nil, err
	}
	h, err := web.NewServer(web.Deps{Store: e.st, Verifier: v, Authz: eng,
		SessionSecret: []byte("web-test-secret-0123456789abcdef-0123"), InsecureCookies: insecure,
		Logger: slog.New(slog.DiscardHandler), TailInterval: 200 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	return httptest.NewServer(h), nil
}

// seed inserts generated traffic over the last two hours and crafted
// events: ids and sessions that exist in one tenant only, and a session
// id used by two tenants.
func (e *env) seed(ctx context.Context) error {
	i := 0
	g := gen.New(42, gen.DemoTenants, func() time.Time {
		i++
		return e.now.Add(-time.Duration(i) * 9 * time.Second)
	})
	var evs []*events.Event
	for range 800 {
		evs = append(evs, g.Next())
	}
	crafted := []struct{ account, project, id, session string }{
		{"globex", "proj_prod", "evt-globex-only", "sess-globex-only"},
		{"globex", "proj_prod", "evt-globex-shared", "sess-shared"},
		{"acme", "proj_prod", "evt-acme-shared", "sess-shared"},
		{"acme", "proj_staging", "evt-staging-only", "sess-staging-only"},
	}
	for k, c := range crafted {
		ev := g.NextFor(gen.Tenant{Account: c.account, Project: c.project})
		ev.EventID, ev.SessionID = c.id, c.session
		ev.OccurredAt = e.now.Add(-time.Duration(30+k) * time.Minute).Truncate(time.Millisecond)
		ev.Reason = "crafted " + c.account + "/" + c.project
		evs = append(evs, ev)
	}
	for _, ev := range evs {
		k := ev.AccountID + "/" + ev.ProjectID
		e.events[k] = append(e.events[k], ev)
	}
	return e.st.Insert(ctx, evs)
}

// token mints a dev token; roles are "<role>" or "<project>:<role>".
func (e *env) token(t testing.TB, account string, projects, roles []string,
	mod ...func(*identity.MintClaims)) string {
	t.Helper()
	c := identity.MintClaims{Subject: "tester@" + account, Account: account,
		Projects: projects, Roles: roles, TTL: time.Hour}
	for _, m := range mod {
		m(&c)
	}
	tok, err := identity.Mint(e.keyDir, c)
	require.NoError(t, err)
	return tok
}

// noRedirect is a client that reports redirects instead of following them.
func noRedirect(jar http.CookieJar) *http.Client {
	return &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}
}

// signIn goes through the sign-in link and its confirmation form, and
// returns a client holding the session.
func signIn(t testing.TB, base, token string) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := noRedirect(jar)
	status, doc := getDoc(t, c, base+"/signin?token="+url.QueryEscape(token))
	require.Equal(t, http.StatusOK, status)
	form := doc.Find(`form[action="/signin"]`)
	require.Equal(t, 1, form.Length(), "confirmation form")
	vals := url.Values{}
	form.Find("input[type=hidden]").Each(func(_ int, s *goquery.Selection) {
		vals.Set(s.AttrOr("name", ""), s.AttrOr("value", ""))
	})
	resp, err := c.PostForm(base+"/signin", vals)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/", resp.Header.Get("Location"))
	return c
}

// get fetches a URL and returns status and body.
func get(t testing.TB, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func getDoc(t testing.TB, c *http.Client, u string) (int, *goquery.Document) {
	t.Helper()
	status, body := get(t, c, u)
	doc, err := goquery.NewDocumentFromReader(strings.NewReader(body))
	require.NoError(t, err)
	return status, doc
}

// text is the visible text of a selection with runs of space folded.
func text(s *goquery.Selection) string { return strings.Join(strings.Fields(s.Text()), " ") }
