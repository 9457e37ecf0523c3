package web

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/PuerkitoBio/goquery"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/store"
)

// decisionOf is the list row the store would return for an event.
func decisionOf(ev *events.Event) store.Decision {
	d := store.Decision{AccountID: ev.AccountID, ProjectID: ev.ProjectID, EventID: ev.EventID,
		OccurredAt: ev.OccurredAt, Source: ev.Source, EventType: ev.EventType,
		Action: ev.Action, Mode: ev.Mode, Decision: ev.Decision, Outcome: ev.Outcome,
		HighestSeverity: ev.HighestSeverity, Reason: ev.Reason, ApplicationID: ev.ApplicationID,
		TraceID: ev.TraceID, SessionID: ev.SessionID, ThreatCategories: ev.ThreatCategories,
		LatencyMS: float32(ev.Latency.TotalMS)}
	for _, p := range ev.DeterminingPolicies {
		d.PolicyIDs = append(d.PolicyIDs, p.PolicyID)
	}
	if ev.Identity != nil {
		d.UserID, d.AgentID = ev.Identity.UserID, ev.Identity.AgentID
	}
	return d
}

func TestInvalidUTF8IsReplaced(t *testing.T) {
	g := gen.New(3, nil, nil)
	ev := g.NextFor(gen.Tenant{Account: "acme", Project: "proj_prod"})
	bad := "ok\xff\xfe<b>x</b>"
	ev.Reason, ev.Identity.UserID, ev.Content.RedactedPreview = bad, bad, bad
	ev.Metadata = map[string]string{bad: bad}
	now := time.Now()

	v, err := traceView("proj_prod", ev, true, time.UTC, now)
	require.NoError(t, err)
	var buf bytes.Buffer
	require.NoError(t, TracePage(v).Render(context.Background(), &buf))
	out := buf.String()
	require.True(t, utf8.ValidString(out))
	require.Contains(t, out, "ok\uFFFD&lt;b&gt;x&lt;/b&gt;")
	require.NotContains(t, out, "<b>x</b>")

	buf.Reset()
	rows := []TraceRow{traceRow("proj_prod", decisionOf(ev), time.UTC, now)}
	require.NoError(t, TracesPage(TracesView{Rows: rows}).Render(context.Background(), &buf))
	require.True(t, utf8.ValidString(buf.String()))
	doc, err := goquery.NewDocumentFromReader(&buf)
	require.NoError(t, err)
	require.Equal(t, "ok\uFFFD<b>x</b>",
		strings.TrimSpace(doc.Find(`[data-testid=trace-row] .reason`).Text()))
}

func TestCleanShowsWhatIsThere(t *testing.T) {
	cases := map[string]string{
		"plain":                 "plain",
		"a\x00b\x1bc":           "a\u2400b\u241bc",
		"x\u202Ey\u2066z":       "x[U+202E]y[U+2066]z",
		"bad\xc3":               "bad\uFFFD",
		strings.Repeat("é", 10): strings.Repeat("é", 5) + "…",
	}
	for in, want := range cases {
		max := 0
		if strings.HasPrefix(in, "é") {
			max = 5
		}
		require.Equal(t, want, clean(in, max), "%q", in)
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/p/x/traces?a=b": "/p/x/traces?a=b", "//evil": "/", "/\\evil": "/",
		"https://evil": "/", "evil": "/", "/a b": "/", "/ok\r\n": "/", "": "/",
	} {
		require.Equal(t, want, safeNext(in), "%q", in)
	}
}

func TestCursorRoundTripAndRejects(t *testing.T) {
	c := store.Cursor{At: time.UnixMilli(1_700_000_000_123).UTC(), EventID: "evt.with:odd/chars"}
	got, err := decodeCursor("after", encodeCursor(c))
	require.NoError(t, err)
	require.Equal(t, c, got)
	for _, bad := range []string{"!!", "AAAA", encodeCursor(store.Cursor{At: time.UnixMilli(5),
		EventID: "a\x00"}), b64.EncodeToString([]byte{2, 0, 0, 0, 0, 0, 0, 0, 1, 'x'})} {
		_, err := decodeCursor("after", bad)
		require.Error(t, err, "%q", bad)
		require.Contains(t, err.Error(), "after:")
	}
}

// BenchmarkTracesPage renders a full traces page of generated decisions.
func BenchmarkTracesPage(b *testing.B) {
	g := gen.New(1, nil, nil)
	now := time.Now()
	v := TracesView{Chrome: Chrome{SignedIn: true, Subject: "bench", Account: "acme",
		Project: "proj_prod", Projects: []string{"proj_prod"}, Section: "traces"},
		Total: "12,345", OlderHref: "/p/proj_prod/traces?after=x"}
	for range PageSize {
		ev := g.NextFor(gen.Tenant{Account: "acme", Project: "proj_prod"})
		v.Rows = append(v.Rows, traceRow("proj_prod", decisionOf(ev), time.UTC, now))
	}
	f := store.Facets{}
	for _, name := range store.FacetNames {
		for i := range 8 {
			f[name] = append(f[name], store.FacetValue{Value: name + string(rune('a'+i)),
				Count: uint64(1000 - i)})
		}
	}
	v.Facets = facetViews("/p/proj_prod/traces", rangeFilter(now), f)
	v.Filter = filterView("/p/proj_prod/traces", rangeFilter(now), time.UTC, true, 0)
	var buf bytes.Buffer
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := TracesPage(v).Render(context.Background(), &buf); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(buf.Len()))
}

func rangeFilter(now time.Time) filter.Filter {
	return filter.Filter{Preset: "24h", From: now.Add(-24 * time.Hour), To: now}
}
