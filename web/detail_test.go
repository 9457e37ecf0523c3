package web_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/PuerkitoBio/goquery"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/identity"
)

func TestTraceDetailShowsEveryPart(t *testing.T) {
	e := newEnv(t)
	var ev = e.events["acme/proj_prod"][0]
	for _, x := range e.events["acme/proj_prod"] {
		if len(x.DeterminingPolicies) > 0 && x.Content != nil {
			ev = x
			break
		}
	}
	c := signIn(t, e.srv.URL, e.token(t, "acme", []string{"proj_prod"}, []string{"analyst"}))
	status, doc := getDoc(t, c, e.srv.URL+"/p/proj_prod/traces/"+ev.EventID)
	require.Equal(t, http.StatusOK, status)

	require.Equal(t, ev.EventID, text(doc.Find(`[data-testid=event-id]`)))
	require.Equal(t, ev.Outcome, text(doc.Find(`[data-testid=outcome]`)))
	require.Equal(t, ev.HighestSeverity, text(doc.Find(`[data-testid=severity]`)))
	require.Equal(t, ev.Reason, text(doc.Find(`[data-testid=reason]`)))
	pol := doc.Find(`[data-testid=policy]`)
	require.Equal(t, len(ev.DeterminingPolicies), pol.Length())
	p := ev.DeterminingPolicies[0]
	require.Contains(t, text(pol), p.PolicyID)
	require.Contains(t, text(pol), p.Severity)
	require.Contains(t, text(pol), p.RejectMessage)
	for _, tag := range p.Tags {
		require.Contains(t, text(pol.Find(".tags")), tag)
	}
	require.Equal(t, len(ev.Signals), doc.Find(`[data-testid=signals] tbody tr`).Length())
	require.Equal(t, len(ev.Signals), doc.Find(`[data-testid=signals] tbody tr`).Length())
	bars := doc.Find(`[data-testid=signals] rect.fill`)
	require.Positive(t, bars.Length(), "scores are drawn as bars")
	require.Equal(t, len(ev.Detectors), doc.Find(`[data-testid=detectors] tbody tr`).Length())
	require.Contains(t, text(doc.Find(`[data-testid=detectors]`)), ev.Detectors[0].Tier)
	require.Contains(t, text(doc.Find(`[data-testid=identity]`)), ev.Identity.UserID)
	require.Contains(t, text(doc.Find(`[data-testid=model]`)), ev.Model.Model)
	require.Equal(t, ev.Content.RedactedPreview, text(doc.Find(`[data-testid=preview]`)))
	require.Contains(t, doc.Find(`[data-testid=raw]`).Text(), `"event_id": "`+ev.EventID+`"`)

	session, _ := doc.Find(`[data-testid=session-link]`).Attr("href")
	require.Equal(t, "/p/proj_prod/sessions/"+ev.SessionID, session)
	status, doc = getDoc(t, c, e.srv.URL+session)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, ev.SessionID, text(doc.Find(`[data-testid=session-id]`)))
	found := false
	doc.Find(`[data-testid=timeline-item] a`).Each(func(_ int, s *goquery.Selection) {
		found = found || strings.Contains(s.AttrOr("href", ""), "/traces/"+ev.EventID+"?at=")
	})
	require.True(t, found, "the session timeline lists the decision")

	same, _ := doc.Find("a").Filter(`[href*="/traces?"]`).Attr("href")
	require.Contains(t, same, "session="+ev.SessionID)
}

func TestTraceLinksToSameTraceID(t *testing.T) {
	e := newEnv(t)
	ev := e.events["acme/proj_prod"][3]
	c := signIn(t, e.srv.URL, e.token(t, "acme", []string{"proj_prod"}, []string{"viewer"}))
	_, doc := getDoc(t, c, e.srv.URL+"/p/proj_prod/traces/"+ev.EventID)
	href, ok := doc.Find(`[data-testid=trace-link]`).Attr("href")
	require.True(t, ok)
	status, doc := getDoc(t, c, e.srv.URL+href)
	require.Equal(t, http.StatusOK, status)
	want := 0
	for _, x := range e.events["acme/proj_prod"] {
		if x.TraceID == ev.TraceID {
			want++
		}
	}
	require.Len(t, rowIDs(doc), want)
	require.Contains(t, rowIDs(doc), ev.EventID)
}

func TestContentNeedsViewContent(t *testing.T) {
	e := newEnv(t)
	ev := e.events["acme/proj_prod"][0]
	preview := ev.Content.RedactedPreview
	require.NotEmpty(t, preview)

	viewer := signIn(t, e.srv.URL, e.token(t, "acme", []string{"proj_prod"}, []string{"viewer"}))
	status, body := get(t, viewer, e.srv.URL+"/p/proj_prod/traces/"+ev.EventID)
	require.Equal(t, http.StatusOK, status)
	require.NotContains(t, body, preview, "neither shown nor in the raw JSON")
	require.Contains(t, body, `data-testid="preview-hidden"`)
	require.NotContains(t, body, `data-testid="session-link"`, "no link to a page it may not see")

	// Without view_content, text search covers reasons only, so previews
	// cannot be probed through it.
	probe := e.srv.URL + "/p/proj_prod/traces?range=90d&q=" + url.QueryEscape(preview)
	status, doc := getDoc(t, viewer, probe)
	require.Equal(t, http.StatusOK, status)
	require.NotContains(t, rowIDs(doc), ev.EventID)
	status, _ = get(t, viewer, e.srv.URL+"/p/proj_prod/sessions")
	require.Equal(t, http.StatusNotFound, status)

	// The project's own policy lets a trust-and-safety viewer see content.
	ts := signIn(t, e.srv.URL, e.token(t, "acme", []string{"proj_prod"}, []string{"viewer"},
		func(c *identity.MintClaims) { c.Labels = map[string]string{"team": "trust-safety"} }))
	_, body = get(t, ts, e.srv.URL+"/p/proj_prod/traces/"+ev.EventID)
	require.Contains(t, body, `data-testid="preview"`)
	_, doc = getDoc(t, ts, probe)
	require.Contains(t, rowIDs(doc), ev.EventID, "content viewers search previews")
}
