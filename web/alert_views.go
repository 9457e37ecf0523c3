package web

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/guardwatch/observatory/internal/alert"
	"github.com/guardwatch/observatory/internal/events"
)

// AlertsView is the page of a project's alert subscriptions.
type AlertsView struct {
	Chrome
	Rows      []AlertRow
	CanManage bool
	Form      AlertForm // the create form, when CanManage
}

// AlertRow is one subscription in the list.
type AlertRow struct {
	ID, Name, Href string
	Match          string // the conditions in words
	Rule           string // threshold, window, grouping and cooldown in words
	Channel        string
	Paused         bool
	Last           *DeliveryRow // the newest delivery, if any
}

// AlertView is the page of one subscription.
type AlertView struct {
	Chrome
	ID, Name   string
	ListHref   string
	Summary    []KV
	Paused     bool
	CanManage  bool
	CanTest    bool
	TestAction string
	DelAction  string
	// Secret is shown once, on the page that answers the creation.
	Secret     string
	Notice     string // outcome of the last action, e.g. a test send
	Form       AlertForm
	Deliveries []DeliveryRow
}

// AlertForm is the create or edit form of a subscription.
type AlertForm struct {
	Action, CSRF, Submit string
	Error                string // what to fix, after a refused save
	Name                 string
	Match                []SelectField
	MatchTexts           []TextField
	Threshold            string
	Window               SelectField
	GroupBy              SelectField
	Cooldown             SelectField
	Channel              SelectField
	URL                  string
	Paused               bool
}

// DeliveryRow is one recorded delivery.
type DeliveryRow struct {
	Time        TimeView
	Status      string
	StatusClass string
	HTTP        string
	Attempts    string
	Latency     string
	Error       string
	AlertID     string
	Group       string
	Count       string
	Test        bool
}

// alertMaxThreshold bounds the threshold field of the form.
const alertMaxThreshold = alert.MaxThreshold

var (
	windowChoices   = []string{"10s", "30s", "1m", "5m", "15m", "1h", "6h", "24h"}
	cooldownChoices = []string{"0s", "1m", "5m", "15m", "1h", "6h", "24h"}
	matchTextFields = []struct{ name, label, placeholder string }{
		{"category", "Threat category", "prompt_injection"},
		{"policy", "Policy id", "pol-block-injection"},
		{"min_score", "Detector score ≥", "0–100"},
		{"user", "User", "user id"},
		{"agent", "Agent", "agent id"},
		{"application", "Application", "application id"},
	}
)

// alertForm builds the form for a spec: a new subscription's defaults, a
// stored one, or what the viewer submitted.
func alertForm(action, csrf, submit string, spec alert.Spec) AlertForm {
	f := AlertForm{Action: action, CSRF: csrf, Submit: submit, Name: spec.Name,
		Threshold: strconv.Itoa(max(spec.Threshold, 1)), URL: spec.Channel.URL,
		Paused: spec.Paused}
	f.Match = []SelectField{
		choice("outcome", "Outcome", spec.Match["outcome"], "any",
			append([]string{""}, events.Outcomes...)),
		choice("severity", "Severity at or above", spec.Match["severity"], "any",
			append([]string{""}, events.Severities[1:]...)),
	}
	for _, t := range matchTextFields {
		f.MatchTexts = append(f.MatchTexts, TextField{Name: t.name, Label: t.label,
			Value: spec.Match[t.name], Placeholder: t.placeholder})
	}
	f.Window = choice("window", "Within", durationText(spec.Window), "",
		windowChoices)
	f.GroupBy = choice("group_by", "Count per", orDefault(spec.GroupBy, alert.GroupNone), "",
		alert.GroupKeys)
	f.Cooldown = choice("cooldown", "Then quiet for", durationText(spec.Cooldown), "",
		cooldownChoices)
	f.Channel = choice("channel", "Send to", orDefault(spec.Channel.Type, alert.ChannelWebhook),
		"", alert.ChannelTypes)
	return f
}

// choice is a select of values; the current value is kept even when it
// is not among them (a value the API set), so a save does not change it.
func choice(name, label, cur, emptyLabel string, values []string) SelectField {
	if cur != "" && !slices.Contains(values, cur) {
		values = append(slices.Clone(values), cur)
	}
	sf := SelectField{Name: name, Label: label}
	for _, v := range values {
		l := v
		if v == "" {
			l = emptyLabel
		}
		sf.Options = append(sf.Options, Option{Value: v, Label: l, Selected: v == cur})
	}
	return sf
}

// durationText writes a duration as the form offers it: 5m, not 5m0s.
func durationText(d alert.Duration) string {
	s := d.Std().String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// newSpec is what the create form starts from.
func newSpec() alert.Spec {
	return alert.Spec{Threshold: 1, Window: alert.Duration(time.Minute),
		Cooldown: alert.Duration(5 * time.Minute), GroupBy: alert.GroupNone,
		Channel: alert.Channel{Type: alert.ChannelWebhook},
		Match:   map[string]string{"outcome": "blocked", "severity": "high"}}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// specFromForm reads a submitted form into a spec. What the store refuses
// is reported by the store; this only reads.
func specFromForm(r *http.Request) (alert.Spec, error) {
	f := r.PostForm
	spec := alert.Spec{Name: f.Get("name"), Match: map[string]string{},
		GroupBy: f.Get("group_by"), Paused: f.Get("paused") != "",
		Channel: alert.Channel{Type: f.Get("channel"), URL: f.Get("url")}}
	for _, k := range []string{"outcome", "severity"} {
		spec.Match[k] = f.Get(k)
	}
	for _, t := range matchTextFields {
		spec.Match[t.name] = f.Get(t.name)
	}
	if spec.Channel.Type == alert.ChannelNATS {
		spec.Channel.URL = ""
	}
	var err error
	if spec.Threshold, err = strconv.Atoi(strings.TrimSpace(f.Get("threshold"))); err != nil {
		return spec, badParam("threshold", "must be a whole number")
	}
	for _, d := range []struct {
		name string
		dst  *alert.Duration
	}{{"window", &spec.Window}, {"cooldown", &spec.Cooldown}} {
		v, err := time.ParseDuration(f.Get(d.name))
		if err != nil {
			return spec, badParam(d.name, "must be a duration such as 5m")
		}
		*d.dst = alert.Duration(v)
	}
	return spec, nil
}

// alertRow shows a subscription in the list.
func alertRow(project string, sub alert.Subscription) AlertRow {
	return AlertRow{ID: sub.ID, Name: clean(sub.Name, 100),
		Href:  projectPath(project, "alerts", sub.ID),
		Match: matchText(sub.Match), Rule: ruleText(sub.Spec),
		Channel: channelText(sub.Channel), Paused: sub.Paused}
}

// matchText lists the conditions in the order of filter.MatchParams.
func matchText(m map[string]string) string {
	q := url.Values{}
	for k, v := range m {
		q.Set(k, v)
	}
	var parts []string
	for _, k := range []string{"outcome", "decision", "mode", "event_type", "severity",
		"min_score", "category", "policy", "detector", "user", "agent", "session",
		"application"} {
		v := q.Get(k)
		switch {
		case v == "":
		case k == "severity":
			parts = append(parts, "severity ≥ "+v)
		case k == "min_score":
			parts = append(parts, "score ≥ "+v)
		default:
			parts = append(parts, k+" = "+clean(v, 60))
		}
	}
	if len(parts) == 0 {
		return "every decision"
	}
	return strings.Join(parts, ", ")
}

func ruleText(s alert.Spec) string {
	var b strings.Builder
	if s.Threshold <= 1 {
		b.WriteString("every match")
	} else {
		b.WriteString(strconv.Itoa(s.Threshold) + " matches within " +
			durationText(s.Window))
	}
	if s.GroupBy != "" && s.GroupBy != alert.GroupNone {
		b.WriteString(" per " + s.GroupBy)
	}
	if s.Cooldown > 0 {
		b.WriteString(", then quiet for " + durationText(s.Cooldown))
	}
	return b.String()
}

func channelText(c alert.Channel) string {
	switch c.Type {
	case alert.ChannelNATS:
		return "NATS alert subject"
	case alert.ChannelSlack:
		return "Slack: " + hostOf(c.URL)
	default:
		return "Webhook: " + hostOf(c.URL)
	}
}

// hostOf shows where a URL points without its path, which for Slack
// carries the webhook's own secret.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return clean(u.Host, 80)
}

// deliveryRow shows one delivery in the viewer's zone.
func deliveryRow(d alert.Delivery, loc *time.Location, now time.Time) DeliveryRow {
	row := DeliveryRow{Time: timeView(d.At, loc, now), Status: d.Status,
		Attempts: strconv.Itoa(d.Attempts), Latency: ms(d.LatencyMS),
		Error: clean(d.Error, 120), AlertID: clean(d.AlertID, 64), Group: clean(d.Group, 60),
		Count: strconv.Itoa(d.Count), Test: d.Test, StatusClass: "oc oc-allowed"}
	if d.Status != alert.StatusDelivered {
		row.StatusClass = "oc oc-blocked"
	}
	if d.HTTPStatus > 0 {
		row.HTTP = strconv.Itoa(d.HTTPStatus)
	}
	return row
}
