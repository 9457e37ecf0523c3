package web_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/PuerkitoBio/goquery"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/gen"
)

const (
	xssScript = `<script>alert("x")</script>`
	xssAttr   = `"><img src=x onerror=alert(1)>`
	xssLink   = `javascript:alert(1)`
	rtl       = "user\u202Egnp.exe"
)

// requireInert checks that a page holds no markup an event could have
// injected: only our own script, no event-handler attributes, no
// javascript: URLs, no images or frames.
func requireInert(t *testing.T, body string) {
	t.Helper()
	require.True(t, utf8.ValidString(body))
	doc, err := goquery.NewDocumentFromReader(strings.NewReader(body))
	require.NoError(t, err)
	doc.Find("script").Each(func(_ int, s *goquery.Selection) {
		require.Equal(t, "/static/app.js", s.AttrOr("src", ""), "only our own script")
		require.Empty(t, strings.TrimSpace(s.Text()))
	})
	require.Zero(t, doc.Find("img, iframe, object, embed").Length())
	doc.Find("*").Each(func(_ int, s *goquery.Selection) {
		for _, a := range s.Nodes[0].Attr {
			require.False(t, strings.HasPrefix(strings.ToLower(a.Key), "on"),
				"event handler attribute %s", a.Key)
			v := strings.ToLower(strings.TrimSpace(a.Val))
			require.False(t, strings.HasPrefix(v, "javascript:"), "%s=%q", a.Key, a.Val)
		}
	})
	require.NotContains(t, body, "\u202E", "bidi overrides are shown, not applied")
}

func TestHostileEventsRenderInert(t *testing.T) {
	e := newEnv(t)
	g := gen.New(5, nil, nil)
	ev := g.NextFor(gen.Tenant{Account: "acme", Project: "proj_staging"})
	ev.EventID = "evt-hostile"
	ev.SessionID = "sess-hostile"
	ev.ApplicationID = xssLink
	ev.Reason = xssScript + " " + strings.Repeat("long ", 2000)
	ev.Action = xssAttr
	ev.TraceID = xssLink
	ev.ThreatCategories = []string{xssScript}
	ev.Identity.UserID = rtl
	ev.Identity.AgentID = xssAttr
	ev.Outcome, ev.Decision, ev.ActualDecision = "blocked", "deny", "deny"
	ev.DeterminingPolicies = []events.Policy{{PolicyID: xssAttr, Severity: "high",
		Category: xssScript, Tags: []string{xssLink, xssScript},
		RejectMessage: xssScript}}
	ev.Signals = append(ev.Signals, events.Signal{ID: xssAttr, Detector: xssScript})
	ev.Detectors = append(ev.Detectors, events.Detector{Name: xssScript, Tier: xssAttr})
	ev.Content.RedactedPreview = xssScript + "\x01\x7f"
	ev.Metadata = map[string]string{xssScript: xssAttr, "link": xssLink}
	ev.Labels = map[string]string{"x": rtl}
	other := g.NextFor(gen.Tenant{Account: "acme", Project: "proj_staging"})
	other.EventID = "evt-hostile-session"
	other.SessionID = xssLink
	require.NoError(t, e.st.Insert(context.Background(), []*events.Event{ev, other}))

	c := signIn(t, e.srv.URL, e.token(t, "acme", []string{"proj_staging"}, []string{"admin"}))
	pages := []string{
		"/p/proj_staging/traces",
		"/p/proj_staging/traces?range=90d&q=" + "script",
		"/p/proj_staging/traces/evt-hostile",
		"/p/proj_staging/traces/evt-hostile-session",
		"/p/proj_staging/sessions",
		"/p/proj_staging/sessions/sess-hostile",
		"/p/proj_staging",
		"/",
	}
	for _, p := range pages {
		t.Run(p, func(t *testing.T) {
			status, body := get(t, c, e.srv.URL+p)
			require.Equal(t, http.StatusOK, status)
			requireInert(t, body)
		})
	}

	_, doc := getDoc(t, c, e.srv.URL+"/p/proj_staging/traces/evt-hostile")
	require.Contains(t, text(doc.Find(`[data-testid=reason]`)), xssScript, "shown as text")
	require.Contains(t, text(doc.Find(`[data-testid=identity]`)), "user[U+202E]gnp.exe")
	require.Contains(t, text(doc.Find(`[data-testid=preview]`)), "\u2401\u2421")
	_, doc = getDoc(t, c, e.srv.URL+"/p/proj_staging/traces")
	row := doc.Find(`[data-event=evt-hostile]`)
	require.Equal(t, 1, row.Length())
	require.LessOrEqual(t, utf8.RuneCountInString(text(row.Find(".reason"))), 141,
		"long strings are cut in lists")
	_, doc = getDoc(t, c, e.srv.URL+"/p/proj_staging/traces/evt-hostile-session")
	require.Zero(t, doc.Find(`[data-testid=session-link]`).Length(),
		"an id that cannot be looked up is not linked")
}
