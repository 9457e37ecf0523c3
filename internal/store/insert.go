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
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.table()+" ("+insertColumns+")")
	if err != nil {
		return fmt.Errorf("prepare insert: %w", err)
	}
	defer batch.Abort()

	n := 0
	for _, k := range keys {
		for _, ev := range groups[k] {
			if err := appendEvent(batch, ev, now); err != nil {
				return fmt.Errorf("append event %s/%s/%s: %w",
					ev.AccountID, ev.ProjectID, ev.EventID, err)
			}
			n++
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d rows in %d partitions: %w", n, len(keys), err)
	}
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

type appender interface {
	Append(v ...any) error
}

func appendEvent(b appender, ev *events.Event, now uint64) error {
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
	detectors := detectorNames(ev)
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

	return b.Append(
		ev.AccountID, ev.ProjectID, t.Truncate(time.Second), uint16(t.Nanosecond()/1e6),
		ev.EventID, ev.Source, ev.EventType, ev.Action, ev.Mode, ev.Decision,
		ev.ActualDecision, ev.Outcome, ev.HighestSeverity, ev.Reason,
		ev.ApplicationID, ev.RequestID, ev.AuditID, ev.TraceID, ev.SpanID, ev.SessionID, turn,
		categories, policies, detectors, maxScore, user, agent, model, tool,
		float32(ev.Latency.TotalMS), float32(ev.Latency.EvalMS), preview, mk, mv, lk, lv,
		rawString(raw), now,
	)
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
