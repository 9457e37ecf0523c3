package export

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"
)

// csvColumn is one column of the CSV file: its header and how its cell's
// text is appended.
type csvColumn struct {
	name string
	cell func(dst []byte, r *flatRow) []byte
}

func str(get func(r *flatRow) string) func(dst []byte, r *flatRow) []byte {
	return func(dst []byte, r *flatRow) []byte { return append(dst, get(r)...) }
}

func optInt(get func(r *flatRow) *int64) func(dst []byte, r *flatRow) []byte {
	return func(dst []byte, r *flatRow) []byte {
		if v := get(r); v != nil {
			return strconv.AppendInt(dst, *v, 10)
		}
		return dst
	}
}

func num(get func(r *flatRow) float64) func(dst []byte, r *flatRow) []byte {
	return func(dst []byte, r *flatRow) []byte { return appendFloat(dst, get(r)) }
}

// csvColumns are the CSV file's columns in order; each is the field of
// flatRow whose Parquet name is this name with "." replaced by "_".
var csvColumns = []csvColumn{
	{"schema_version", str(func(r *flatRow) string { return r.SchemaVersion })},
	{"event_id", str(func(r *flatRow) string { return r.EventID })},
	{"occurred_at", func(dst []byte, r *flatRow) []byte { return appendTime(dst, r.OccurredAt) }},
	{"account_id", str(func(r *flatRow) string { return r.AccountID })},
	{"project_id", str(func(r *flatRow) string { return r.ProjectID })},
	{"source", str(func(r *flatRow) string { return r.Source })},
	{"application_id", str(func(r *flatRow) string { return r.ApplicationID })},
	{"request_id", str(func(r *flatRow) string { return r.RequestID })},
	{"audit_id", str(func(r *flatRow) string { return r.AuditID })},
	{"trace_id", str(func(r *flatRow) string { return r.TraceID })},
	{"span_id", str(func(r *flatRow) string { return r.SpanID })},
	{"session_id", str(func(r *flatRow) string { return r.SessionID })},
	{"conversation_turn", optInt(func(r *flatRow) *int64 { return r.ConversationTurn })},
	{"event_type", str(func(r *flatRow) string { return r.EventType })},
	{"action", str(func(r *flatRow) string { return r.Action })},
	{"mode", str(func(r *flatRow) string { return r.Mode })},
	{"decision", str(func(r *flatRow) string { return r.Decision })},
	{"actual_decision", str(func(r *flatRow) string { return r.ActualDecision })},
	{"outcome", str(func(r *flatRow) string { return r.Outcome })},
	{"reason", str(func(r *flatRow) string { return r.Reason })},
	{"highest_severity", str(func(r *flatRow) string { return r.HighestSeverity })},
	{"threat_categories", str(func(r *flatRow) string { return r.ThreatCategories })},
	{"determining_policies.policy_id", str(func(r *flatRow) string { return r.PolicyIDs })},
	{"determining_policies.severity", str(func(r *flatRow) string { return r.PolicySeverities })},
	{"determining_policies.category", str(func(r *flatRow) string { return r.PolicyCategories })},
	{"determining_policies.tags", str(func(r *flatRow) string { return r.PolicyTags })},
	{"determining_policies.reject_message",
		str(func(r *flatRow) string { return r.PolicyMessages })},
	{"signals.id", str(func(r *flatRow) string { return r.SignalIDs })},
	{"signals.detector", str(func(r *flatRow) string { return r.SignalDetectors })},
	{"signals.score", str(func(r *flatRow) string { return r.SignalScores })},
	{"signals.severity", str(func(r *flatRow) string { return r.SignalSeverities })},
	{"signals.max_score", func(dst []byte, r *flatRow) []byte {
		if r.SignalMaxScore == nil {
			return dst
		}
		return appendFloat(dst, *r.SignalMaxScore)
	}},
	{"detectors.name", str(func(r *flatRow) string { return r.DetectorNames })},
	{"detectors.tier", str(func(r *flatRow) string { return r.DetectorTiers })},
	{"detectors.latency_ms", str(func(r *flatRow) string { return r.DetectorLatencies })},
	{"detectors.status", str(func(r *flatRow) string { return r.DetectorStatuses })},
	{"latency.total_ms", num(func(r *flatRow) float64 { return r.LatencyTotalMS })},
	{"latency.eval_ms", num(func(r *flatRow) float64 { return r.LatencyEvalMS })},
	{"identity.user_id", str(func(r *flatRow) string { return r.IdentityUserID })},
	{"identity.agent_id", str(func(r *flatRow) string { return r.IdentityAgentID })},
	{"identity.subject", str(func(r *flatRow) string { return r.IdentitySubject })},
	{"identity.act_sub", str(func(r *flatRow) string { return r.IdentityActSub })},
	{"identity.identity_type", str(func(r *flatRow) string { return r.IdentityType })},
	{"identity.trust_level", str(func(r *flatRow) string { return r.IdentityTrustLevel })},
	{"identity.delegation_depth",
		optInt(func(r *flatRow) *int64 { return r.IdentityDelegationDepth })},
	{"identity.scopes", str(func(r *flatRow) string { return r.IdentityScopes })},
	{"model.provider", str(func(r *flatRow) string { return r.ModelProvider })},
	{"model.model", str(func(r *flatRow) string { return r.ModelModel })},
	{"model.tokens_used", optInt(func(r *flatRow) *int64 { return r.ModelTokensUsed })},
	{"tool.name", str(func(r *flatRow) string { return r.ToolName })},
	{"tool.server_id", str(func(r *flatRow) string { return r.ToolServerID })},
	{"tool.category", str(func(r *flatRow) string { return r.ToolCategory })},
	{"content.sha256", str(func(r *flatRow) string { return r.ContentSHA256 })},
	{"content.length", optInt(func(r *flatRow) *int64 { return r.ContentLength })},
	{"content.redacted_preview", str(func(r *flatRow) string { return r.ContentPreview })},
	{"metadata", str(func(r *flatRow) string { return r.Metadata })},
	{"labels", str(func(r *flatRow) string { return r.Labels })},
}

// CSVHeader returns the header row of CSV exports.
func CSVHeader() []string {
	out := make([]string, len(csvColumns))
	for i, c := range csvColumns {
		out[i] = c.name
	}
	return out
}

// appendCSVRecord appends the CSV record of r, ending in CR LF. Each
// cell is neutralised and then written as encoding/csv writes it (quoted
// when it holds a comma, quote, CR or LF, or starts with a space), except
// that a CR or LF inside a value is kept as it is.
func appendCSVRecord(dst []byte, r *flatRow, tmp *[]byte) []byte {
	for i, c := range csvColumns {
		if i > 0 {
			dst = append(dst, ',')
		}
		p := len(dst)
		dst = c.cell(dst, r)
		if !plainCell(dst[p:]) {
			*tmp = append((*tmp)[:0], dst[p:]...)
			dst = appendCSVField(dst[:p], *tmp)
		}
	}
	return append(dst, '\r', '\n')
}

// plainCell reports whether a cell is written as it is: no formula
// guard, no quotes.
func plainCell(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	if guarded(b[0]) || b[0] <= ' ' || b[0] >= utf8.RuneSelf || b[0] == '\\' {
		return false // a guard, maybe a space or \. (checked in full by appendCSVField)
	}
	return !hasCSVSpecial(view(b))
}

// hasCSVSpecial reports whether s holds a comma, quote, CR or LF, eight
// bytes at a time.
func hasCSVSpecial(s string) bool {
	special := func(x uint64) bool {
		return zeroBytes(x^(','*ones))|zeroBytes(x^('"'*ones))|zeroBytes(x^('\r'*ones))|
			zeroBytes(x^('\n'*ones)) != 0
	}
	if len(s) < 8 {
		for i := 0; i < len(s); i++ {
			if c := s[i]; c == ',' || c == '"' || c == '\r' || c == '\n' {
				return true
			}
		}
		return false
	}
	for i := 0; i+8 < len(s); i += 8 {
		if special(load64(s[i : i+8])) {
			return true
		}
	}
	return special(load64(s[len(s)-8:])) // the last eight, overlapping
}

// guarded reports whether a cell starting with c gets the formula guard.
func guarded(c byte) bool {
	switch c {
	case '=', '+', '-', '@', '\t', '\r', '\'':
		return true
	}
	return false
}

// appendCSVField appends cell neutralised and quoted as encoding/csv
// quotes a field.
func appendCSVField(dst, cell []byte) []byte {
	if len(cell) == 0 {
		return dst
	}
	guard := guarded(cell[0])
	quote := string(cell) == `\.` && !guard || hasCSVSpecial(view(cell))
	if !guard && !quote {
		r, _ := utf8.DecodeRune(cell)
		quote = unicode.IsSpace(r)
	}
	if quote {
		dst = append(dst, '"')
	}
	if guard {
		dst = append(dst, '\'')
	}
	if !quote {
		return append(dst, cell...)
	}
	for {
		i := bytes.IndexByte(cell, '"')
		if i < 0 {
			break
		}
		dst = append(dst, cell[:i+1]...)
		dst = append(dst, '"')
		cell = cell[i+1:]
	}
	dst = append(dst, cell...)
	return append(dst, '"')
}

// neutralise puts a "'" before a cell that a spreadsheet would read as a
// formula: one starting with "=", "+", "-", "@", a tab or a carriage
// return. A cell that starts with "'" gets one too, so that a reader
// recovers every value by removing one leading "'".
func neutralise(s string) string {
	if s != "" && guarded(s[0]) {
		return "'" + s
	}
	return s
}

// csvHeader is the header record, as encoding/csv writes it, with CR LF.
func csvHeader() ([]byte, error) {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	w.UseCRLF = true
	if err := w.Write(CSVHeader()); err != nil {
		return nil, fmt.Errorf("encode csv header: %w", err)
	}
	w.Flush()
	return b.Bytes(), w.Error()
}

func appendFloat(dst []byte, v float64) []byte { return strconv.AppendFloat(dst, v, 'f', -1, 64) }

// timeLayout is the layout of times in files and manifests: RFC 3339 in
// UTC with milliseconds.
const timeLayout = "2006-01-02T15:04:05.000Z"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// appendTime appends t in timeLayout.
func appendTime(dst []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(dst, timeLayout)
	}
	hour, min, sec := t.Clock()
	dst = appendDigits(dst, year, 4)
	dst = appendDigits(append(dst, '-'), int(month), 2)
	dst = appendDigits(append(dst, '-'), day, 2)
	dst = appendDigits(append(dst, 'T'), hour, 2)
	dst = appendDigits(append(dst, ':'), min, 2)
	dst = appendDigits(append(dst, ':'), sec, 2)
	dst = appendDigits(append(dst, '.'), t.Nanosecond()/1e6, 3)
	return append(dst, 'Z')
}

// appendDigits appends v, 0 <= v < 10^n, as n decimal digits, n <= 4.
func appendDigits(dst []byte, v, n int) []byte {
	var b [4]byte
	for i := n - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return append(dst, b[:n]...)
}
