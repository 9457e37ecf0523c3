package web

import (
	"context"
	"net/http"

	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/store"
)

// TopList is a ranked list of a facet's values, each linking to Traces.
type TopList struct {
	Title string
	Items []FacetValueView
}

// OverviewView is a project's overview page.
type OverviewView struct {
	Chrome
	Presets    []PresetLink
	RangeLabel string
	Zone       string
	Total      string
	Blocked    string
	Flagged    string
	P50, P95   string
	Chart      ChartView
	Tops       []TopList
	TracesHref string
}

func (s *server) overview(w http.ResponseWriter, r *http.Request) error {
	sc, err := s.projectScope(r, authz.ListTraces)
	if err != nil {
		return err
	}
	project := sc.Project()
	f, loc, err := s.scopedFilter(r, sc)
	if err != nil {
		return err
	}
	f = rangeOf(f)

	done, err := s.beginQuery(sc)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(r.Context(), s.QueryTimeout)
	defer cancel()
	step := chartStep(f.To.Sub(f.From))
	series, err := s.Store.OutcomeSeries(ctx, sc, f, step)
	if err != nil {
		return err
	}
	lat, err := s.Store.LatencyQuantiles(ctx, sc, f)
	if err != nil {
		return err
	}
	facets, err := s.Store.Facets(ctx, sc, f)
	if err != nil {
		return err
	}
	done()

	traces := projectPath(project, "traces")
	fv := filterView(projectPath(project), f, loc, false, s.maxRange(sc))
	v := OverviewView{Chrome: s.chrome(r, project), Presets: fv.Presets,
		RangeLabel: fv.RangeLabel, Zone: fv.Zone, Total: count(lat.Decisions),
		P50: "–", P95: "–", Chart: outcomeChart(series, f.From, f.To, step, loc),
		TracesHref: href(traces, f.Values())}
	v.Section = "overview"
	if lat.Decisions > 0 {
		v.P50, v.P95 = ms(lat.P50MS), ms(lat.P95MS)
	}
	var blocked, flagged uint64
	for _, o := range facets[store.FacetOutcome] {
		switch o.Value {
		case "blocked":
			blocked += o.Count
		case "alerted", "monitored":
			flagged += o.Count
		}
	}
	v.Blocked, v.Flagged = count(blocked), count(flagged)
	views := facetViews(traces, f, facets)
	for _, want := range []struct{ name, title string }{
		{store.FacetCategory, "Top threat categories"}, {store.FacetPolicy, "Top policies"},
		{store.FacetUser, "Top users"}, {store.FacetAgent, "Top agents"},
	} {
		t := TopList{Title: want.title}
		for _, fv := range views {
			if fv.Name == want.name {
				t.Items = fv.Values
			}
		}
		v.Tops = append(v.Tops, t)
	}
	return s.render(w, r, http.StatusOK, OverviewPage(v))
}
