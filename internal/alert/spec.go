package alert

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/guardwatch/observatory/internal/filter"
)

// Channel types.
const (
	ChannelWebhook = "webhook" // signed JSON POST
	ChannelSlack   = "slack"   // Slack-compatible incoming webhook, {"text": ...}
	ChannelNATS    = "nats"    // guard.v1.<account>.<project>.alert on the stream
)

// ChannelTypes lists the channel types in display order.
var ChannelTypes = []string{ChannelWebhook, ChannelSlack, ChannelNATS}

// Grouping keys: each group has its own window and cooldown.
const (
	GroupNone    = "none"
	GroupUser    = "user"
	GroupSession = "session"
	GroupPolicy  = "policy"
)

// GroupKeys lists the grouping keys in display order.
var GroupKeys = []string{GroupNone, GroupUser, GroupSession, GroupPolicy}

// Limits of a subscription. They bound the state the evaluator keeps per
// group and what one project may hold.
const (
	MaxThreshold  = 1000
	MaxWindow     = 24 * time.Hour
	MaxCooldown   = 24 * time.Hour
	MinWindow     = time.Second
	DefaultWindow = time.Minute
	MaxNameLen    = 100
	MaxURLLen     = 2048
	MaxPerProject = 50
)

// Duration is a time.Duration written as text ("90s", "5m") in JSON.
type Duration time.Duration

// MarshalText writes the duration as time.Duration.String does.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(time.Duration(d).String()), nil
}

// UnmarshalText reads a time.ParseDuration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: want e.g. 90s, 5m or 1h", b)
	}
	*d = Duration(v)
	return nil
}

// Std returns the time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Channel is where a subscription's alerts go.
type Channel struct {
	Type string `json:"type"`
	// URL is the webhook or Slack incoming-webhook URL; empty for nats.
	URL string `json:"url,omitempty"`
}

// Spec is the part of a subscription its owner sets, in the JSON API and
// in the form. Match holds conditions under the traces page's query
// parameter names (filter.MatchParams), e.g. {"outcome": "blocked",
// "severity": "high"}; lists are comma-separated.
type Spec struct {
	Name  string            `json:"name"`
	Match map[string]string `json:"match"`
	// Threshold is N: an alert needs at least N matching decisions of one
	// group within Window. Default 1: every match.
	Threshold int `json:"threshold"`
	// Window is W, default 1m.
	Window Duration `json:"window"`
	// GroupBy is none (default), user, session or policy.
	GroupBy string `json:"group_by"`
	// Cooldown is how long a group stays quiet after an alert; matches
	// meanwhile are counted and reported with the next alert. Default 0.
	Cooldown Duration `json:"cooldown"`
	Channel  Channel  `json:"channel"`
	// Paused stops alerts without deleting the subscription.
	Paused bool `json:"paused"`
}

// SpecError is a problem with a spec that its author can fix; its text
// names the field and is safe to show.
type SpecError struct {
	Field string
	Msg   string
}

func (e *SpecError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

func specErr(field, format string, args ...any) error {
	return &SpecError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// normalize checks the spec, fills defaults and returns it with its match
// compiled. The match is stored in its canonical form, so that what is
// shown is what is matched.
func normalize(s Spec) (Spec, filter.Filter, error) {
	s.Name = strings.TrimSpace(s.Name)
	switch {
	case s.Name == "":
		return s, filter.Filter{}, specErr("name", "is required")
	case utf8.RuneCountInString(s.Name) > MaxNameLen || !utf8.ValidString(s.Name):
		return s, filter.Filter{}, specErr("name", "must be at most %d characters", MaxNameLen)
	case strings.ContainsFunc(s.Name, unicode.IsControl):
		return s, filter.Filter{}, specErr("name", "must not contain control characters")
	}

	f, err := compile(s.Match)
	if err != nil {
		return s, filter.Filter{}, err
	}
	s.Match = map[string]string{}
	canon := f.MatchValues()
	for k := range canon {
		s.Match[k] = canon.Get(k)
	}

	if s.Threshold == 0 {
		s.Threshold = 1
	}
	if s.Window == 0 {
		s.Window = Duration(DefaultWindow)
	}
	if s.GroupBy == "" {
		s.GroupBy = GroupNone
	}
	switch {
	case s.Threshold < 1 || s.Threshold > MaxThreshold:
		return s, f, specErr("threshold", "must be from 1 to %d", MaxThreshold)
	case s.Window.Std() < MinWindow || s.Window.Std() > MaxWindow:
		return s, f, specErr("window", "must be from %s to %s", MinWindow, MaxWindow)
	case s.Cooldown < 0 || s.Cooldown.Std() > MaxCooldown:
		return s, f, specErr("cooldown", "must be from 0s to %s", MaxCooldown)
	case !slices.Contains(GroupKeys, s.GroupBy):
		return s, f, specErr("group_by", "must be one of %s", strings.Join(GroupKeys, ", "))
	}
	ch, err := normalizeChannel(s.Channel)
	if err != nil {
		return s, f, err
	}
	s.Channel = ch
	return s, f, nil
}

// compile parses a match with the traces page's rules.
func compile(match map[string]string) (filter.Filter, error) {
	q := url.Values{}
	for k, v := range match {
		if v = strings.TrimSpace(v); v != "" {
			q.Set(k, v)
		}
	}
	f, err := filter.ParseMatch(q)
	if err != nil {
		return filter.Filter{}, specErr("match", "%s", err.Error())
	}
	return f, nil
}

func normalizeChannel(c Channel) (Channel, error) {
	c.URL = strings.TrimSpace(c.URL)
	switch c.Type {
	case ChannelNATS:
		if c.URL != "" {
			return c, specErr("channel.url", "must be empty for the nats channel")
		}
		return c, nil
	case ChannelWebhook, ChannelSlack:
		if err := checkURLSyntax(c.URL); err != nil {
			return c, err
		}
		return c, nil
	default:
		return c, specErr("channel.type", "must be one of %s", strings.Join(ChannelTypes, ", "))
	}
}

// checkURLSyntax accepts an absolute http or https URL with a host and
// without credentials or a fragment. Where it points is the Guard's
// business.
func checkURLSyntax(raw string) error {
	if raw == "" {
		return specErr("channel.url", "is required")
	}
	if len(raw) > MaxURLLen || strings.ContainsFunc(raw, unicode.IsControl) ||
		strings.ContainsFunc(raw, unicode.IsSpace) {
		return specErr("channel.url", "must be a URL of at most %d characters", MaxURLLen)
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return specErr("channel.url", "is not a valid URL")
	case u.Scheme != "https" && u.Scheme != "http":
		return specErr("channel.url", "must start with https:// or http://")
	case u.Hostname() == "":
		return specErr("channel.url", "must name a host")
	case u.User != nil:
		return specErr("channel.url", "must not carry a user name or password")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return specErr("channel.url", "must not have a #fragment")
	}
	return nil
}
