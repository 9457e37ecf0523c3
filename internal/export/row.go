package export

import "time"

// flatRow is one decision flattened to one level, the row of the CSV and
// Parquet files (README.md documents the rules). Its parquet tags are the
// Parquet schema; the CSV header uses the same names with "." where the
// Parquet name has the "_" that joins an object and its field.
//
// Lists become one string: elements joined with ";", a "\" or ";" inside
// an element escaped with a backslash. Arrays of objects give one list
// column per field, all in element order, so the n-th elements of
// signals.id and signals.score belong to the same signal. The tags of the
// policies are joined with "," inside a policy and ";" between policies,
// with "\", ";" and "," escaped. Maps become "key=value" pairs sorted by
// key, joined with ";", with "\", ";" and "=" escaped.
type flatRow struct {
	SchemaVersion    string    `parquet:"schema_version,dict"`
	EventID          string    `parquet:"event_id"`
	OccurredAt       time.Time `parquet:"occurred_at,timestamp(millisecond)"`
	AccountID        string    `parquet:"account_id,dict"`
	ProjectID        string    `parquet:"project_id,dict"`
	Source           string    `parquet:"source,dict"`
	ApplicationID    string    `parquet:"application_id,dict"`
	RequestID        string    `parquet:"request_id"`
	AuditID          string    `parquet:"audit_id"`
	TraceID          string    `parquet:"trace_id"`
	SpanID           string    `parquet:"span_id"`
	SessionID        string    `parquet:"session_id"`
	ConversationTurn *int64    `parquet:"conversation_turn,optional"`
	EventType        string    `parquet:"event_type,dict"`
	Action           string    `parquet:"action,dict"`
	Mode             string    `parquet:"mode,dict"`
	Decision         string    `parquet:"decision,dict"`
	ActualDecision   string    `parquet:"actual_decision,dict"`
	Outcome          string    `parquet:"outcome,dict"`
	Reason           string    `parquet:"reason,dict"`
	HighestSeverity  string    `parquet:"highest_severity,dict"`
	ThreatCategories string    `parquet:"threat_categories,dict"`

	PolicyIDs        string `parquet:"determining_policies_policy_id,dict"`
	PolicySeverities string `parquet:"determining_policies_severity,dict"`
	PolicyCategories string `parquet:"determining_policies_category,dict"`
	PolicyTags       string `parquet:"determining_policies_tags,dict"`
	PolicyMessages   string `parquet:"determining_policies_reject_message,dict"`

	SignalIDs        string   `parquet:"signals_id,dict"`
	SignalDetectors  string   `parquet:"signals_detector,dict"`
	SignalScores     string   `parquet:"signals_score"`
	SignalSeverities string   `parquet:"signals_severity,dict"`
	SignalMaxScore   *float64 `parquet:"signals_max_score,optional"`

	DetectorNames     string `parquet:"detectors_name,dict"`
	DetectorTiers     string `parquet:"detectors_tier,dict"`
	DetectorLatencies string `parquet:"detectors_latency_ms"`
	DetectorStatuses  string `parquet:"detectors_status,dict"`

	LatencyTotalMS float64 `parquet:"latency_total_ms"`
	LatencyEvalMS  float64 `parquet:"latency_eval_ms"`

	IdentityUserID          string `parquet:"identity_user_id,dict"`
	IdentityAgentID         string `parquet:"identity_agent_id,dict"`
	IdentitySubject         string `parquet:"identity_subject,dict"`
	IdentityActSub          string `parquet:"identity_act_sub,dict"`
	IdentityType            string `parquet:"identity_identity_type,dict"`
	IdentityTrustLevel      string `parquet:"identity_trust_level,dict"`
	IdentityDelegationDepth *int64 `parquet:"identity_delegation_depth,optional"`
	IdentityScopes          string `parquet:"identity_scopes,dict"`

	ModelProvider   string `parquet:"model_provider,dict"`
	ModelModel      string `parquet:"model_model,dict"`
	ModelTokensUsed *int64 `parquet:"model_tokens_used,optional"`

	ToolName     string `parquet:"tool_name,dict"`
	ToolServerID string `parquet:"tool_server_id,dict"`
	ToolCategory string `parquet:"tool_category,dict"`

	ContentSHA256  string `parquet:"content_sha256"`
	ContentLength  *int64 `parquet:"content_length,optional"`
	ContentPreview string `parquet:"content_redacted_preview,dict"`

	Metadata string `parquet:"metadata,dict"`
	Labels   string `parquet:"labels,dict"`

	// The values of the optional numbers above, which point here, so
	// that a row costs no allocation. A row in use must not be copied.
	turn, depth, tokens, length int64
	maxScore                    float64
}
