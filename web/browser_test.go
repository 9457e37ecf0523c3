package web_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/identity"
)

const chromium = "/usr/bin/chromium"

// screenshots is where the browser test leaves pictures of the main pages.
var screenshots = filepath.Join("..", ".artifacts", "screenshots")

// browser starts a headless Chromium with a fresh profile. It skips when
// Chromium is missing, unless OBS_REQUIRE_INTEGRATION=1.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("OBS_REQUIRE_INTEGRATION") == "1" {
			t.Fatalf("%s is required: %v", chromium, err)
		}
		t.Skipf("no %s", chromium)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1440, 1000),
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	ctx, cancel = context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// run runs browser steps and fails the test on error.
func run(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx, steps...))
}

// eval evaluates an expression in the page.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	require.NoError(t, err)
	return v
}

// follow clicks an element and waits until the page at a new URL is loaded.
func follow(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	before := eval[string](t, ctx, "location.href")
	run(t, ctx, chromedp.Click(chromedp.CSS(sel)))
	// A poll does not survive a navigation, so ask again until it is done.
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		href, err := chromedp.Run(ctx, chromedp.Evaluate[string](
			"document.readyState === 'complete' ? location.href : ''"))
		if err == nil && href != "" && href != before {
			return eval[string](t, ctx, "location.pathname + location.search")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no navigation after clicking %s", sel)
	return ""
}

// shot saves a full-page screenshot as a test artifact.
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(screenshots, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(screenshots, name+".png"), png, 0o644))
}

func rowsInPage(t *testing.T, ctx context.Context) []string {
	t.Helper()
	return eval[[]string](t, ctx,
		`[...document.querySelectorAll('[data-testid=trace-row]')].map(r => r.dataset.event)`)
}

func TestBrowserEndToEnd(t *testing.T) {
	e := newEnv(t)
	ctx := browser(t)
	base := e.srv.URL
	tok := e.token(t, "acme", []string{"proj_prod", "proj_staging"}, []string{"analyst"},
		func(c *identity.MintClaims) { c.Subject = "alice@acme" })

	// Sign in with the link the demo prints, confirm, land on projects.
	run(t, ctx, chromedp.Navigate(base+"/signin?token="+url.QueryEscape(tok)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid=signin-confirm]`)))
	shot(t, ctx, "signin")
	require.Equal(t, "/", follow(t, ctx, `[data-testid=signin-continue]`))
	require.Equal(t, 2, eval[int](t, ctx,
		`document.querySelectorAll('[data-testid=project-row]').length`))
	shot(t, ctx, "projects")

	// Pick a project: its overview with the chart.
	path := follow(t, ctx, `[data-testid=project-row] a[href^="/p/proj_prod?"]`)
	require.True(t, strings.HasPrefix(path, "/p/proj_prod"), path)
	run(t, ctx, chromedp.WaitVisible(chromedp.CSS(`[data-testid=outcome-chart]`)))
	shot(t, ctx, "overview")

	// Traces, filtered with the form to blocked decisions.
	follow(t, ctx, `.projnav a[href="/p/proj_prod/traces"]`)
	shot(t, ctx, "traces")
	run(t, ctx, chromedp.SetValue(chromedp.CSS(`select[name=outcome]`), "blocked"))
	path = follow(t, ctx, `[data-testid=filter-form] button[type=submit]`)
	require.Contains(t, path, "outcome=blocked")
	outcomes := eval[[]string](t, ctx,
		`[...document.querySelectorAll('[data-testid=trace-row] .oc')].map(x => x.textContent)`)
	require.NotEmpty(t, outcomes)
	for _, o := range outcomes {
		require.Equal(t, "blocked", o)
	}

	// Page forward and back, with links and with the browser's history.
	run(t, ctx, chromedp.Navigate(base+"/p/proj_prod/traces?range=24h"))
	first := rowsInPage(t, ctx)
	require.Len(t, first, 50)
	follow(t, ctx, `[data-testid=page-older]`)
	second := rowsInPage(t, ctx)
	require.NotEmpty(t, second)
	require.NotContains(t, first, second[0])
	follow(t, ctx, `[data-testid=page-newer]`)
	require.Equal(t, first, rowsInPage(t, ctx))
	run(t, ctx, chromedp.NavigateBack())
	require.Eventually(t, func() bool {
		rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
			`[...document.querySelectorAll('[data-testid=trace-row]')].map(r => r.dataset.event)`))
		return err == nil && slices.Equal(rows, second)
	}, 10*time.Second, 100*time.Millisecond, "back shows the older page again")

	// A decision's detail, then its session.
	detail := follow(t, ctx, `[data-testid=trace-row] td.t a`)
	require.True(t, strings.HasPrefix(detail, "/p/proj_prod/traces/"), detail)
	require.Equal(t, second[0], eval[string](t, ctx,
		`document.querySelector('[data-testid=event-id]').textContent`))
	shot(t, ctx, "detail")
	session := follow(t, ctx, `[data-testid=session-link]`)
	require.True(t, strings.HasPrefix(session, "/p/proj_prod/sessions/"), session)
	require.Positive(t, eval[int](t, ctx,
		`document.querySelectorAll('[data-testid=timeline-item]').length`))
	shot(t, ctx, "session")
	follow(t, ctx, `.projnav a[href="/p/proj_prod/sessions"]`)
	shot(t, ctx, "sessions")

	// Live tail: a decision stored while the tail is open appears on top.
	run(t, ctx, chromedp.Navigate(base+"/p/proj_prod/traces?range=1h"),
		chromedp.WaitVisible(chromedp.CSS(`#tail-toggle`)),
		chromedp.Click(chromedp.CSS(`#tail-toggle`)))
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](
		`document.getElementById('tail-status').textContent.startsWith('Live')`,
		chromedp.WithPollingTimeout(10*time.Second)))
	require.NoError(t, err)
	time.Sleep(500 * time.Millisecond)
	ev := gen.New(11, nil, nil).NextFor(gen.Tenant{Account: "acme", Project: "proj_prod"})
	ev.EventID = "evt-browser-live"
	ev.Reason = "arrived while watching"
	require.NoError(t, e.st.Insert(context.Background(), []*events.Event{ev}))
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](
		`(document.querySelector('#rows tr') || {}).dataset?.event === 'evt-browser-live'`,
		chromedp.WithPollingTimeout(15*time.Second)))
	require.NoError(t, err, "the live decision did not appear")
	shot(t, ctx, "live-tail")
}
