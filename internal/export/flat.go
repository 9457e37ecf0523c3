package export

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/valyala/fastjson"

	"github.com/guardwatch/observatory/internal/events"
)

// flattener turns stored event JSON into flat rows. It reads the JSON in
// one pass without building an events.Event, and gathers the text of all
// string fields of a row into one allocation that the fields share; this
// makes CSV and Parquet exports about twice as fast. One per goroutine.
type flattener struct {
	p        fastjson.Parser
	previews bool
	arena    []byte // the text of the row's string fields
	spans    []span
	pairs    []pair
}

// span is one string field's text in the arena.
type span struct {
	dst  *string
	a, b int
}

type pair struct{ k, v []byte }

// flatten fills r from one stored event whose text is valid UTF-8.
// Members it does not know are ignored.
func (fl *flattener) flatten(raw string, r *flatRow) error {
	v, err := fl.p.Parse(raw)
	if err != nil {
		return fmt.Errorf("decode stored event: %w", err)
	}
	o, err := v.Object()
	if err != nil {
		return fmt.Errorf("decode stored event: %w", err)
	}
	*r = flatRow{}
	fl.arena, fl.spans = fl.arena[:0], fl.spans[:0]
	o.Visit(func(k []byte, v *fastjson.Value) {
		if err == nil {
			err = fl.member(k, v, r)
		}
	})
	if err != nil {
		return fmt.Errorf("decode stored event: %w", err)
	}
	all := string(fl.arena)
	for _, s := range fl.spans {
		*s.dst = all[s.a:s.b]
	}
	if r.Outcome == "" {
		r.Outcome = events.DeriveOutcome(r.Mode, r.Decision, r.ActualDecision)
	}
	return nil
}

// set queues b as the text of dst.
func (fl *flattener) set(dst *string, b []byte) {
	a := len(fl.arena)
	fl.arena = append(fl.arena, b...)
	fl.mark(dst, a)
}

// mark makes the arena from a to its end the text of dst.
func (fl *flattener) mark(dst *string, a int) {
	if len(fl.arena) > a {
		fl.spans = append(fl.spans, span{dst: dst, a: a, b: len(fl.arena)})
	}
}

// member sets the fields of one top-level member. A null member is an
// absent one.
func (fl *flattener) member(k []byte, v *fastjson.Value, r *flatRow) error {
	if v.Type() == fastjson.TypeNull {
		return nil
	}
	switch string(k) {
	case "occurred_at":
		t, err := time.Parse(time.RFC3339Nano, string(v.GetStringBytes()))
		if err != nil {
			return err
		}
		r.OccurredAt = t.UTC()
	case "conversation_turn":
		r.ConversationTurn = jsonInt(v)
	case "threat_categories":
		fl.join(&r.ThreatCategories, v.GetArray(), elem(""))
	case "determining_policies":
		fl.policies(v.GetArray(), r)
	case "signals":
		fl.signals(v.GetArray(), r)
	case "detectors":
		fl.detectors(v.GetArray(), r)
	case "latency":
		r.LatencyTotalMS, r.LatencyEvalMS = v.GetFloat64("total_ms"), v.GetFloat64("eval_ms")
	case "identity":
		fl.identity(v, r)
	case "model":
		fl.set(&r.ModelProvider, v.GetStringBytes("provider"))
		fl.set(&r.ModelModel, v.GetStringBytes("model"))
		r.ModelTokensUsed = ptr(v.GetInt64("tokens_used"))
	case "tool":
		fl.set(&r.ToolName, v.GetStringBytes("name"))
		fl.set(&r.ToolServerID, v.GetStringBytes("server_id"))
		fl.set(&r.ToolCategory, v.GetStringBytes("category"))
	case "content":
		fl.set(&r.ContentSHA256, v.GetStringBytes("sha256"))
		r.ContentLength = ptr(v.GetInt64("length"))
		if fl.previews {
			fl.set(&r.ContentPreview, v.GetStringBytes("redacted_preview"))
		}
	case "metadata":
		fl.joinMap(&r.Metadata, v)
	case "labels":
		fl.joinMap(&r.Labels, v)
	default:
		if dst := r.scalar(k); dst != nil {
			fl.set(dst, v.GetStringBytes())
		}
	}
	return nil
}

// scalar returns the field of a top-level string member.
func (r *flatRow) scalar(k []byte) *string {
	switch string(k) {
	case "schema_version":
		return &r.SchemaVersion
	case "event_id":
		return &r.EventID
	case "account_id":
		return &r.AccountID
	case "project_id":
		return &r.ProjectID
	case "source":
		return &r.Source
	case "application_id":
		return &r.ApplicationID
	case "request_id":
		return &r.RequestID
	case "audit_id":
		return &r.AuditID
	case "trace_id":
		return &r.TraceID
	case "span_id":
		return &r.SpanID
	case "session_id":
		return &r.SessionID
	case "event_type":
		return &r.EventType
	case "action":
		return &r.Action
	case "mode":
		return &r.Mode
	case "decision":
		return &r.Decision
	case "actual_decision":
		return &r.ActualDecision
	case "outcome":
		return &r.Outcome
	case "reason":
		return &r.Reason
	case "highest_severity":
		return &r.HighestSeverity
	}
	return nil
}

func (fl *flattener) identity(v *fastjson.Value, r *flatRow) {
	fl.set(&r.IdentityUserID, v.GetStringBytes("user_id"))
	fl.set(&r.IdentityAgentID, v.GetStringBytes("agent_id"))
	fl.set(&r.IdentitySubject, v.GetStringBytes("subject"))
	fl.set(&r.IdentityActSub, v.GetStringBytes("act_sub"))
	fl.set(&r.IdentityType, v.GetStringBytes("identity_type"))
	fl.set(&r.IdentityTrustLevel, v.GetStringBytes("trust_level"))
	r.IdentityDelegationDepth = ptr(v.GetInt64("delegation_depth"))
	fl.join(&r.IdentityScopes, v.GetArray("scopes"), elem(""))
}

func (fl *flattener) policies(ps []*fastjson.Value, r *flatRow) {
	fl.join(&r.PolicyIDs, ps, elem("policy_id"))
	fl.join(&r.PolicySeverities, ps, elem("severity"))
	fl.join(&r.PolicyCategories, ps, elem("category"))
	fl.join(&r.PolicyMessages, ps, elem("reject_message"))
	fl.join(&r.PolicyTags, ps, func(dst []byte, p *fastjson.Value) []byte {
		for i, t := range p.GetArray("tags") {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendEscaped(dst, t.GetStringBytes(), ',')
		}
		return dst
	})
}

func (fl *flattener) signals(ss []*fastjson.Value, r *flatRow) {
	fl.join(&r.SignalIDs, ss, elem("id"))
	fl.join(&r.SignalDetectors, ss, elem("detector"))
	fl.join(&r.SignalSeverities, ss, elem("severity"))
	fl.join(&r.SignalScores, ss, func(dst []byte, s *fastjson.Value) []byte {
		x := s.Get("score")
		if x == nil || x.Type() != fastjson.TypeNumber {
			return dst
		}
		if f := x.GetFloat64(); r.SignalMaxScore == nil || f > *r.SignalMaxScore {
			r.SignalMaxScore = ptr(f)
		}
		return appendNumber(dst, x)
	})
}

func (fl *flattener) detectors(ds []*fastjson.Value, r *flatRow) {
	fl.join(&r.DetectorNames, ds, elem("name"))
	fl.join(&r.DetectorTiers, ds, elem("tier"))
	fl.join(&r.DetectorStatuses, ds, elem("status"))
	fl.join(&r.DetectorLatencies, ds, func(dst []byte, d *fastjson.Value) []byte {
		if x := d.Get("latency_ms"); x != nil && x.Type() == fastjson.TypeNumber {
			return appendNumber(dst, x)
		}
		return append(dst, '0')
	})
}

// join renders a list cell into dst: each element's text as add appends
// it, joined with ";".
func (fl *flattener) join(dst *string, xs []*fastjson.Value,
	add func(dst []byte, x *fastjson.Value) []byte) {
	a := len(fl.arena)
	for i, x := range xs {
		if i > 0 {
			fl.arena = append(fl.arena, ';')
		}
		fl.arena = add(fl.arena, x)
	}
	fl.mark(dst, a)
}

// elem appends the string member name of an element (the element itself
// for ""), escaped.
func elem(name string) func(dst []byte, x *fastjson.Value) []byte {
	if name == "" {
		return func(dst []byte, x *fastjson.Value) []byte {
			return appendEscaped(dst, x.GetStringBytes(), 0)
		}
	}
	return func(dst []byte, x *fastjson.Value) []byte {
		return appendEscaped(dst, x.GetStringBytes(name), 0)
	}
}

// joinMap renders a map into dst as "k=v" pairs sorted by key, joined
// with ";".
func (fl *flattener) joinMap(dst *string, v *fastjson.Value) {
	o, err := v.Object()
	if err != nil || o.Len() == 0 {
		return
	}
	fl.pairs = fl.pairs[:0]
	o.Visit(func(k []byte, v *fastjson.Value) {
		fl.pairs = append(fl.pairs, pair{k, v.GetStringBytes()})
	})
	slices.SortFunc(fl.pairs, func(a, b pair) int { return bytes.Compare(a.k, b.k) })
	a := len(fl.arena)
	for i, p := range fl.pairs {
		if i > 0 {
			fl.arena = append(fl.arena, ';')
		}
		fl.arena = appendEscaped(fl.arena, p.k, '=')
		fl.arena = append(fl.arena, '=')
		fl.arena = appendEscaped(fl.arena, p.v, '=')
	}
	fl.mark(dst, a)
}

// appendEscaped appends s with a backslash before "\", ";" and extra
// (0 for none), so that the separators stay unambiguous.
func appendEscaped(dst, s []byte, extra byte) []byte {
	if bytes.IndexByte(s, '\\') < 0 && bytes.IndexByte(s, ';') < 0 &&
		(extra == 0 || bytes.IndexByte(s, extra) < 0) {
		return append(dst, s...)
	}
	for _, c := range s {
		if c == '\\' || c == ';' || (extra != 0 && c == extra) {
			dst = append(dst, '\\')
		}
		dst = append(dst, c)
	}
	return dst
}

// appendNumber appends a JSON number in plain decimal notation: as
// written when it has no exponent, else formatted from its value.
func appendNumber(dst []byte, v *fastjson.Value) []byte {
	n := len(dst)
	dst = v.MarshalTo(dst)
	if bytes.IndexAny(dst[n:], "eE") < 0 {
		return dst
	}
	return strconv.AppendFloat(dst[:n], v.GetFloat64(), 'f', -1, 64)
}

func jsonInt(v *fastjson.Value) *int64 {
	if v.Type() != fastjson.TypeNumber {
		return nil
	}
	return ptr(v.GetInt64())
}

func ptr[T any](v T) *T { return &v }
