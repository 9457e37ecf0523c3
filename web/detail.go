package web

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/store"
)

// KV is one labelled value.
type KV struct {
	Key, Value string
	Mono       bool // an id or hash, shown in a fixed-width face
}

// PolicyView is one determining policy.
type PolicyView struct {
	ID, Severity, Category, Message string
	Tags                            []string
}

// SignalView is one detector signal with its score drawn as a bar.
type SignalView struct {
	ID, Detector, Severity, Score string
	Share                         float64 // score / 100
	Scored                        bool
}

// DetectorView is one detector that ran.
type DetectorView struct {
	Name, Tier, Latency, Status string
	Share                       float64 // of the slowest detector
}

// TraceView is the page of one decision.
type TraceView struct {
	Chrome
	ID             string
	Time           TimeView
	Outcome        string
	Decision       string
	ActualDecision string
	Mode           string
	Severity       string
	Reason         string
	Categories     []string
	Fields         []KV
	Policies       []PolicyView
	Signals        []SignalView
	Detectors      []DetectorView
	Latency        []KV
	Identity       []KV
	Scopes         []string
	Model          []KV
	Tool           []KV
	Content        []KV
	// ContentAllowed says whether the viewer holds view_content; without
	// it the preview is neither shown nor part of RawJSON.
	ContentAllowed bool
	Preview        string
	Metadata       []KV
	Labels         []KV
	RawJSON        string
	SessionID      string
	SessionHref    string
	TraceID        string
	TraceHref      string // decisions with the same trace id
	ListHref       string
}

func (s *server) trace(w http.ResponseWriter, r *http.Request) error {
	project, id := r.PathValue("project"), r.PathValue("event")
	ctx := r.Context()
	sc, err := s.authorize(ctx, authz.ViewTrace, authz.KindTrace, project, id)
	if err != nil {
		return err
	}
	content, err := s.allowed(ctx, authz.ViewContent, authz.KindTrace, project, id)
	if err != nil {
		return err
	}
	done, err := s.beginQuery(sc)
	if err != nil {
		return err
	}
	defer done()
	qctx, cancel := context.WithTimeout(ctx, s.QueryTimeout)
	defer cancel()
	var ev *events.Event
	if at := r.URL.Query().Get("at"); at != "" {
		// Lists link with the row's time so the lookup reads one second of
		// the project's range instead of all of it.
		ms, perr := strconv.ParseInt(at, 10, 64)
		if perr != nil || ms < 0 {
			return badParam("at", "must be a time in unix milliseconds")
		}
		ev, err = s.Store.GetNear(qctx, sc, id, time.UnixMilli(ms))
	} else {
		ev, err = s.Store.Get(qctx, sc, id)
	}
	if errors.Is(err, store.ErrNotFound) {
		return errNotFound
	}
	if err != nil {
		return err
	}
	done()
	v, err := traceView(sc.Project(), ev, content, viewerZone(r), s.Now())
	if err != nil {
		return err
	}
	v.Chrome = s.chrome(r, sc.Project())
	v.Section = "traces"
	if !v.CanSessions {
		v.SessionHref = ""
	}
	return s.render(w, r, http.StatusOK, TracePage(v))
}

// traceView shapes an event for its page. Without content permission the
// preview is dropped before anything, the raw JSON included, is built.
func traceView(project string, ev *events.Event, content bool, loc *time.Location,
	now time.Time) (TraceView, error) {
	e := *ev
	if e.Content != nil && !content {
		c := *e.Content
		c.RedactedPreview = ""
		e.Content = &c
	}
	raw, err := json.Marshal(&e, jsontext.WithIndent("  "), jsontext.AllowInvalidUTF8(true),
		json.Deterministic(true))
	if err != nil {
		return TraceView{}, err
	}

	v := TraceView{
		ID: clean(e.EventID, 0), Time: timeView(e.OccurredAt, loc, now),
		Outcome: e.Outcome, Decision: e.Decision, ActualDecision: e.ActualDecision,
		Mode: e.Mode, Severity: e.HighestSeverity, Reason: clean(e.Reason, 0),
		Categories: cleanAll(e.ThreatCategories, 0), ContentAllowed: content,
		RawJSON: clean(string(raw), 0), ListHref: projectPath(project, "traces"),
	}
	turn := ""
	if e.ConversationTurn != nil {
		turn = strconv.Itoa(*e.ConversationTurn)
	}
	v.Fields = kvs(
		KV{"Source", e.Source, false}, KV{"Event type", e.EventType, false},
		KV{"Action", e.Action, false}, KV{"Application", e.ApplicationID, false},
		KV{"Session", e.SessionID, true}, KV{"Turn", turn, false},
		KV{"Trace id", e.TraceID, true}, KV{"Span id", e.SpanID, true},
		KV{"Request id", e.RequestID, true}, KV{"Audit id", e.AuditID, true},
		KV{"Event id", e.EventID, true}, KV{"Schema", e.SchemaVersion, false},
	)
	if validRef(e.SessionID) {
		v.SessionID = clean(e.SessionID, 0)
		v.SessionHref = projectPath(project, "sessions", e.SessionID)
	}
	if e.TraceID != "" && len(e.TraceID) <= 256 {
		v.TraceID = clean(e.TraceID, 0)
		v.TraceHref = href(projectPath(project, "traces"),
			url.Values{"trace": {e.TraceID}, "range": {"90d"}})
	}

	for _, p := range e.DeterminingPolicies {
		v.Policies = append(v.Policies, PolicyView{ID: clean(p.PolicyID, 0),
			Severity: p.Severity, Category: clean(p.Category, 0),
			Message: clean(p.RejectMessage, 0), Tags: cleanAll(p.Tags, 60)})
	}
	for _, sig := range e.Signals {
		sv := SignalView{ID: clean(sig.ID, 0), Detector: clean(sig.Detector, 0),
			Severity: sig.Severity}
		if sig.Score != nil {
			sv.Scored = true
			sv.Score = strconv.FormatFloat(*sig.Score, 'f', 1, 64)
			sv.Share = *sig.Score / 100
		}
		v.Signals = append(v.Signals, sv)
	}
	slowest := 0.0
	for _, d := range e.Detectors {
		slowest = max(slowest, d.LatencyMS)
	}
	for _, d := range e.Detectors {
		dv := DetectorView{Name: clean(d.Name, 0), Tier: clean(d.Tier, 0),
			Latency: ms(d.LatencyMS), Status: clean(d.Status, 0)}
		if slowest > 0 {
			dv.Share = d.LatencyMS / slowest
		}
		v.Detectors = append(v.Detectors, dv)
	}
	v.Latency = []KV{{"Total", ms(e.Latency.TotalMS), false},
		{"Policy evaluation", ms(e.Latency.EvalMS), false}}

	if id := e.Identity; id != nil {
		depth := ""
		if id.DelegationDepth > 0 {
			depth = strconv.Itoa(id.DelegationDepth)
		}
		v.Identity = kvs(KV{"User", id.UserID, false}, KV{"Agent", id.AgentID, false},
			KV{"Subject", id.Subject, true}, KV{"Acting subject", id.ActSub, true},
			KV{"Identity type", id.IdentityType, false},
			KV{"Trust level", id.TrustLevel, false}, KV{"Delegation depth", depth, false})
		v.Scopes = cleanAll(id.Scopes, 80)
	}
	if m := e.Model; m != nil {
		tokens := ""
		if m.TokensUsed > 0 {
			tokens = count(uint64(m.TokensUsed))
		}
		v.Model = kvs(KV{"Provider", m.Provider, false}, KV{"Model", m.Model, false},
			KV{"Tokens", tokens, false})
	}
	if t := e.Tool; t != nil {
		v.Tool = kvs(KV{"Name", t.Name, false}, KV{"Server", t.ServerID, true},
			KV{"Category", t.Category, false})
	}
	if c := e.Content; c != nil {
		length := ""
		if c.Length > 0 {
			length = count(uint64(c.Length)) + " bytes"
		}
		v.Content = kvs(KV{"SHA-256", c.SHA256, true}, KV{"Length", length, false})
		if content {
			v.Preview = clean(c.RedactedPreview, 0)
		}
	}
	v.Metadata = mapKVs(e.Metadata)
	v.Labels = mapKVs(e.Labels)
	return v, nil
}

// kvs cleans the values and drops the empty ones.
func kvs(in ...KV) []KV {
	out := make([]KV, 0, len(in))
	for _, kv := range in {
		if kv.Value != "" {
			kv.Value = clean(kv.Value, 0)
			out = append(out, kv)
		}
	}
	return out
}

func mapKVs(m map[string]string) []KV {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]KV, len(keys))
	for i, k := range keys {
		out[i] = KV{Key: clean(k, 0), Value: clean(m[k], 0)}
	}
	return out
}
