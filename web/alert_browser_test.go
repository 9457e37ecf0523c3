package web_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// TestBrowserAlerts creates a subscription through the form in Chromium,
// sees its secret once, sends a test alert and leaves screenshots of the
// alert pages.
func TestBrowserAlerts(t *testing.T) {
	a := newAlertEnv(t, "127.0.0.1/32")
	ctx := browser(t)
	base := a.srv.URL
	tok := a.token(t, "acme", []string{"proj_prod"}, []string{"admin"})
	run(t, ctx, chromedp.Navigate(base+"/signin?token="+url.QueryEscape(tok)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid=signin-confirm]`)))
	require.Equal(t, "/", follow(t, ctx, `[data-testid=signin-continue]`))

	run(t, ctx, chromedp.Navigate(base+"/p/proj_prod"))
	require.Equal(t, "/p/proj_prod/alerts", follow(t, ctx, `.projnav a[href$="/alerts"]`))
	run(t, ctx,
		chromedp.SendKeys(chromedp.CSS(`[data-testid=alert-form] input[name=name]`),
			"Injection bursts per user"),
		chromedp.SetValue(chromedp.CSS(`[data-testid=alert-form] input[name=threshold]`), "5"),
		chromedp.SetValue(chromedp.CSS(`[data-testid=alert-form] select[name=group_by]`),
			"user"),
		chromedp.SendKeys(chromedp.CSS(`[data-testid=alert-form] input[name=url]`),
			a.hooks.srv.URL+"/hook"))
	shot(t, ctx, "alerts-new")
	// The answer to the form's POST is the new subscription's page, at
	// the list's address.
	run(t, ctx, chromedp.Click(chromedp.CSS(`[data-testid=alert-form] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid=secret-value]`)))
	secret := eval[string](t, ctx,
		`document.querySelector('[data-testid=secret-value]').textContent`)
	require.True(t, strings.HasPrefix(secret, "whsec_"), secret)
	shot(t, ctx, "alert-created")

	run(t, ctx, chromedp.Click(chromedp.CSS(`[data-testid=test-send]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid=notice]`)))
	require.Contains(t, eval[string](t, ctx,
		`document.querySelector('[data-testid=notice]').textContent`), "delivered")
	require.Equal(t, 0, eval[int](t, ctx,
		`document.querySelectorAll('[data-testid=secret]').length`), "shown once only")
	shot(t, ctx, "alert-detail")

	run(t, ctx, chromedp.Navigate(base+"/p/proj_prod/alerts"))
	require.Equal(t, 1, eval[int](t, ctx,
		`document.querySelectorAll('[data-testid=alert-row]').length`))
	shot(t, ctx, "alerts")
}
