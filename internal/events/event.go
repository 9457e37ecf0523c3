// Package events defines the guard decision event: its wire shape, strict
// decoding and validation, and the NATS subjects it travels on.
package events

import "time"

// SchemaVersion is the only decision event schema this package accepts.
const SchemaVersion = "1"

// Event is one decision a guard made about one checked request. Field names
// follow the guard's own vocabulary so that a published event, a stored row
// and an exported NDJSON line have the same shape.
type Event struct {
	SchemaVersion string    `json:"schema_version"`
	EventID       string    `json:"event_id"`
	OccurredAt    time.Time `json:"occurred_at"`
	AccountID     string    `json:"account_id"`
	ProjectID     string    `json:"project_id"`
	Source        string    `json:"source"`
	ApplicationID string    `json:"application_id,omitempty"`

	RequestID string `json:"request_id,omitempty"`
	AuditID   string `json:"audit_id,omitempty"`
	TraceID   string `json:"trace_id,omitempty"`
	SpanID    string `json:"span_id,omitempty"`
	SessionID string `json:"session_id,omitempty"`

	// ConversationTurn is the 1-based turn within the session, when known.
	ConversationTurn *int `json:"conversation_turn,omitempty"`

	EventType       string `json:"event_type"`
	Action          string `json:"action"`
	Mode            string `json:"mode"`
	Decision        string `json:"decision"`
	ActualDecision  string `json:"actual_decision"`
	Outcome         string `json:"outcome,omitempty"`
	Reason          string `json:"reason,omitempty"`
	HighestSeverity string `json:"highest_severity"`

	ThreatCategories    []string   `json:"threat_categories,omitempty"`
	DeterminingPolicies []Policy   `json:"determining_policies,omitempty"`
	Signals             []Signal   `json:"signals,omitempty"`
	Detectors           []Detector `json:"detectors,omitempty"`

	Latency  Latency   `json:"latency"`
	Identity *Identity `json:"identity,omitempty"`
	Model    *Model    `json:"model,omitempty"`
	Tool     *Tool     `json:"tool,omitempty"`
	Content  *Content  `json:"content,omitempty"`

	Metadata map[string]string `json:"metadata,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`

	// Raw is the compact JSON this event was decoded from, kept so that
	// storage and exports carry the producer's bytes without re-encoding.
	// It is empty for events built in code.
	Raw []byte `json:"-"`
}

// Policy is a policy that determined the decision.
type Policy struct {
	PolicyID      string   `json:"policy_id"`
	Severity      string   `json:"severity,omitempty"`
	Category      string   `json:"category,omitempty"`
	Tags          []string `json:"tags,omitempty"`
	RejectMessage string   `json:"reject_message,omitempty"`
}

// Signal is one detector finding. Score is 0–100; a detector that found
// nothing scorable leaves it out.
type Signal struct {
	ID       string   `json:"id"`
	Detector string   `json:"detector"`
	Score    *float64 `json:"score,omitempty"`
	Severity string   `json:"severity,omitempty"`
}

// Detector is one detector that ran for the request.
type Detector struct {
	Name      string  `json:"name"`
	Tier      string  `json:"tier,omitempty"`
	LatencyMS float64 `json:"latency_ms"`
	Status    string  `json:"status,omitempty"`
}

// Latency is the guard's own time for the decision.
type Latency struct {
	TotalMS float64 `json:"total_ms"`
	EvalMS  float64 `json:"eval_ms"`
}

// Identity describes who or what made the guarded request.
type Identity struct {
	UserID          string   `json:"user_id,omitempty"`
	AgentID         string   `json:"agent_id,omitempty"`
	Subject         string   `json:"subject,omitempty"`
	ActSub          string   `json:"act_sub,omitempty"`
	IdentityType    string   `json:"identity_type,omitempty"`
	TrustLevel      string   `json:"trust_level,omitempty"`
	DelegationDepth int      `json:"delegation_depth,omitempty"`
	Scopes          []string `json:"scopes,omitempty"`
}

// Model is the LLM the request was addressed to.
type Model struct {
	Provider   string `json:"provider,omitempty"`
	Model      string `json:"model,omitempty"`
	TokensUsed int64  `json:"tokens_used,omitempty"`
}

// Tool is the tool a tool_call event invoked.
type Tool struct {
	Name     string `json:"name,omitempty"`
	ServerID string `json:"server_id,omitempty"`
	Category string `json:"category,omitempty"`
}

// Content summarises the checked content. Raw content is not carried.
type Content struct {
	SHA256          string `json:"sha256,omitempty"`
	Length          int64  `json:"length,omitempty"`
	RedactedPreview string `json:"redacted_preview,omitempty"`
}

// Enumerations of the schema, in a stable order (storage enums use it).
var (
	Sources    = []string{"shield", "gateway", "mcp_gateway", "code_agent", "browser", "redteam"}
	EventTypes = []string{
		"prompt", "response", "tool_call", "file_read", "file_write", "connect_server",
	}
	Modes      = []string{"enforce", "monitor", "alert"}
	Decisions  = []string{"allow", "deny"}
	Outcomes   = []string{"allowed", "blocked", "monitored", "alerted"}
	Severities = []string{"none", "low", "medium", "high", "critical"}
)

// SeverityRank orders severities from none (0) to critical (4); unknown is -1.
func SeverityRank(s string) int {
	for i, v := range Severities {
		if v == s {
			return i
		}
	}
	return -1
}

// DeriveOutcome is the outcome implied by mode and decisions when the guard
// did not state one: an enforced deny blocks, a deny under monitor or alert
// mode is monitored or alerted, anything else is allowed.
func DeriveOutcome(mode, decision, actual string) string {
	switch {
	case decision == "deny":
		return "blocked"
	case actual == "deny" && mode == "monitor":
		return "monitored"
	case actual == "deny" && mode == "alert":
		return "alerted"
	default:
		return "allowed"
	}
}
