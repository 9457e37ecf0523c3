package alert

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/guardwatch/observatory/internal/events"
)

// AlertType names the JSON body of a notification, for receivers that
// take several kinds of message.
const AlertType = "guard.alert.v1"

// Alert is the body of a notification: what fired, for which group, and
// the decision that tipped it. ID is the idempotency key: a receiver that
// sees an ID again may drop it.
type Alert struct {
	Type         string `json:"type"`
	ID           string `json:"id"`
	AccountID    string `json:"account_id"`
	ProjectID    string `json:"project_id"`
	Subscription SubRef `json:"subscription"`
	GroupBy      string `json:"group_by"`
	// Group is the grouping value (a user, session or policy id); empty
	// for group_by none or a decision without that value.
	Group     string   `json:"group,omitempty"`
	Count     int      `json:"count"`
	Threshold int      `json:"threshold"`
	Window    Duration `json:"window"`
	// FirstAt and LastAt span the counted decisions, by stream arrival.
	FirstAt time.Time `json:"first_at"`
	LastAt  time.Time `json:"last_at"`
	FiredAt time.Time `json:"fired_at"`
	// Suppressed counts the group's matches during the cooldown before
	// this alert, which sent nothing.
	Suppressed int64 `json:"suppressed"`
	// EventIDs are the newest counted decisions, at most sampleSize.
	EventIDs []string     `json:"event_ids"`
	Trigger  EventSummary `json:"trigger"`
	// Link opens the subscription in the observatory, when its URL is
	// configured.
	Link string `json:"link,omitempty"`
	Test bool   `json:"test,omitempty"`
}

// SubRef names the subscription an alert belongs to.
type SubRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// EventSummary is the part of a decision an alert carries: no content and
// no previews, only what the traces list shows.
type EventSummary struct {
	EventID         string    `json:"event_id"`
	OccurredAt      time.Time `json:"occurred_at"`
	Outcome         string    `json:"outcome"`
	Decision        string    `json:"decision"`
	HighestSeverity string    `json:"highest_severity"`
	EventType       string    `json:"event_type"`
	Categories      []string  `json:"threat_categories"`
	Policies        []string  `json:"policy_ids"`
	UserID          string    `json:"user_id,omitempty"`
	AgentID         string    `json:"agent_id,omitempty"`
	SessionID       string    `json:"session_id,omitempty"`
	ApplicationID   string    `json:"application_id,omitempty"`
	Reason          string    `json:"reason,omitempty"`
	MaxScore        *float64  `json:"max_score,omitempty"`
}

const (
	sampleSize   = 10  // event ids an alert lists
	maxReasonLen = 200 // runes of the reason an alert carries
)

// summarize keeps what an alert may carry of a decision.
func summarize(ev *events.Event) EventSummary {
	s := EventSummary{
		EventID: ev.EventID, OccurredAt: ev.OccurredAt.UTC(), Outcome: ev.Outcome,
		Decision: ev.Decision, HighestSeverity: ev.HighestSeverity, EventType: ev.EventType,
		Categories: ev.ThreatCategories, SessionID: ev.SessionID,
		ApplicationID: ev.ApplicationID, Reason: truncate(ev.Reason, maxReasonLen),
	}
	for _, p := range ev.DeterminingPolicies {
		s.Policies = append(s.Policies, p.PolicyID)
	}
	if ev.Identity != nil {
		s.UserID, s.AgentID = ev.Identity.UserID, ev.Identity.AgentID
	}
	for _, sig := range ev.Signals {
		if sig.Score != nil && (s.MaxScore == nil || *sig.Score > *s.MaxScore) {
			v := *sig.Score
			s.MaxScore = &v
		}
	}
	return s
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// Sample returns the alert a test send delivers: shaped like a real one,
// marked as a test, with a fresh id.
func Sample(sub *Subscription, now time.Time) *Alert {
	now = now.UTC().Truncate(time.Millisecond)
	score := 91.0
	return &Alert{
		Type: AlertType, ID: "test-" + newID()[len(idPrefix):],
		AccountID: sub.AccountID, ProjectID: sub.ProjectID,
		Subscription: SubRef{ID: sub.ID, Name: sub.Name},
		GroupBy:      sub.GroupBy, Count: sub.Threshold, Threshold: sub.Threshold,
		Window: sub.Window, FirstAt: now, LastAt: now, FiredAt: now,
		EventIDs: []string{"evt-sample"}, Test: true,
		Trigger: EventSummary{EventID: "evt-sample", OccurredAt: now, Outcome: "blocked",
			Decision: "deny", HighestSeverity: "high", EventType: "prompt",
			Categories: []string{"prompt_injection"}, Policies: []string{"pol-sample"},
			Reason: "Sample alert sent from the observatory", MaxScore: &score},
	}
}

// SlackText is the message of a Slack-compatible webhook. Slack's control
// characters in tenant data are escaped, so an event cannot add mentions
// or links.
func SlackText(a *Alert) string {
	var b strings.Builder
	if a.Test {
		b.WriteString("[test] ")
	}
	fmt.Fprintf(&b, "*%s*: %d matching decision", slackEscape(a.Subscription.Name), a.Count)
	if a.Count != 1 {
		b.WriteString("s")
	}
	if a.Threshold > 1 {
		fmt.Fprintf(&b, " within %s", a.Window.Std())
	}
	if a.GroupBy != GroupNone {
		fmt.Fprintf(&b, " for %s %s", a.GroupBy, slackEscape(orNone(a.Group)))
	}
	fmt.Fprintf(&b, " in %s/%s", a.AccountID, a.ProjectID)
	t := a.Trigger
	fmt.Fprintf(&b, "\nLatest: %s, severity %s", t.Outcome, t.HighestSeverity)
	if len(t.Categories) > 0 {
		fmt.Fprintf(&b, ", %s", slackEscape(strings.Join(t.Categories, ", ")))
	}
	if len(t.Policies) > 0 {
		fmt.Fprintf(&b, ", policy %s", slackEscape(strings.Join(t.Policies, ", ")))
	}
	if t.Reason != "" {
		fmt.Fprintf(&b, ": %s", slackEscape(t.Reason))
	}
	if a.Suppressed > 0 {
		fmt.Fprintf(&b, "\n%d more matched during the cooldown.", a.Suppressed)
	}
	if a.Link != "" {
		fmt.Fprintf(&b, "\n<%s|Open in the observatory>", a.Link)
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

var slackEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

func slackEscape(s string) string { return slackEscaper.Replace(s) }
