package export

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"strconv"
	"time"
)

// csvColumn is one column of the CSV file: its header and its cell.
type csvColumn struct {
	name string
	cell func(r *flatRow) string
}

func optInt(get func(r *flatRow) *int64) func(r *flatRow) string {
	return func(r *flatRow) string {
		if v := get(r); v != nil {
			return strconv.FormatInt(*v, 10)
		}
		return ""
	}
}

func num(get func(r *flatRow) float64) func(r *flatRow) string {
	return func(r *flatRow) string { return formatFloat(get(r)) }
}

// csvColumns are the CSV file's columns in order; each is the field of
// flatRow whose Parquet name is this name with "." replaced by "_".
var csvColumns = []csvColumn{
	{"schema_version", func(r *flatRow) string { return r.SchemaVersion }},
	{"event_id", func(r *flatRow) string { return r.EventID }},
	{"occurred_at", func(r *flatRow) string { return formatTime(r.OccurredAt) }},
	{"account_id", func(r *flatRow) string { return r.AccountID }},
	{"project_id", func(r *flatRow) string { return r.ProjectID }},
	{"source", func(r *flatRow) string { return r.Source }},
	{"application_id", func(r *flatRow) string { return r.ApplicationID }},
	{"request_id", func(r *flatRow) string { return r.RequestID }},
	{"audit_id", func(r *flatRow) string { return r.AuditID }},
	{"trace_id", func(r *flatRow) string { return r.TraceID }},
	{"span_id", func(r *flatRow) string { return r.SpanID }},
	{"session_id", func(r *flatRow) string { return r.SessionID }},
	{"conversation_turn", optInt(func(r *flatRow) *int64 { return r.ConversationTurn })},
	{"event_type", func(r *flatRow) string { return r.EventType }},
	{"action", func(r *flatRow) string { return r.Action }},
	{"mode", func(r *flatRow) string { return r.Mode }},
	{"decision", func(r *flatRow) string { return r.Decision }},
	{"actual_decision", func(r *flatRow) string { return r.ActualDecision }},
	{"outcome", func(r *flatRow) string { return r.Outcome }},
	{"reason", func(r *flatRow) string { return r.Reason }},
	{"highest_severity", func(r *flatRow) string { return r.HighestSeverity }},
	{"threat_categories", func(r *flatRow) string { return r.ThreatCategories }},
	{"determining_policies.policy_id", func(r *flatRow) string { return r.PolicyIDs }},
	{"determining_policies.severity", func(r *flatRow) string { return r.PolicySeverities }},
	{"determining_policies.category", func(r *flatRow) string { return r.PolicyCategories }},
	{"determining_policies.tags", func(r *flatRow) string { return r.PolicyTags }},
	{"determining_policies.reject_message",
		func(r *flatRow) string { return r.PolicyMessages }},
	{"signals.id", func(r *flatRow) string { return r.SignalIDs }},
	{"signals.detector", func(r *flatRow) string { return r.SignalDetectors }},
	{"signals.score", func(r *flatRow) string { return r.SignalScores }},
	{"signals.severity", func(r *flatRow) string { return r.SignalSeverities }},
	{"signals.max_score", func(r *flatRow) string {
		if r.SignalMaxScore == nil {
			return ""
		}
		return formatFloat(*r.SignalMaxScore)
	}},
	{"detectors.name", func(r *flatRow) string { return r.DetectorNames }},
	{"detectors.tier", func(r *flatRow) string { return r.DetectorTiers }},
	{"detectors.latency_ms", func(r *flatRow) string { return r.DetectorLatencies }},
	{"detectors.status", func(r *flatRow) string { return r.DetectorStatuses }},
	{"latency.total_ms", num(func(r *flatRow) float64 { return r.LatencyTotalMS })},
	{"latency.eval_ms", num(func(r *flatRow) float64 { return r.LatencyEvalMS })},
	{"identity.user_id", func(r *flatRow) string { return r.IdentityUserID }},
	{"identity.agent_id", func(r *flatRow) string { return r.IdentityAgentID }},
	{"identity.subject", func(r *flatRow) string { return r.IdentitySubject }},
	{"identity.act_sub", func(r *flatRow) string { return r.IdentityActSub }},
	{"identity.identity_type", func(r *flatRow) string { return r.IdentityType }},
	{"identity.trust_level", func(r *flatRow) string { return r.IdentityTrustLevel }},
	{"identity.delegation_depth",
		optInt(func(r *flatRow) *int64 { return r.IdentityDelegationDepth })},
	{"identity.scopes", func(r *flatRow) string { return r.IdentityScopes }},
	{"model.provider", func(r *flatRow) string { return r.ModelProvider }},
	{"model.model", func(r *flatRow) string { return r.ModelModel }},
	{"model.tokens_used", optInt(func(r *flatRow) *int64 { return r.ModelTokensUsed })},
	{"tool.name", func(r *flatRow) string { return r.ToolName }},
	{"tool.server_id", func(r *flatRow) string { return r.ToolServerID }},
	{"tool.category", func(r *flatRow) string { return r.ToolCategory }},
	{"content.sha256", func(r *flatRow) string { return r.ContentSHA256 }},
	{"content.length", optInt(func(r *flatRow) *int64 { return r.ContentLength })},
	{"content.redacted_preview", func(r *flatRow) string { return r.ContentPreview }},
	{"metadata", func(r *flatRow) string { return r.Metadata }},
	{"labels", func(r *flatRow) string { return r.Labels }},
}

// CSVHeader returns the header row of CSV exports.
func CSVHeader() []string {
	out := make([]string, len(csvColumns))
	for i, c := range csvColumns {
		out[i] = c.name
	}
	return out
}

// csvRecord fills rec with the cells of r, each neutralised.
func csvRecord(r *flatRow, rec []string) {
	for i, c := range csvColumns {
		rec[i] = neutralise(c.cell(r))
	}
}

// neutralise puts a "'" before a cell that a spreadsheet would read as a
// formula: one starting with "=", "+", "-", "@", a tab or a carriage
// return. A cell that starts with "'" gets one too, so that a reader
// recovers every value by removing one leading "'".
func neutralise(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r', '\'':
		return "'" + s
	}
	return s
}

// csvRecords writes CSV records with RFC 4180 line ends to a buffer.
// encoding/csv drops carriage returns inside values when it ends lines
// with CR LF, so records are written in its LF mode, which keeps every
// value whole, and each record's final LF becomes CR LF here.
type csvRecords struct {
	buf *bytes.Buffer
	cw  *csv.Writer
}

func newCSVRecords(buf *bytes.Buffer) *csvRecords {
	return &csvRecords{buf: buf, cw: csv.NewWriter(buf)}
}

func (w *csvRecords) write(rec []string) error {
	if err := w.cw.Write(rec); err != nil {
		return fmt.Errorf("encode csv row: %w", err)
	}
	w.cw.Flush()
	if err := w.cw.Error(); err != nil {
		return fmt.Errorf("encode csv row: %w", err)
	}
	w.buf.Truncate(w.buf.Len() - 1)
	w.buf.WriteString("\r\n")
	return nil
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// timeLayout is the layout of times in files and manifests: RFC 3339 in
// UTC with milliseconds.
const timeLayout = "2006-01-02T15:04:05.000Z"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }
