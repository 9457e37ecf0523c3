package filter

import (
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/guardwatch/observatory/internal/events"
)

// MatchParams are the query parameters a standing match may use: every
// field of the traces page except the time range, the trace id and the
// free-text search. A standing match (an alert subscription) looks at each
// decision as it arrives, so a range means nothing to it, and text search
// is left out so that a subscription cannot probe content previews.
var MatchParams = []string{
	"outcome", "decision", "mode", "event_type", "severity", "min_score",
	"category", "policy", "detector", "user", "agent", "session", "application",
}

// ParseMatch reads a standing match from query parameters with the same
// rules as Parse. A parameter outside MatchParams is an *Error. The result
// has no time range, so Matches looks at every decision's content only.
func ParseMatch(q url.Values) (Filter, error) {
	for k := range q {
		if !slices.Contains(MatchParams, k) {
			return Filter{}, bad(k, "is not a match field; use one of %s",
				strings.Join(MatchParams, ", "))
		}
	}
	f, err := Parse(q, time.Unix(0, 0), time.UTC)
	if err != nil {
		return Filter{}, err
	}
	f.Preset, f.From, f.To = "", time.Time{}, time.Time{}
	return f, nil
}

// MatchValues encodes the content conditions of the filter, without its
// time range, as parameters that ParseMatch reads back to the same filter.
func (f Filter) MatchValues() url.Values {
	f.Preset, f.From, f.To = "", time.Time{}, time.Time{}
	q := f.Values()
	q.Del("trace")
	q.Del("q")
	return q
}

// Matches reports whether the event passes the filter, with the meaning the
// store gives the same filter in a query: lists match any of their values,
// severity and score are "at or above", category, policy and detector match
// any element of the event's lists, and ids match exactly. A zero From or To
// leaves that end of the range open.
func (f Filter) Matches(ev *events.Event) bool {
	if ev == nil {
		return false
	}
	t := ev.OccurredAt
	if !f.From.IsZero() && t.Before(f.From) || !f.To.IsZero() && !t.Before(f.To) {
		return false
	}
	outcome := ev.Outcome
	if outcome == "" {
		outcome = events.DeriveOutcome(ev.Mode, ev.Decision, ev.ActualDecision)
	}
	if !inList(f.Outcomes, outcome) || !inList(f.Decisions, ev.Decision) ||
		!inList(f.Modes, ev.Mode) || !inList(f.EventTypes, ev.EventType) {
		return false
	}
	r := events.SeverityRank(f.MinSeverity)
	if r > 0 && events.SeverityRank(ev.HighestSeverity) < r {
		return false
	}
	if f.MinScore > 0 && !scoreAtLeast(ev, f.MinScore) {
		return false
	}
	var user, agent string
	if ev.Identity != nil {
		user, agent = ev.Identity.UserID, ev.Identity.AgentID
	}
	eq := [][2]string{
		{f.UserID, user}, {f.AgentID, agent}, {f.SessionID, ev.SessionID},
		{f.Application, ev.ApplicationID}, {f.TraceID, ev.TraceID},
	}
	for _, e := range eq {
		if e[0] != "" && e[0] != e[1] {
			return false
		}
	}
	if f.Category != "" && !slices.Contains(ev.ThreatCategories, f.Category) {
		return false
	}
	if f.PolicyID != "" && !slices.ContainsFunc(ev.DeterminingPolicies,
		func(p events.Policy) bool { return p.PolicyID == f.PolicyID }) {
		return false
	}
	if f.Detector != "" && !hasDetector(ev, f.Detector) {
		return false
	}
	return f.Text == "" || f.textMatches(ev)
}

func inList(list []string, v string) bool {
	return len(list) == 0 || slices.Contains(list, v)
}

// scoreAtLeast compares in float32, as the store keeps max_score.
func scoreAtLeast(ev *events.Event, min float64) bool {
	for _, s := range ev.Signals {
		if s.Score != nil && float32(*s.Score) >= float32(min) {
			return true
		}
	}
	return false
}

func hasDetector(ev *events.Event, name string) bool {
	for _, d := range ev.Detectors {
		if d.Name == name {
			return true
		}
	}
	for _, s := range ev.Signals {
		if s.Detector == name {
			return true
		}
	}
	return false
}

func (f Filter) textMatches(ev *events.Event) bool {
	needle := strings.ToLower(f.Text)
	if strings.Contains(strings.ToLower(ev.Reason), needle) {
		return true
	}
	return !f.ReasonOnly && ev.Content != nil &&
		strings.Contains(strings.ToLower(ev.Content.RedactedPreview), needle)
}
