package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/gen"
)

// rowIDs lists the event ids of the rows of a traces page, top down.
func rowIDs(doc *goquery.Document) []string {
	var ids []string
	doc.Find(`[data-testid=trace-row]`).Each(func(_ int, s *goquery.Selection) {
		ids = append(ids, s.AttrOr("data-event", ""))
	})
	return ids
}

func TestTracesPagingNeitherSkipsNorRepeats(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// 130 decisions on three instants, far from the generated traffic,
	// in a project no other test writes to.
	at := e.now.Add(-20 * time.Hour).Truncate(time.Second)
	g := gen.New(7, nil, nil)
	var evs []*events.Event
	for i := range 130 {
		ev := g.NextFor(gen.Tenant{Account: "initech", Project: "proj_prod"})
		ev.EventID = fmt.Sprintf("tie-%03d", i)
		ev.OccurredAt = at.Add(time.Duration(i%3) * time.Millisecond)
		evs = append(evs, ev)
	}
	require.NoError(t, e.st.Insert(ctx, evs))
	require.NoError(t, e.st.Insert(ctx, evs[:40]), "a redelivery stays invisible")

	want := make([]*events.Event, len(evs))
	copy(want, evs)
	slices.SortFunc(want, func(a, b *events.Event) int {
		if c := b.OccurredAt.Compare(a.OccurredAt); c != 0 {
			return c
		}
		return strings.Compare(b.EventID, a.EventID)
	})
	var wantIDs []string
	for _, ev := range want {
		wantIDs = append(wantIDs, ev.EventID)
	}

	c := signIn(t, e.srv.URL, e.token(t, "initech", []string{"proj_prod"}, []string{"analyst"}))
	q := url.Values{"from": {at.Add(-time.Minute).Format(time.RFC3339)},
		"to": {at.Add(time.Minute).Format(time.RFC3339)}}
	first := e.srv.URL + "/p/proj_prod/traces?" + q.Encode()
	status, doc := getDoc(t, c, first)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "130 decisions", text(doc.Find(`[data-testid=total]`)))

	// Rows arriving after the first page do not move the older pages.
	late := g.NextFor(gen.Tenant{Account: "initech", Project: "proj_prod"})
	late.EventID, late.OccurredAt = "tie-late", at.Add(30*time.Second)
	require.NoError(t, e.st.Insert(ctx, []*events.Event{late}))

	var pages [][]string
	var got []string
	for {
		ids := rowIDs(doc)
		pages = append(pages, ids)
		got = append(got, ids...)
		older, ok := doc.Find(`[data-testid=page-older]`).Attr("href")
		if !ok {
			break
		}
		status, doc = getDoc(t, c, e.srv.URL+older)
		require.Equal(t, http.StatusOK, status)
		require.Less(t, len(pages), 10, "paging must end")
	}
	require.Equal(t, wantIDs, got)
	require.Len(t, pages, 3)

	// And back: each newer page is the page seen before it.
	for i := len(pages) - 2; i >= 0; i-- {
		newer, ok := doc.Find(`[data-testid=page-newer]`).Attr("href")
		require.True(t, ok, "newer link on page %d", i+1)
		status, doc = getDoc(t, c, e.srv.URL+newer)
		require.Equal(t, http.StatusOK, status)
		require.Equal(t, pages[i], rowIDs(doc))
	}
	// Above the first page seen now sits the row that arrived since.
	newer, ok := doc.Find(`[data-testid=page-newer]`).Attr("href")
	require.True(t, ok)
	status, doc = getDoc(t, c, e.srv.URL+newer)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, []string{"tie-late"}, rowIDs(doc))
	require.Zero(t, doc.Find(`[data-testid=page-newer]`).Length())
}

func TestTracesFiltersAndFacets(t *testing.T) {
	e := newEnv(t)
	c := signIn(t, e.srv.URL, e.token(t, "acme", []string{"proj_prod"}, []string{"analyst"}))
	base := e.srv.URL + "/p/proj_prod/traces"

	blocked := 0
	users := map[string]int{}
	for _, ev := range e.events["acme/proj_prod"] {
		if ev.Outcome == "blocked" {
			blocked++
		}
		users[ev.Identity.UserID]++
	}
	require.Positive(t, blocked)

	status, doc := getDoc(t, c, base)
	require.Equal(t, http.StatusOK, status)
	facet := doc.Find(`[data-facet=outcome] li`).FilterFunction(
		func(_ int, s *goquery.Selection) bool { return text(s.Find(".fv")) == "blocked" })
	require.Equal(t, fmt.Sprint(blocked), text(facet.Find(".fc")))
	href, _ := facet.Find("a").Attr("href")

	status, doc = getDoc(t, c, e.srv.URL+href)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, fmt.Sprintf("%d decisions", blocked), text(doc.Find(`[data-testid=total]`)))
	doc.Find(`[data-testid=trace-row]`).Each(func(_ int, s *goquery.Selection) {
		require.Equal(t, "blocked", text(s.Find(".oc")))
	})
	require.Contains(t, text(doc.Find(`[data-testid=chips]`)), "Outcome: blocked")
	sel := doc.Find(`select[name=outcome] option[selected]`)
	require.Equal(t, "blocked", sel.AttrOr("value", ""))

	for user, n := range users {
		status, doc = getDoc(t, c, base+"?user="+url.QueryEscape(user))
		require.Equal(t, http.StatusOK, status)
		require.Equal(t, fmt.Sprintf("%d decisions", n), text(doc.Find(`[data-testid=total]`)))
		break
	}

	status, doc = getDoc(t, c, base+"?q=CRAFTED")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, []string{"evt-acme-shared"}, rowIDs(doc))
}

func TestTracesBadParametersAre400(t *testing.T) {
	e := newEnv(t)
	c := signIn(t, e.srv.URL, e.token(t, "acme", []string{"proj_prod"}, []string{"viewer"}))
	cases := map[string]string{
		"outcome=nope":                      "outcome",
		"range=2y":                          "range",
		"from=yesterday&to=today":           "from",
		"after=not-a-cursor":                "after",
		"before=AAAA":                       "before",
		"after=" + strings.Repeat("A", 400): "after",
		"severity=extreme":                  "severity",
		"user=" + url.QueryEscape("a\x01b"): "user",
		"from=2020-01-01&to=2023-01-01":     "from",
	}
	for query, param := range cases {
		t.Run(query[:min(len(query), 30)], func(t *testing.T) {
			status, doc := getDoc(t, c, e.srv.URL+"/p/proj_prod/traces?"+query)
			require.Equal(t, http.StatusBadRequest, status)
			msg := text(doc.Find(`[data-testid=error-message]`))
			require.True(t, strings.HasPrefix(msg, param+":"), "message %q names %s", msg, param)
		})
	}
}
