package web

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/store"
)

// parseFilter reads the filter of a request in the viewer's zone.
func (s *server) parseFilter(r *http.Request) (filter.Filter, *time.Location, error) {
	loc := viewerZone(r)
	f, err := filter.Parse(r.URL.Query(), s.Now(), loc)
	return f, loc, err
}

// viewerZone is the zone app.js stored in a cookie, or UTC.
func viewerZone(r *http.Request) *time.Location {
	c, err := r.Cookie(tzCookie)
	if err != nil || c.Value == "" || len(c.Value) > 64 || strings.Contains(c.Value, "..") {
		return time.UTC
	}
	name, err := url.QueryUnescape(c.Value)
	if err != nil {
		return time.UTC
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return time.UTC
	}
	return loc
}

// href is path with the filter's query plus extra parameters.
func href(path string, q url.Values) string {
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}

// with returns a copy of the filter's query with key set to value, or
// removed when value is empty.
func with(f filter.Filter, key, value string) url.Values {
	q := f.Values()
	if value == "" {
		q.Del(key)
	} else {
		q.Set(key, value)
	}
	return q
}

// Option is one choice of a select.
type Option struct {
	Value, Label string
	Selected     bool
}

// SelectField is a single-choice filter.
type SelectField struct {
	Name, Label string
	Options     []Option
}

// TextField is a free-text filter.
type TextField struct {
	Name, Label, Value, Placeholder string
}

// PresetLink is one relative time range.
type PresetLink struct {
	Name, Href string
	Active     bool
}

// Chip is an active filter with a link that removes it.
type Chip struct {
	Label, Value, RemoveHref string
}

// FilterView is the filter bar of a list page.
type FilterView struct {
	Action     string
	Presets    []PresetLink
	Custom     bool
	FromLocal  string // datetime-local values of a custom range
	ToLocal    string
	FromUTC    string // the exact range, RFC 3339, kept by the filter form
	ToUTC      string
	RangeLabel string
	Zone       string
	Selects    []SelectField
	Texts      []TextField
	Search     TextField
	// SearchHint explains what the free-text search covers.
	SearchHint string
	Chips      []Chip
	ResetHref  string
	// Limit is an explicit rows-per-page parameter, kept by the forms.
	Limit string
}

// filterView builds the filter bar. contentSearch says whether the viewer
// may search content previews (view_content); presets longer than
// maxRange (the tier's longest range; 0 for none) are not offered.
func filterView(path string, f filter.Filter, loc *time.Location, contentSearch bool,
	maxRange time.Duration) FilterView {
	v := FilterView{Action: path, Zone: loc.String(), Custom: f.Preset == ""}
	for _, p := range filter.Presets {
		if maxRange > 0 && p.Dur > maxRange {
			continue
		}
		q := f.Values()
		q.Del("from")
		q.Del("to")
		q.Set("range", p.Name)
		v.Presets = append(v.Presets, PresetLink{Name: p.Name, Href: href(path, q),
			Active: f.Preset == p.Name})
	}
	const local = "2006-01-02T15:04"
	v.FromUTC, v.ToUTC = f.From.UTC().Format(time.RFC3339), f.To.UTC().Format(time.RFC3339)
	if v.Custom {
		v.FromLocal = f.From.In(loc).Format(local)
		v.ToLocal = f.To.In(loc).Format(local)
		v.RangeLabel = f.From.In(loc).Format("Jan 02 15:04") + " – " +
			f.To.In(loc).Format("Jan 02 15:04 MST")
	} else {
		v.FromLocal = f.From.In(loc).Format(local)
		v.ToLocal = f.To.In(loc).Format(local)
		v.RangeLabel = "Last " + f.Preset
	}

	v.Selects = []SelectField{
		selectField("outcome", "Outcome", events.Outcomes, f.Outcomes),
		selectField("decision", "Decision", events.Decisions, f.Decisions),
		selectField("mode", "Mode", events.Modes, f.Modes),
		selectField("severity", "Min. severity", events.Severities[1:], oneOf(f.MinSeverity)),
		selectField("event_type", "Event type", events.EventTypes, f.EventTypes),
	}
	v.Texts = []TextField{
		{"category", "Threat category", f.Category, "e.g. prompt_injection"},
		{"policy", "Policy id", f.PolicyID, ""},
		{"detector", "Detector", f.Detector, ""},
		{"user", "User", f.UserID, ""},
		{"agent", "Agent", f.AgentID, ""},
		{"session", "Session", f.SessionID, ""},
		{"application", "Application", f.Application, ""},
		{"trace", "Trace id", f.TraceID, ""},
	}
	v.Search = TextField{"q", "Search", f.Text, "Search reasons"}
	v.SearchHint = "Matches reasons, case-insensitive."
	if contentSearch {
		v.Search.Placeholder = "Search reasons and content previews"
		v.SearchHint = "Matches reasons and content previews, case-insensitive."
	}
	for k, vals := range f.Values() {
		if k == "range" || k == "from" || k == "to" {
			continue
		}
		v.Chips = append(v.Chips, Chip{Label: paramLabel(k), Value: clean(vals[0], 60),
			RemoveHref: href(path, with(f, k, ""))})
	}
	slices.SortFunc(v.Chips, func(a, b Chip) int { return strings.Compare(a.Label, b.Label) })
	q := url.Values{}
	if f.Preset != "" {
		q.Set("range", f.Preset)
	} else {
		q = f.Values()
		for k := range q {
			if k != "from" && k != "to" {
				q.Del(k)
			}
		}
	}
	v.ResetHref = href(path, q)
	return v
}

func oneOf(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

func selectField(name, label string, values, selected []string) SelectField {
	f := SelectField{Name: name, Label: label}
	f.Options = append(f.Options, Option{Value: "", Label: "Any", Selected: len(selected) == 0})
	if len(selected) > 1 {
		joined := strings.Join(selected, ",")
		f.Options = append(f.Options, Option{Value: joined,
			Label: strings.Join(selected, " or "), Selected: true})
	}
	for _, v := range values {
		f.Options = append(f.Options, Option{Value: v, Label: v,
			Selected: len(selected) == 1 && selected[0] == v})
	}
	return f
}

var paramLabels = map[string]string{
	"outcome": "Outcome", "decision": "Decision", "mode": "Mode", "severity": "Severity ≥",
	"event_type": "Event type", "category": "Category", "policy": "Policy",
	"detector": "Detector", "user": "User", "agent": "Agent", "session": "Session",
	"application": "Application", "trace": "Trace", "q": "Search", "min_score": "Score ≥",
}

func paramLabel(k string) string {
	if l, ok := paramLabels[k]; ok {
		return l
	}
	return k
}

// facetParam maps a store facet to the query parameter it filters on.
var facetParam = map[string]string{
	store.FacetOutcome: "outcome", store.FacetDecision: "decision", store.FacetMode: "mode",
	store.FacetSeverity: "severity", store.FacetEventType: "event_type",
	store.FacetCategory: "category", store.FacetPolicy: "policy",
	store.FacetDetector: "detector", store.FacetUser: "user", store.FacetAgent: "agent",
	store.FacetApplication: "application",
}

var facetLabels = map[string]string{
	store.FacetOutcome: "Outcome", store.FacetDecision: "Decision", store.FacetMode: "Mode",
	store.FacetSeverity: "Severity", store.FacetEventType: "Event type",
	store.FacetCategory: "Threat category", store.FacetPolicy: "Policy",
	store.FacetDetector: "Detector", store.FacetUser: "User", store.FacetAgent: "Agent",
	store.FacetApplication: "Application",
}

// FacetView is one facet's values with counts; each value links to the
// list filtered by it, or, when already the filter, back without it.
type FacetView struct {
	Name, Label string
	Values      []FacetValueView
}

// FacetValueView is one value of a facet.
type FacetValueView struct {
	Label, Count, Href, Class string
	Active                    bool
	Share                     float64 // of the facet's largest count, 0..1
}

func facetViews(path string, f filter.Filter, fs store.Facets) []FacetView {
	active := f.Values()
	var out []FacetView
	for _, name := range store.FacetNames {
		vals := fs[name]
		if len(vals) == 0 {
			continue
		}
		param := facetParam[name]
		fv := FacetView{Name: name, Label: facetLabels[name]}
		top := float64(vals[0].Count)
		for _, v := range vals {
			on := active.Get(param) == v.Value
			target := v.Value
			if on {
				target = ""
			}
			item := FacetValueView{Label: clean(v.Value, 48), Count: count(v.Count),
				Href: href(path, with(f, param, target)), Active: on}
			if top > 0 {
				item.Share = float64(v.Count) / top
			}
			switch name {
			case store.FacetSeverity:
				item.Class = sevClass(v.Value)
			case store.FacetOutcome:
				item.Class = outcomeClass(v.Value)
			}
			fv.Values = append(fv.Values, item)
		}
		out = append(out, fv)
	}
	return out
}

// listRequest is the common start of a list page: the project's scope for
// the action, the filter from the query (its range within the project's
// tier), the viewer's zone, and whether
// the viewer may read content. Without content access, text search is
// limited to reasons so previews cannot be probed through it.
func (s *server) listRequest(r *http.Request, action authz.Action) (store.Scope,
	filter.Filter, *time.Location, bool, error) {
	sc, err := s.projectScope(r, action)
	if err != nil {
		return store.Scope{}, filter.Filter{}, nil, false, err
	}
	f, loc, err := s.scopedFilter(r, sc)
	if err != nil {
		return store.Scope{}, filter.Filter{}, nil, false, err
	}
	content, err := s.allowed(r.Context(), authz.ViewContent, authz.KindProject,
		sc.Project(), "")
	if err != nil {
		return store.Scope{}, filter.Filter{}, nil, false, err
	}
	f.ReasonOnly = !content
	return sc, f, loc, content, nil
}
