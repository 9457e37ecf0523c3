// Package filter is the one model of "which decisions" shared by the traces
// page, exports and alert subscriptions, with its query-string form.
package filter

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/guardwatch/observatory/internal/events"
)

// MaxRange is the longest time range any filter may span, the longest
// retention a tier may have; each project's tier sets its own, shorter
// limit (deploy/tiers.yaml, query.max_range).
const MaxRange = 730 * 24 * time.Hour

// Presets are the named relative ranges, shortest first.
var Presets = []struct {
	Name string
	Dur  time.Duration
}{
	{"15m", 15 * time.Minute}, {"1h", time.Hour}, {"6h", 6 * time.Hour},
	{"24h", 24 * time.Hour}, {"7d", 7 * 24 * time.Hour}, {"30d", 30 * 24 * time.Hour},
	{"90d", 90 * 24 * time.Hour},
}

// DefaultPreset is the range used when the query names none.
const DefaultPreset = "24h"

// Filter selects decisions of one project. The time range is half-open:
// From is inclusive, To is exclusive, both in UTC. Empty fields match all.
type Filter struct {
	Preset string // the named range From/To came from, or "" for custom
	From   time.Time
	To     time.Time

	Outcomes    []string
	Decisions   []string
	Modes       []string
	EventTypes  []string
	MinSeverity string // at or above this severity
	Category    string
	PolicyID    string
	Detector    string
	MinScore    float64 // highest signal score at or above; 0 means any
	UserID      string
	AgentID     string
	SessionID   string
	Application string
	TraceID     string
	Text        string // substring of reason or content preview, case-insensitive

	// ReasonOnly limits Text to the reason, for viewers who may not read
	// content previews (searching them would let a viewer probe content).
	// It is set from the viewer's permissions, never from the query.
	ReasonOnly bool
}

// Error is a query-string problem a user can fix; its text names the
// parameter and is safe to show.
type Error struct {
	Param string
	Msg   string
	// TooLong marks a range longer than MaxRange, so that a caller with a
	// shorter limit of its own can name that limit instead.
	TooLong bool
}

func (e *Error) Error() string { return e.Param + ": " + e.Msg }

func bad(param, format string, args ...any) error {
	return &Error{Param: param, Msg: fmt.Sprintf(format, args...)}
}

const maxTextLen = 256

// Parse reads a filter from query parameters. Relative ranges are resolved
// against now; custom "from"/"to" values are RFC 3339 or, without a zone,
// local times in loc (the viewer's zone), converted to UTC.
func Parse(q url.Values, now time.Time, loc *time.Location) (Filter, error) {
	var f Filter
	if loc == nil {
		loc = time.UTC
	}
	if err := f.parseRange(q, now, loc); err != nil {
		return Filter{}, err
	}

	var err error
	lists := []struct {
		param   string
		dst     *[]string
		allowed []string
	}{
		{"outcome", &f.Outcomes, events.Outcomes},
		{"decision", &f.Decisions, events.Decisions},
		{"mode", &f.Modes, events.Modes},
		{"event_type", &f.EventTypes, events.EventTypes},
	}
	for _, l := range lists {
		if *l.dst, err = enumList(q, l.param, l.allowed); err != nil {
			return Filter{}, err
		}
	}
	if v := q.Get("severity"); v != "" {
		if events.SeverityRank(v) < 0 {
			return Filter{}, bad("severity", "must be one of %s",
				strings.Join(events.Severities, ", "))
		}
		f.MinSeverity = v
	}
	if v := q.Get("min_score"); v != "" {
		s, err := strconv.ParseFloat(v, 64)
		if err != nil || s < 0 || s > 100 || s != s {
			return Filter{}, bad("min_score", "must be a number from 0 to 100")
		}
		f.MinScore = s
	}

	texts := []struct {
		param string
		dst   *string
	}{
		{"category", &f.Category}, {"policy", &f.PolicyID}, {"detector", &f.Detector},
		{"user", &f.UserID}, {"agent", &f.AgentID}, {"session", &f.SessionID},
		{"application", &f.Application}, {"trace", &f.TraceID}, {"q", &f.Text},
	}
	for _, t := range texts {
		v := strings.TrimSpace(q.Get(t.param))
		if len(v) > maxTextLen {
			return Filter{}, bad(t.param, "must be at most %d bytes", maxTextLen)
		}
		if !utf8.ValidString(v) {
			return Filter{}, bad(t.param, "must be valid UTF-8")
		}
		if strings.ContainsFunc(v, isControl) {
			return Filter{}, bad(t.param, "must not contain control characters")
		}
		*t.dst = v
	}
	return f, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func enumList(q url.Values, param string, allowed []string) ([]string, error) {
	var out []string
	for _, raw := range q[param] {
		for _, v := range strings.Split(raw, ",") {
			v = strings.TrimSpace(v)
			if v == "" {
				continue
			}
			if !slices.Contains(allowed, v) {
				return nil, bad(param, "must be one of %s", strings.Join(allowed, ", "))
			}
			if !slices.Contains(out, v) {
				out = append(out, v)
			}
		}
	}
	return out, nil
}

func (f *Filter) parseRange(q url.Values, now time.Time, loc *time.Location) error {
	from, to := q.Get("from"), q.Get("to")
	preset := q.Get("range")
	if from == "" && to == "" {
		if preset == "" {
			preset = DefaultPreset
		}
		for _, p := range Presets {
			if p.Name == preset {
				f.Preset = p.Name
				f.To = now.UTC().Truncate(time.Second).Add(time.Second)
				f.From = f.To.Add(-p.Dur)
				return nil
			}
		}
		names := make([]string, len(Presets))
		for i, p := range Presets {
			names[i] = p.Name
		}
		return bad("range", "must be one of %s, or give from and to", strings.Join(names, ", "))
	}
	if from == "" || to == "" {
		return bad("from", "a custom range needs both from and to")
	}

	var err error
	if f.From, err = parseTime(from, loc, false); err != nil {
		return bad("from", "%s", err.Error())
	}
	if f.To, err = parseTime(to, loc, true); err != nil {
		return bad("to", "%s", err.Error())
	}
	// Stored times are ClickHouse DateTimes, which start in 1970; an
	// earlier from would also be the zero time that means "no range".
	if f.From.Before(time.Unix(0, 0)) {
		return bad("from", "must be in 1970 or later")
	}
	if !f.From.Before(f.To) {
		return bad("to", "must be after from")
	}
	if f.To.Sub(f.From) > MaxRange {
		return &Error{Param: "from", TooLong: true, Msg: fmt.Sprintf(
			"the range may span at most %d days", int(MaxRange.Hours()/24))}
	}
	return nil
}

// parseTime reads RFC 3339, a local "2006-01-02T15:04[:05]" (a
// datetime-local input) or a date. A date as the end of a range means the
// end of that day, so that the last day is not dropped.
func parseTime(s string, loc *time.Location, end bool) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02T15:04"} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t.UTC(), nil
		}
	}
	if t, err := time.ParseInLocation("2006-01-02", s, loc); err == nil {
		if end {
			t = t.AddDate(0, 0, 1)
		}
		return t.UTC(), nil
	}
	return time.Time{}, fmt.Errorf("must be a date, a local date and time, or RFC 3339")
}

// Values encodes the filter as query parameters that Parse reads back to
// the same filter. A preset range is kept relative.
func (f Filter) Values() url.Values {
	q := url.Values{}
	if f.Preset != "" {
		q.Set("range", f.Preset)
	} else if !f.From.IsZero() {
		q.Set("from", f.From.UTC().Format(time.RFC3339))
		q.Set("to", f.To.UTC().Format(time.RFC3339))
	}
	setList := func(k string, v []string) {
		if len(v) > 0 {
			q.Set(k, strings.Join(v, ","))
		}
	}
	setList("outcome", f.Outcomes)
	setList("decision", f.Decisions)
	setList("mode", f.Modes)
	setList("event_type", f.EventTypes)
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("severity", f.MinSeverity)
	if f.MinScore > 0 {
		q.Set("min_score", strconv.FormatFloat(f.MinScore, 'f', -1, 64))
	}
	set("category", f.Category)
	set("policy", f.PolicyID)
	set("detector", f.Detector)
	set("user", f.UserID)
	set("agent", f.AgentID)
	set("session", f.SessionID)
	set("application", f.Application)
	set("trace", f.TraceID)
	set("q", f.Text)
	return q
}

// SpanText writes the length of a time range for people: whole days as
// "400d", two days or more as "458d 17h", shorter ones as "6h" or "90m".
func SpanText(d time.Duration) string {
	day := 24 * time.Hour
	switch {
	case d > 0 && d%day == 0:
		return strconv.FormatInt(int64(d/day), 10) + "d"
	case d >= 2*day:
		return fmt.Sprintf("%dd %dh", int64(d/day), int64(d%day/time.Hour))
	}
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
