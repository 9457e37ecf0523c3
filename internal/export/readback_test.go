package export_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/export"
)

// This file reads export files back with readers of their own
// (encoding/csv, encoding/json, parquet-go's generic reader) and states
// what each cell must hold from the documented rules, computed from the
// stored event as encoding/json decodes it.

// stored is one row as ClickHouse holds it.
type stored struct {
	ID  string
	Raw string
}

func (s stored) event(t testing.TB) *events.Event {
	t.Helper()
	var ev events.Event
	require.NoError(t, json.Unmarshal([]byte(s.Raw), &ev), s.ID)
	return &ev
}

// readNDJSON decodes each line of an NDJSON file.
func readNDJSON(t testing.TB, b []byte) []map[string]any {
	t.Helper()
	require.True(t, len(b) == 0 || b[len(b)-1] == '\n', "the file ends with a newline")
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if line == "" {
			continue
		}
		require.NotContains(t, line, "\r")
		var m map[string]any
		dec := json.NewDecoder(strings.NewReader(line))
		require.NoError(t, dec.Decode(&m), line)
		require.False(t, dec.More(), "one event per line")
		out = append(out, m)
	}
	return out
}

// readCSV returns the cells of each row by header name, with the
// formula guard's leading "'" removed.
func readCSV(t testing.TB, b []byte) []map[string]string {
	t.Helper()
	require.True(t, bytes.HasSuffix(b, []byte("\r\n")), "RFC 4180 line ends")
	r := csv.NewReader(bytes.NewReader(b))
	header, err := r.Read()
	require.NoError(t, err)
	require.Equal(t, export.CSVHeader(), header)
	var out []map[string]string
	for {
		rec, err := r.Read()
		if err == io.EOF {
			return out
		}
		require.NoError(t, err)
		m := map[string]string{}
		for i, v := range rec {
			if strings.HasPrefix(v, "'") {
				v = v[1:]
			} else {
				require.False(t, v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])),
					"cell %q of %s would run as a formula", v, header[i])
			}
			m[header[i]] = v
		}
		out = append(out, m)
	}
}

// readParquet returns the cells of each row by CSV column name, each
// value rendered as the CSV rules render it.
func readParquet(t testing.TB, b []byte) []map[string]string {
	t.Helper()
	f, err := parquet.OpenFile(bytes.NewReader(b), int64(len(b)))
	require.NoError(t, err)
	byName := map[string]int{}
	for i, path := range f.Schema().Columns() {
		require.Len(t, path, 1, "the schema is flat")
		byName[path[0]] = i
	}
	index := map[int]string{}
	for _, name := range export.CSVHeader() {
		i, ok := byName[strings.ReplaceAll(name, ".", "_")]
		require.True(t, ok, "parquet column for %s", name)
		index[i] = name
	}
	require.Len(t, byName, len(index), "no columns beyond the CSV ones")
	var out []map[string]string
	for _, rg := range f.RowGroups() {
		rows := rg.Rows()
		buf := make([]parquet.Row, 64)
		for {
			n, err := rows.ReadRows(buf)
			for _, row := range buf[:n] {
				m := map[string]string{}
				for _, v := range row {
					m[index[v.Column()]] = parquetCell(index[v.Column()], v)
				}
				out = append(out, m)
			}
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
		}
		require.NoError(t, rows.Close())
	}
	require.EqualValues(t, len(out), f.NumRows())
	return out
}

func parquetCell(name string, v parquet.Value) string {
	switch {
	case v.IsNull():
		return ""
	case name == "occurred_at":
		return time.UnixMilli(v.Int64()).UTC().Format("2006-01-02T15:04:05.000Z")
	case v.Kind() == parquet.ByteArray:
		return string(v.ByteArray())
	case v.Kind() == parquet.Int64:
		return strconv.FormatInt(v.Int64(), 10)
	case v.Kind() == parquet.Double:
		return num(v.Double())
	}
	return v.String()
}

func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// esc escapes a list element as the README states: "\" and ";" always,
// plus the extra separators given.
func esc(s, extra string) string {
	var b strings.Builder
	for _, r := range s {
		if r == '\\' || r == ';' || strings.ContainsRune(extra, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func list[T any](xs []T, get func(T) string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = esc(get(x), "")
	}
	return strings.Join(parts, ";")
}

func kv(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = esc(k, "=") + "=" + esc(m[k], "=")
	}
	return strings.Join(parts, ";")
}

// wantCells is every cell of the row of ev as the README describes it.
func wantCells(ev *events.Event, previews bool) map[string]string {
	id := func(s string) string { return s }
	m := map[string]string{
		"schema_version": ev.SchemaVersion, "event_id": ev.EventID,
		"occurred_at": ev.OccurredAt.UTC().Format("2006-01-02T15:04:05.000Z"),
		"account_id":  ev.AccountID, "project_id": ev.ProjectID, "source": ev.Source,
		"application_id": ev.ApplicationID, "request_id": ev.RequestID,
		"audit_id": ev.AuditID, "trace_id": ev.TraceID, "span_id": ev.SpanID,
		"session_id": ev.SessionID, "event_type": ev.EventType, "action": ev.Action,
		"mode": ev.Mode, "decision": ev.Decision, "actual_decision": ev.ActualDecision,
		"outcome": ev.Outcome, "reason": ev.Reason, "highest_severity": ev.HighestSeverity,
		"threat_categories":        list(ev.ThreatCategories, id),
		"latency.total_ms":         num(ev.Latency.TotalMS),
		"latency.eval_ms":          num(ev.Latency.EvalMS),
		"metadata":                 kv(ev.Metadata),
		"labels":                   kv(ev.Labels),
		"conversation_turn":        "",
		"signals.max_score":        "",
		"identity.scopes":          "",
		"content.length":           "",
		"model.tokens_used":        "",
		"content.sha256":           "",
		"content.redacted_preview": "",
	}
	if m["outcome"] == "" {
		m["outcome"] = events.DeriveOutcome(ev.Mode, ev.Decision, ev.ActualDecision)
	}
	if ev.ConversationTurn != nil {
		m["conversation_turn"] = strconv.Itoa(*ev.ConversationTurn)
	}
	ps := ev.DeterminingPolicies
	m["determining_policies.policy_id"] = list(ps, func(p events.Policy) string { return p.PolicyID })
	m["determining_policies.severity"] = list(ps, func(p events.Policy) string { return p.Severity })
	m["determining_policies.category"] = list(ps, func(p events.Policy) string { return p.Category })
	m["determining_policies.reject_message"] = list(ps,
		func(p events.Policy) string { return p.RejectMessage })
	tags := make([]string, len(ps))
	for i, p := range ps {
		for j, tag := range p.Tags {
			if j > 0 {
				tags[i] += ","
			}
			tags[i] += esc(tag, ",")
		}
	}
	m["determining_policies.tags"] = strings.Join(tags, ";")
	ss := ev.Signals
	m["signals.id"] = list(ss, func(s events.Signal) string { return s.ID })
	m["signals.detector"] = list(ss, func(s events.Signal) string { return s.Detector })
	m["signals.severity"] = list(ss, func(s events.Signal) string { return s.Severity })
	m["signals.score"] = list(ss, func(s events.Signal) string {
		if s.Score == nil {
			return ""
		}
		return num(*s.Score)
	})
	var scores []float64
	for _, s := range ss {
		if s.Score != nil {
			scores = append(scores, *s.Score)
		}
	}
	if len(scores) > 0 {
		m["signals.max_score"] = num(slices.Max(scores))
	}
	ds := ev.Detectors
	m["detectors.name"] = list(ds, func(d events.Detector) string { return d.Name })
	m["detectors.tier"] = list(ds, func(d events.Detector) string { return d.Tier })
	m["detectors.status"] = list(ds, func(d events.Detector) string { return d.Status })
	m["detectors.latency_ms"] = list(ds, func(d events.Detector) string { return num(d.LatencyMS) })
	var idn events.Identity
	if ev.Identity != nil {
		idn = *ev.Identity
		m["identity.delegation_depth"] = strconv.Itoa(idn.DelegationDepth)
	} else {
		m["identity.delegation_depth"] = ""
	}
	m["identity.user_id"], m["identity.agent_id"] = idn.UserID, idn.AgentID
	m["identity.subject"], m["identity.act_sub"] = idn.Subject, idn.ActSub
	m["identity.identity_type"], m["identity.trust_level"] = idn.IdentityType, idn.TrustLevel
	m["identity.scopes"] = list(idn.Scopes, id)
	var md events.Model
	if ev.Model != nil {
		md = *ev.Model
		m["model.tokens_used"] = strconv.FormatInt(md.TokensUsed, 10)
	}
	m["model.provider"], m["model.model"] = md.Provider, md.Model
	var tl events.Tool
	if ev.Tool != nil {
		tl = *ev.Tool
	}
	m["tool.name"], m["tool.server_id"], m["tool.category"] = tl.Name, tl.ServerID, tl.Category
	if c := ev.Content; c != nil {
		m["content.sha256"] = c.SHA256
		m["content.length"] = strconv.FormatInt(c.Length, 10)
		if previews {
			m["content.redacted_preview"] = c.RedactedPreview
		}
	}
	return m
}
