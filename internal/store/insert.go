package store

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"
	"unsafe"

	"github.com/go-json-experiment/json"

	"github.com/guardwatch/observatory/internal/events"
)

const insertColumns = `account_id, project_id, occurred_at, occurred_ms, event_id, source,
 event_type, action, mode, decision, actual_decision, outcome, highest_severity, reason,
 application_id, request_id, audit_id, trace_id, span_id, session_id, conversation_turn,
 threat_categories, policy_ids, detectors, max_score, user_id, agent_id, model, tool_name,
 latency_ms, eval_ms, content_preview, metadata_keys, metadata_values, label_keys,
 label_values, raw, ingested_at`

// partitionKey mirrors the table's PARTITION BY expression.
type partitionKey struct {
	account, project string
	month            int
}

func keyOf(ev *events.Event) partitionKey {
	t := ev.OccurredAt.UTC()
	return partitionKey{ev.AccountID, ev.ProjectID, t.Year()*100 + int(t.Month())}
}

// Insert writes validated events. Rows are grouped by partition and sent
// in blocks that each span at most MaxPartitionsPerBatch partitions. It
// returns only after ClickHouse accepted every block; on error some blocks
// may be stored, which is harmless because reads hide repeated event ids.
func (s *Store) Insert(ctx context.Context, evs []*events.Event) error {
	if len(evs) == 0 {
		return nil
	}

	groups := map[partitionKey][]*events.Event{}
	for _, ev := range evs {
		k := keyOf(ev)
		groups[k] = append(groups[k], ev)
	}
	keys := make([]partitionKey, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.account != b.account {
			return a.account < b.account
		}
		if a.project != b.project {
			return a.project < b.project
		}
		return a.month < b.month
	})

	now := uint64(time.Now().UnixMilli())
	for start := 0; start < len(keys); start += s.maxPart {
		end := min(start+s.maxPart, len(keys))
		if err := s.sendBlock(ctx, keys[start:end], groups, now); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) sendBlock(ctx context.Context, keys []partitionKey,
	groups map[partitionKey][]*events.Event, now uint64) error {
	n := 0
	for _, k := range keys {
		n += len(groups[k])
	}
	cols := newBlock(n)
	for _, k := range keys {
		for _, ev := range groups[k] {
			if err := cols.add(ev, now); err != nil {
				return fmt.Errorf("append event %s/%s/%s: %w",
					ev.AccountID, ev.ProjectID, ev.EventID, err)
			}
		}
	}

	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.table()+" ("+insertColumns+")")
	if err != nil {
		return fmt.Errorf("prepare insert: %w", err)
	}
	defer batch.Abort()
	for i, c := range cols.columns() {
		if err := batch.Column(i).Append(c); err != nil {
			return fmt.Errorf("insert %d rows: column %d: %w", n, i, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d rows in %d partitions: %w", n, len(keys), err)
	}
	return nil
}

// block holds an insert's rows column by column, in insertColumns order.
// Handing the driver whole columns spares it a type switch and an
// interface conversion for every value of every row.
type block struct {
	account, project, eventID                            []string
	occurredAt                                           []time.Time
	occurredMS                                           []uint16
	source, eventType, action, mode, decision, actualDec []string
	outcome, severity, reason, appID, requestID, auditID []string
	traceID, spanID, sessionID                           []string
	turn                                                 []*int32
	categories, policies, detectors                      [][]string
	maxScore                                             []*float32
	user, agent, model, tool                             []string
	latency, eval                                        []float32
	preview                                              []string
	metaKeys, metaValues, labelKeys, labelValues         [][]string
	raw                                                  []string
	ingestedAt                                           []uint64
}

func newBlock(n int) *block {
	str := func() []string { return make([]string, 0, n) }
	arr := func() [][]string { return make([][]string, 0, n) }
	return &block{
		account: str(), project: str(), eventID: str(),
		occurredAt: make([]time.Time, 0, n), occurredMS: make([]uint16, 0, n),
		source: str(), eventType: str(), action: str(), mode: str(), decision: str(),
		actualDec: str(), outcome: str(), severity: str(), reason: str(), appID: str(),
		requestID: str(), auditID: str(), traceID: str(), spanID: str(), sessionID: str(),
		turn: make([]*int32, 0, n), categories: arr(), policies: arr(), detectors: arr(),
		maxScore: make([]*float32, 0, n), user: str(), agent: str(), model: str(),
		tool: str(), latency: make([]float32, 0, n), eval: make([]float32, 0, n),
		preview: str(), metaKeys: arr(), metaValues: arr(), labelKeys: arr(),
		labelValues: arr(), raw: str(), ingestedAt: make([]uint64, 0, n),
	}
}

// columns returns the columns in insertColumns order.
func (b *block) columns() []any {
	return []any{
		b.account, b.project, b.occurredAt, b.occurredMS, b.eventID, b.source,
		b.eventType, b.action, b.mode, b.decision, b.actualDec, b.outcome, b.severity,
		b.reason, b.appID, b.requestID, b.auditID, b.traceID, b.spanID, b.sessionID,
		b.turn, b.categories, b.policies, b.detectors, b.maxScore, b.user, b.agent,
		b.model, b.tool, b.latency, b.eval, b.preview, b.metaKeys, b.metaValues,
		b.labelKeys, b.labelValues, b.raw, b.ingestedAt,
	}
}

// add appends one event's row.
func (b *block) add(ev *events.Event, now uint64) error {
	raw := ev.Raw
	if len(raw) == 0 {
		var err error
		if raw, err = json.Marshal(ev, json.Deterministic(true)); err != nil {
			return fmt.Errorf("encode raw: %w", err)
		}
	}

	t := ev.OccurredAt.UTC()
	var turn *int32
	if ev.ConversationTurn != nil {
		v := int32(*ev.ConversationTurn)
		turn = &v
	}
	policies := make([]string, len(ev.DeterminingPolicies))
	for i, p := range ev.DeterminingPolicies {
		policies[i] = p.PolicyID
	}
	var maxScore *float32
	for _, sig := range ev.Signals {
		if sig.Score != nil && (maxScore == nil || float32(*sig.Score) > *maxScore) {
			v := float32(*sig.Score)
			maxScore = &v
		}
	}
	var user, agent, model, tool, preview string
	if ev.Identity != nil {
		user, agent = ev.Identity.UserID, ev.Identity.AgentID
	}
	if ev.Model != nil {
		model = ev.Model.Model
	}
	if ev.Tool != nil {
		tool = ev.Tool.Name
	}
	if ev.Content != nil {
		preview = ev.Content.RedactedPreview
	}
	mk, mv := splitMap(ev.Metadata)
	lk, lv := splitMap(ev.Labels)
	categories := ev.ThreatCategories
	if categories == nil {
		categories = []string{}
	}

	b.account = append(b.account, ev.AccountID)
	b.project = append(b.project, ev.ProjectID)
	b.occurredAt = append(b.occurredAt, t.Truncate(time.Second))
	b.occurredMS = append(b.occurredMS, uint16(t.Nanosecond()/1e6))
	b.eventID = append(b.eventID, ev.EventID)
	b.source = append(b.source, ev.Source)
	b.eventType = append(b.eventType, ev.EventType)
	b.action = append(b.action, ev.Action)
	b.mode = append(b.mode, ev.Mode)
	b.decision = append(b.decision, ev.Decision)
	b.actualDec = append(b.actualDec, ev.ActualDecision)
	b.outcome = append(b.outcome, ev.Outcome)
	b.severity = append(b.severity, ev.HighestSeverity)
	b.reason = append(b.reason, ev.Reason)
	b.appID = append(b.appID, ev.ApplicationID)
	b.requestID = append(b.requestID, ev.RequestID)
	b.auditID = append(b.auditID, ev.AuditID)
	b.traceID = append(b.traceID, ev.TraceID)
	b.spanID = append(b.spanID, ev.SpanID)
	b.sessionID = append(b.sessionID, ev.SessionID)
	b.turn = append(b.turn, turn)
	b.categories = append(b.categories, categories)
	b.policies = append(b.policies, policies)
	b.detectors = append(b.detectors, detectorNames(ev))
	b.maxScore = append(b.maxScore, maxScore)
	b.user = append(b.user, user)
	b.agent = append(b.agent, agent)
	b.model = append(b.model, model)
	b.tool = append(b.tool, tool)
	b.latency = append(b.latency, float32(ev.Latency.TotalMS))
	b.eval = append(b.eval, float32(ev.Latency.EvalMS))
	b.preview = append(b.preview, preview)
	b.metaKeys = append(b.metaKeys, mk)
	b.metaValues = append(b.metaValues, mv)
	b.labelKeys = append(b.labelKeys, lk)
	b.labelValues = append(b.labelValues, lv)
	b.raw = append(b.raw, rawString(raw))
	b.ingestedAt = append(b.ingestedAt, now)
	return nil
}

// rawString views the producer's bytes as a string without copying them:
// the driver copies the string into its column buffer, and neither the
// ingester nor the decoder changes an event's Raw after decoding.
func rawString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// detectorNames lists each detector that ran or signalled, once. Events
// name a handful of detectors, so a linear search beats a set.
func detectorNames(ev *events.Event) []string {
	out := make([]string, 0, len(ev.Detectors)+len(ev.Signals))
	for _, d := range ev.Detectors {
		if !slices.Contains(out, d.Name) {
			out = append(out, d.Name)
		}
	}
	for _, sig := range ev.Signals {
		if !slices.Contains(out, sig.Detector) {
			out = append(out, sig.Detector)
		}
	}
	return out
}

func splitMap(m map[string]string) ([]string, []string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	vals := make([]string, len(keys))
	for i, k := range keys {
		vals[i] = m[k]
	}
	return keys, vals
}
