package events

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// Reason is a bounded rejection cause. It labels dead letters and metrics,
// so its values are the constants below and nothing else.
type Reason string

// Rejection reasons.
const (
	ReasonTooLarge       Reason = "too_large"
	ReasonInvalidUTF8    Reason = "invalid_utf8"
	ReasonInvalidJSON    Reason = "invalid_json"
	ReasonDuplicateKey   Reason = "duplicate_key"
	ReasonUnknownField   Reason = "unknown_field"
	ReasonWrongType      Reason = "wrong_type"
	ReasonSchemaVersion  Reason = "schema_version"
	ReasonMissingField   Reason = "missing_field"
	ReasonInvalidID      Reason = "invalid_id"
	ReasonInvalidEnum    Reason = "invalid_enum"
	ReasonInvalidScore   Reason = "invalid_score"
	ReasonInvalidTime    Reason = "invalid_time"
	ReasonLimit          Reason = "limit_exceeded"
	ReasonTenantMismatch Reason = "tenant_mismatch"
	ReasonBadSubject     Reason = "bad_subject"
)

// Reasons lists every Reason, for metrics that pre-declare their labels.
var Reasons = []Reason{
	ReasonTooLarge, ReasonInvalidUTF8, ReasonInvalidJSON, ReasonDuplicateKey,
	ReasonUnknownField, ReasonWrongType, ReasonSchemaVersion, ReasonMissingField,
	ReasonInvalidID, ReasonInvalidEnum, ReasonInvalidScore, ReasonInvalidTime,
	ReasonLimit, ReasonTenantMismatch, ReasonBadSubject,
}

// InvalidError says why a payload is not a valid decision event.
type InvalidError struct {
	Reason Reason
	Detail string
}

func (e *InvalidError) Error() string { return string(e.Reason) + ": " + e.Detail }

func invalid(r Reason, format string, args ...any) error {
	return &InvalidError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the rejection reason carried by err, or "" if err is not
// an *InvalidError.
func ReasonOf(err error) Reason {
	var inv *InvalidError
	if errors.As(err, &inv) {
		return inv.Reason
	}
	return ""
}

// Limits bound what one event may hold. Zero fields take the defaults of
// DefaultLimits.
type Limits struct {
	MaxBytes        int           // whole payload
	MaxStringLen    int           // any single string field, in bytes
	MaxPreviewLen   int           // content.redacted_preview, in bytes
	MaxArrayLen     int           // categories, scopes, tags
	MaxPolicies     int           // determining_policies
	MaxSignals      int           // signals
	MaxDetectors    int           // detectors
	MaxMapEntries   int           // metadata and labels, each
	MaxMapBytes     int           // metadata and labels, keys plus values, each
	MaxDepth        int           // JSON nesting depth
	MaxFuture       time.Duration // occurred_at ahead of now
	MaxPast         time.Duration // occurred_at behind now
	MaxConvTurn     int           // conversation_turn
	MaxDelegation   int           // identity.delegation_depth
	MaxLatencyMS    float64       // latency and detector latency
	AllowedClockNow func() time.Time
}

// DefaultLimits are the limits used where none are configured.
var DefaultLimits = Limits{
	MaxBytes:      64 << 10,
	MaxStringLen:  1024,
	MaxPreviewLen: 4096,
	MaxArrayLen:   64,
	MaxPolicies:   64,
	MaxSignals:    128,
	MaxDetectors:  64,
	MaxMapEntries: 64,
	MaxMapBytes:   8 << 10,
	MaxDepth:      8,
	MaxFuture:     5 * time.Minute,
	MaxPast:       30 * 24 * time.Hour,
	MaxConvTurn:   100000,
	MaxDelegation: 32,
	MaxLatencyMS:  3600_000,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	set := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&l.MaxBytes, d.MaxBytes)
	set(&l.MaxStringLen, d.MaxStringLen)
	set(&l.MaxPreviewLen, d.MaxPreviewLen)
	set(&l.MaxArrayLen, d.MaxArrayLen)
	set(&l.MaxPolicies, d.MaxPolicies)
	set(&l.MaxSignals, d.MaxSignals)
	set(&l.MaxDetectors, d.MaxDetectors)
	set(&l.MaxMapEntries, d.MaxMapEntries)
	set(&l.MaxMapBytes, d.MaxMapBytes)
	set(&l.MaxDepth, d.MaxDepth)
	set(&l.MaxConvTurn, d.MaxConvTurn)
	set(&l.MaxDelegation, d.MaxDelegation)
	if l.MaxFuture <= 0 {
		l.MaxFuture = d.MaxFuture
	}
	if l.MaxPast <= 0 {
		l.MaxPast = d.MaxPast
	}
	if l.MaxLatencyMS <= 0 {
		l.MaxLatencyMS = d.MaxLatencyMS
	}
	if l.AllowedClockNow == nil {
		l.AllowedClockNow = time.Now
	}
	return l
}

// Decoder decodes and validates payloads under a set of limits.
type Decoder struct {
	limits Limits
}

// NewDecoder returns a Decoder for the limits; zero fields take defaults.
func NewDecoder(l Limits) *Decoder {
	return &Decoder{limits: l.withDefaults()}
}

// Decode parses one payload strictly and validates it. The payload must be
// exactly one JSON object: no duplicate or unknown member names, no trailing
// data, valid UTF-8, and within the limits. A rejection is an *InvalidError.
//
// A compact payload becomes the event's Raw as it is, without a copy: the
// caller must not change payload afterwards. Message payloads from NATS are
// never reused, and the copy doubled the memory an event in flight holds.
func (d *Decoder) Decode(payload []byte) (*Event, error) {
	if len(payload) > d.limits.MaxBytes {
		return nil, invalid(ReasonTooLarge, "payload is %d bytes, limit %d",
			len(payload), d.limits.MaxBytes)
	}
	if !utf8.Valid(payload) {
		return nil, invalid(ReasonInvalidUTF8, "payload is not valid UTF-8")
	}
	spaced, err := scan(payload, d.limits.MaxDepth)
	if err != nil {
		return nil, err
	}

	var ev Event
	if err := json.Unmarshal(payload, &ev, json.RejectUnknownMembers(true)); err != nil {
		return nil, classify(err)
	}
	if err := d.Validate(&ev); err != nil {
		return nil, err
	}
	raw := jsontext.Value(payload)
	if spaced {
		raw = slices.Clone(raw) // Compact works in place
		if err := raw.Compact(); err != nil {
			return nil, invalid(ReasonInvalidJSON, "%s", trimJSONErr(err))
		}
	}
	ev.Raw = raw
	return &ev, nil
}

// scan rejects payloads nested deeper than max without decoding them, and
// reports whether the payload has whitespace outside strings (so needs
// compacting). Strings are skipped with IndexByte, which is most of an
// event's bytes.
func scan(p []byte, max int) (spaced bool, err error) {
	depth := 0
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '"':
			i = stringEnd(p, i+1)
		case '{', '[':
			depth++
			if depth > max {
				return false, invalid(ReasonLimit, "nesting deeper than %d levels", max)
			}
		case '}', ']':
			depth--
		case ' ', '\t', '\n', '\r':
			spaced = true
		}
	}
	return spaced, nil
}

// stringEnd returns the index of the quote closing a string whose content
// starts at i, or len(p) when it is unterminated.
func stringEnd(p []byte, i int) int {
	for {
		j := bytes.IndexByte(p[i:], '"')
		if j < 0 {
			return len(p)
		}
		end := i + j
		bs := 0
		for k := end - 1; k >= i && p[k] == '\\'; k-- {
			bs++
		}
		if bs%2 == 0 {
			return end
		}
		i = end + 1
	}
}

func classify(err error) error {
	var syn *jsontext.SyntacticError
	var sem *json.SemanticError
	switch {
	case errors.Is(err, jsontext.ErrDuplicateName):
		return invalid(ReasonDuplicateKey, "%s", trimJSONErr(err))
	case errors.Is(err, json.ErrUnknownName):
		return invalid(ReasonUnknownField, "%s", trimJSONErr(err))
	case errors.As(err, &syn):
		return invalid(ReasonInvalidJSON, "%s", trimJSONErr(err))
	case errors.As(err, &sem):
		ptr := string(sem.JSONPointer)
		if ptr == "/occurred_at" {
			return invalid(ReasonInvalidTime, "occurred_at must be RFC 3339")
		}
		return invalid(ReasonWrongType, "%s has the wrong type or is out of range", ptrName(ptr))
	default:
		return invalid(ReasonInvalidJSON, "%s", trimJSONErr(err))
	}
}

func ptrName(p string) string {
	if p == "" {
		return "the payload"
	}
	return p
}

// trimJSONErr drops the package prefix so reasons read as plain sentences.
func trimJSONErr(err error) string {
	s := err.Error()
	for _, prefix := range []string{"jsontext: ", "json: "} {
		if len(s) > len(prefix) && s[:len(prefix)] == prefix {
			s = s[len(prefix):]
		}
	}
	return s
}

// Validate checks a decoded event against the schema and the limits, and
// fills Outcome when the producer left it out. It also normalises
// OccurredAt to UTC.
func (d *Decoder) Validate(ev *Event) error {
	l := d.limits
	if ev.SchemaVersion != SchemaVersion {
		return invalid(ReasonSchemaVersion, "schema_version must be %q", SchemaVersion)
	}
	if err := requireID("account_id", ev.AccountID); err != nil {
		return err
	}
	if err := requireID("project_id", ev.ProjectID); err != nil {
		return err
	}
	if ev.EventID == "" {
		return invalid(ReasonMissingField, "event_id is required")
	}
	if len(ev.EventID) > 128 {
		return invalid(ReasonLimit, "event_id is longer than 128 bytes")
	}
	if err := d.validateTime(ev); err != nil {
		return err
	}
	if err := validateEnums(ev); err != nil {
		return err
	}
	if ev.Action == "" {
		return invalid(ReasonMissingField, "action is required")
	}
	if err := d.validateSizes(ev); err != nil {
		return err
	}
	if err := validateNumbers(ev, l); err != nil {
		return err
	}
	if ev.Outcome == "" {
		ev.Outcome = DeriveOutcome(ev.Mode, ev.Decision, ev.ActualDecision)
	}
	return nil
}

// elem names an element of an array field, formatted only when an error
// needs it, so validating a valid event does not format strings.
type elem struct {
	array string
	i     int
	sub   string
}

func (e elem) String() string {
	if e.sub == "" {
		return e.array + "[" + strconv.Itoa(e.i) + "]"
	}
	return e.array + "[" + strconv.Itoa(e.i) + "]." + e.sub
}

type name string

func (n name) String() string { return string(n) }

func requireID(field, v string) error {
	if v == "" {
		return invalid(ReasonMissingField, "%s is required", field)
	}
	if !ValidID(v) {
		return invalid(ReasonInvalidID, "%s must be 1-64 characters of A-Z a-z 0-9 _ -", field)
	}
	return nil
}

func (d *Decoder) validateTime(ev *Event) error {
	if ev.OccurredAt.IsZero() {
		return invalid(ReasonMissingField, "occurred_at is required")
	}
	now := d.limits.AllowedClockNow()
	if ev.OccurredAt.After(now.Add(d.limits.MaxFuture)) {
		return invalid(ReasonInvalidTime, "occurred_at is more than %s in the future",
			d.limits.MaxFuture)
	}
	if ev.OccurredAt.Before(now.Add(-d.limits.MaxPast)) {
		return invalid(ReasonInvalidTime, "occurred_at is more than %s in the past",
			d.limits.MaxPast)
	}
	ev.OccurredAt = ev.OccurredAt.UTC()
	return nil
}

func oneOf(field fmt.Stringer, v string, allowed []string, required bool) error {
	if v == "" {
		if required {
			return invalid(ReasonMissingField, "%s is required", field)
		}
		return nil
	}
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return invalid(ReasonInvalidEnum, "%s %q is not one of %v", field, clip(v, 40), allowed)
}

func validateEnums(ev *Event) error {
	checks := []struct {
		field    name
		v        string
		allowed  []string
		required bool
	}{
		{"source", ev.Source, Sources, true},
		{"event_type", ev.EventType, EventTypes, true},
		{"mode", ev.Mode, Modes, true},
		{"decision", ev.Decision, Decisions, true},
		{"actual_decision", ev.ActualDecision, Decisions, true},
		{"outcome", ev.Outcome, Outcomes, false},
		{"highest_severity", ev.HighestSeverity, Severities, true},
	}
	for _, c := range checks {
		if err := oneOf(c.field, c.v, c.allowed, c.required); err != nil {
			return err
		}
	}
	for i, p := range ev.DeterminingPolicies {
		if p.PolicyID == "" {
			return invalid(ReasonMissingField, "determining_policies[%d].policy_id is required", i)
		}
		if err := oneOf(elem{"determining_policies", i, "severity"}, p.Severity,
			Severities, false); err != nil {
			return err
		}
	}
	for i, s := range ev.Signals {
		if s.Detector == "" {
			return invalid(ReasonMissingField, "signals[%d].detector is required", i)
		}
		if err := oneOf(elem{"signals", i, "severity"}, s.Severity,
			Severities, false); err != nil {
			return err
		}
	}
	for i, det := range ev.Detectors {
		if det.Name == "" {
			return invalid(ReasonMissingField, "detectors[%d].name is required", i)
		}
	}
	return nil
}

func validateNumbers(ev *Event, l Limits) error {
	for i, s := range ev.Signals {
		if s.Score == nil {
			continue
		}
		v := *s.Score
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > 100 {
			return invalid(ReasonInvalidScore, "signals[%d].score must be within 0-100", i)
		}
	}
	badLatency := func(v float64) bool { return math.IsNaN(v) || v < 0 || v > l.MaxLatencyMS }
	if badLatency(ev.Latency.TotalMS) || badLatency(ev.Latency.EvalMS) {
		return invalid(ReasonLimit, "latency.total_ms and eval_ms must be within 0-%g",
			l.MaxLatencyMS)
	}
	for i, det := range ev.Detectors {
		if badLatency(det.LatencyMS) {
			return invalid(ReasonLimit, "%s must be within 0-%g",
				elem{"detectors", i, "latency_ms"}, l.MaxLatencyMS)
		}
	}
	if t := ev.ConversationTurn; t != nil && (*t < 0 || *t > l.MaxConvTurn) {
		return invalid(ReasonLimit, "conversation_turn must be within 0-%d", l.MaxConvTurn)
	}
	if ev.Identity != nil {
		if dd := ev.Identity.DelegationDepth; dd < 0 || dd > l.MaxDelegation {
			return invalid(ReasonLimit, "identity.delegation_depth must be within 0-%d",
				l.MaxDelegation)
		}
	}
	if ev.Model != nil && ev.Model.TokensUsed < 0 {
		return invalid(ReasonLimit, "model.tokens_used must not be negative")
	}
	if ev.Content != nil && ev.Content.Length < 0 {
		return invalid(ReasonLimit, "content.length must not be negative")
	}
	return nil
}

func (d *Decoder) validateSizes(ev *Event) error {
	l := d.limits
	str := func(field fmt.Stringer, v string) error {
		if len(v) > l.MaxStringLen {
			return invalid(ReasonLimit, "%s is longer than %d bytes", field, l.MaxStringLen)
		}
		return nil
	}
	arr := func(field fmt.Stringer, n, max int) error {
		if n > max {
			return invalid(ReasonLimit, "%s has more than %d entries", field, max)
		}
		return nil
	}

	type field struct {
		name name
		v    string
	}
	fields := []field{
		{"application_id", ev.ApplicationID}, {"request_id", ev.RequestID},
		{"audit_id", ev.AuditID}, {"trace_id", ev.TraceID}, {"span_id", ev.SpanID},
		{"session_id", ev.SessionID}, {"action", ev.Action}, {"reason", ev.Reason},
	}
	if id := ev.Identity; id != nil {
		fields = append(fields, field{"identity.user_id", id.UserID},
			field{"identity.agent_id", id.AgentID}, field{"identity.subject", id.Subject},
			field{"identity.act_sub", id.ActSub}, field{"identity.identity_type", id.IdentityType},
			field{"identity.trust_level", id.TrustLevel})
	}
	if m := ev.Model; m != nil {
		fields = append(fields, field{"model.provider", m.Provider}, field{"model.model", m.Model})
	}
	if t := ev.Tool; t != nil {
		fields = append(fields, field{"tool.name", t.Name}, field{"tool.server_id", t.ServerID},
			field{"tool.category", t.Category})
	}
	if c := ev.Content; c != nil {
		fields = append(fields, field{"content.sha256", c.SHA256})
		if len(c.RedactedPreview) > l.MaxPreviewLen {
			return invalid(ReasonLimit, "content.redacted_preview is longer than %d bytes",
				l.MaxPreviewLen)
		}
	}
	for _, f := range fields {
		if err := str(f.name, f.v); err != nil {
			return err
		}
	}

	if err := arr(name("threat_categories"), len(ev.ThreatCategories), l.MaxArrayLen); err != nil {
		return err
	}
	if err := arr(name("determining_policies"), len(ev.DeterminingPolicies), l.MaxPolicies); err != nil {
		return err
	}
	if err := arr(name("signals"), len(ev.Signals), l.MaxSignals); err != nil {
		return err
	}
	if err := arr(name("detectors"), len(ev.Detectors), l.MaxDetectors); err != nil {
		return err
	}
	for _, c := range ev.ThreatCategories {
		if err := str(name("threat_categories[]"), c); err != nil {
			return err
		}
	}
	for i, p := range ev.DeterminingPolicies {
		if err := arr(elem{"determining_policies", i, "tags"}, len(p.Tags),
			l.MaxArrayLen); err != nil {
			return err
		}
		for _, s := range [3]string{p.PolicyID, p.Category, p.RejectMessage} {
			if err := str(elem{"determining_policies", i, ""}, s); err != nil {
				return err
			}
		}
		for _, s := range p.Tags {
			if err := str(elem{"determining_policies", i, ""}, s); err != nil {
				return err
			}
		}
	}
	for i, s := range ev.Signals {
		if err := str(elem{"signals", i, ""}, s.ID+s.Detector); err != nil {
			return err
		}
	}
	for i, det := range ev.Detectors {
		if err := str(elem{"detectors", i, ""}, det.Name+det.Tier+det.Status); err != nil {
			return err
		}
	}
	if ev.Identity != nil {
		if err := arr(name("identity.scopes"), len(ev.Identity.Scopes), l.MaxArrayLen); err != nil {
			return err
		}
		for _, sc := range ev.Identity.Scopes {
			if err := str(name("identity.scopes[]"), sc); err != nil {
				return err
			}
		}
	}
	if err := checkMap("metadata", ev.Metadata, l); err != nil {
		return err
	}
	return checkMap("labels", ev.Labels, l)
}

func checkMap(field string, m map[string]string, l Limits) error {
	if len(m) > l.MaxMapEntries {
		return invalid(ReasonLimit, "%s has more than %d entries", field, l.MaxMapEntries)
	}
	total := 0
	for k, v := range m {
		if k == "" {
			return invalid(ReasonMissingField, "%s has an empty key", field)
		}
		total += len(k) + len(v)
	}
	if total > l.MaxMapBytes {
		return invalid(ReasonLimit, "%s is larger than %d bytes", field, l.MaxMapBytes)
	}
	return nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
