package events_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/go-json-experiment/json"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
)

// base decodes the valid test event for a case to change.
func base(t *testing.T) *events.Event {
	t.Helper()
	var ev events.Event
	require.NoError(t, json.Unmarshal([]byte(validJSON()), &ev))
	return &ev
}

func repeat[T any](n int, f func(i int) T) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

// TestEveryLimitHoldsAtItsBoundary checks each count and size limit twice:
// exactly at the limit the event passes, one over it fails with
// limit_exceeded (or the stated reason) and a detail naming the field.
func TestEveryLimitHoldsAtItsBoundary(t *testing.T) {
	l := events.DefaultLimits
	str := func(n int) string { return strings.Repeat("s", n) }
	cases := []struct {
		name   string
		field  string // what the detail must name
		limit  int
		set    func(ev *events.Event, n int)
		reason events.Reason
	}{
		{"signals", "signals", l.MaxSignals, func(ev *events.Event, n int) {
			ev.Signals = repeat(n, func(i int) events.Signal {
				return events.Signal{ID: fmt.Sprint(i), Detector: "d"}
			})
		}, events.ReasonLimit},
		{"determining policies", "determining_policies", l.MaxPolicies,
			func(ev *events.Event, n int) {
				ev.DeterminingPolicies = repeat(n, func(i int) events.Policy {
					return events.Policy{PolicyID: fmt.Sprint(i)}
				})
			}, events.ReasonLimit},
		{"detectors", "detectors", l.MaxDetectors, func(ev *events.Event, n int) {
			ev.Detectors = repeat(n, func(i int) events.Detector {
				return events.Detector{Name: fmt.Sprint(i)}
			})
		}, events.ReasonLimit},
		{"threat categories", "threat_categories", l.MaxArrayLen,
			func(ev *events.Event, n int) {
				ev.ThreatCategories = repeat(n, func(int) string { return "c" })
			}, events.ReasonLimit},
		{"policy tags", "determining_policies[0].tags", l.MaxArrayLen,
			func(ev *events.Event, n int) {
				ev.DeterminingPolicies[0].Tags = repeat(n, func(int) string { return "t" })
			}, events.ReasonLimit},
		{"identity scopes", "identity.scopes", l.MaxArrayLen, func(ev *events.Event, n int) {
			ev.Identity.Scopes = repeat(n, func(int) string { return "s" })
		}, events.ReasonLimit},
		{"label entries", "labels", l.MaxMapEntries, func(ev *events.Event, n int) {
			ev.Labels = map[string]string{}
			for i := range n {
				ev.Labels[fmt.Sprint(i)] = "v"
			}
		}, events.ReasonLimit},
		{"metadata bytes", "metadata", l.MaxMapBytes, func(ev *events.Event, n int) {
			ev.Metadata = map[string]string{"k": str(n - 1)}
		}, events.ReasonLimit},
		{"reason length", "reason", l.MaxStringLen, func(ev *events.Event, n int) {
			ev.Reason = str(n)
		}, events.ReasonLimit},
		{"preview length", "content.redacted_preview", l.MaxPreviewLen,
			func(ev *events.Event, n int) {
				ev.Content = &events.Content{RedactedPreview: str(n)}
			}, events.ReasonLimit},
		{"threat category length", "threat_categories[]", l.MaxStringLen,
			func(ev *events.Event, n int) { ev.ThreatCategories = []string{str(n)} },
			events.ReasonLimit},
		{"policy reject message length", "determining_policies[0]", l.MaxStringLen,
			func(ev *events.Event, n int) { ev.DeterminingPolicies[0].RejectMessage = str(n) },
			events.ReasonLimit},
		{"identity scope length", "identity.scopes[]", l.MaxStringLen,
			func(ev *events.Event, n int) { ev.Identity.Scopes = []string{str(n)} },
			events.ReasonLimit},
		{"tool name length", "tool.name", l.MaxStringLen, func(ev *events.Event, n int) {
			ev.Tool = &events.Tool{Name: str(n)}
		}, events.ReasonLimit},
		{"event id length", "event_id", 128, func(ev *events.Event, n int) {
			ev.EventID = str(n)
		}, events.ReasonLimit},
		{"conversation turn", "conversation_turn", l.MaxConvTurn,
			func(ev *events.Event, n int) { ev.ConversationTurn = &n }, events.ReasonLimit},
		{"delegation depth", "identity.delegation_depth", l.MaxDelegation,
			func(ev *events.Event, n int) { ev.Identity.DelegationDepth = n }, events.ReasonLimit},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			at := base(t)
			c.set(at, c.limit)
			require.NoError(t, decoder().Validate(at), "exactly at the limit of %d", c.limit)

			over := base(t)
			c.set(over, c.limit+1)
			err := decoder().Validate(over)
			require.Equal(t, c.reason, events.ReasonOf(err), "%v", err)
			require.Contains(t, err.Error(), c.field)
		})
	}
}

// TestDecodeRejectsHostileShapes covers shapes a careless or hostile
// producer sends that the table of TestDecodeRejects does not.
func TestDecodeRejectsHostileShapes(t *testing.T) {
	v := validJSON()
	cases := []struct {
		name, payload string
		reason        events.Reason
	}{
		{"before 1970", strings.Replace(v, `2026-12-03T11:59:58.123Z`, `1969-12-31T23:59:59Z`, 1),
			events.ReasonInvalidTime},
		{"zero time", strings.Replace(v, `2026-12-03T11:59:58.123Z`, `0001-01-01T00:00:00Z`, 1),
			events.ReasonMissingField},
		{"time without zone", strings.Replace(v, `2026-12-03T11:59:58.123Z`,
			`2026-12-03T11:59:58`, 1), events.ReasonInvalidTime},
		{"negative turn", strings.Replace(v, `"action"`, `"conversation_turn":-1,"action"`, 1),
			events.ReasonLimit},
		{"turn overflows int", strings.Replace(v, `"action"`,
			`"conversation_turn":1e30,"action"`, 1), events.ReasonWrongType},
		{"negative tokens", strings.Replace(v, `"agent_id":"a1"}`,
			`"agent_id":"a1"},"model":{"tokens_used":-5}`, 1), events.ReasonLimit},
		{"empty metadata key", strings.Replace(v, `{"k":"v"}`, `{"":"v"}`, 1),
			events.ReasonMissingField},
		{"metadata value not a string", strings.Replace(v, `{"k":"v"}`, `{"k":1}`, 1),
			events.ReasonWrongType},
		{"detector latency too high", strings.Replace(v, `"latency_ms":3.5`,
			`"latency_ms":1e12`, 1), events.ReasonLimit},
		{"escaped invalid surrogate", strings.Replace(v, `"u1"`, `"\ud800"`, 1),
			events.ReasonInvalidJSON},
		{"nul in a key", strings.Replace(v, `"k":"v"`, "\"k\\u0000\":\"v\"", 1), ""},
		{"deep arrays in labels", strings.Replace(v, `{"env":"prod"}`,
			strings.Repeat("[", 9)+strings.Repeat("]", 9), 1), events.ReasonLimit},
		{"nested object where a string goes", strings.Replace(v, `"u1"`, `{"a":"b"}`, 1),
			events.ReasonWrongType},
		{"top-level string", `"hello"`, events.ReasonWrongType},
		{"whitespace only", "  \n\t ", events.ReasonInvalidJSON},
		{"byte order mark", "\ufeff" + v, events.ReasonInvalidJSON},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := decoder().Decode([]byte(c.payload))
			if c.reason == "" {
				// Accepted or rejected, but never a panic or an unknown reason.
				if err != nil {
					require.NotEmpty(t, events.ReasonOf(err), "%v", err)
				}
				return
			}
			require.Error(t, err)
			require.Equal(t, c.reason, events.ReasonOf(err), "%v", err)
		})
	}
}
