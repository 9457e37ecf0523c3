package events_test

import (
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
)

var fixedNow = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func decoder() *events.Decoder {
	return events.NewDecoder(events.Limits{AllowedClockNow: func() time.Time { return fixedNow }})
}

func validJSON() string {
	return `{"schema_version":"1","event_id":"e1","occurred_at":"2026-12-03T11:59:58.123Z",
"account_id":"acme","project_id":"proj_prod","source":"shield","event_type":"prompt",
"action":"process_prompt","mode":"monitor","decision":"allow","actual_decision":"deny",
"highest_severity":"high","threat_categories":["prompt_injection"],
"determining_policies":[{"policy_id":"p1","severity":"high","tags":["a"]}],
"signals":[{"id":"s1","detector":"inj","score":97.5,"severity":"high"},{"id":"s2","detector":"lang"}],
"detectors":[{"name":"inj","tier":"fast","latency_ms":3.5,"status":"ok"}],
"latency":{"total_ms":9.1,"eval_ms":4},"identity":{"user_id":"u1","agent_id":"a1"},
"metadata":{"k":"v"},"labels":{"env":"prod"}}`
}

func TestDecodeValid(t *testing.T) {
	ev, err := decoder().Decode([]byte(validJSON()))
	require.NoError(t, err)
	require.Equal(t, "monitored", ev.Outcome, "outcome is derived when absent")
	require.Equal(t, time.UTC, ev.OccurredAt.Location())
	require.Equal(t, 123*time.Millisecond, time.Duration(ev.OccurredAt.Nanosecond()))
	require.Nil(t, ev.Signals[1].Score, "a missing score stays absent, not zero")
	require.Equal(t, 97.5, *ev.Signals[0].Score)
}

func TestDecodeRejects(t *testing.T) {
	v := validJSON()
	cases := []struct {
		name    string
		payload string
		reason  events.Reason
	}{
		{"empty", ``, events.ReasonInvalidJSON},
		{"truncated", v[:40], events.ReasonInvalidJSON},
		{"trailing object", v + `{}`, events.ReasonInvalidJSON},
		{"trailing garbage", v + `x`, events.ReasonInvalidJSON},
		{"array", `[` + v + `]`, events.ReasonWrongType},
		{"NaN literal", strings.Replace(v, `97.5`, `NaN`, 1), events.ReasonInvalidJSON},
		{"score over 100", strings.Replace(v, `97.5`, `100.5`, 1), events.ReasonInvalidScore},
		{"negative score", strings.Replace(v, `97.5`, `-1`, 1), events.ReasonInvalidScore},
		{"huge score", strings.Replace(v, `97.5`, `1e400`, 1), events.ReasonWrongType},
		{"score as string", strings.Replace(v, `97.5`, `"97"`, 1), events.ReasonWrongType},
		{"unknown mode", strings.Replace(v, `"monitor"`, `"yolo"`, 1), events.ReasonInvalidEnum},
		{"unknown outcome", strings.Replace(v, `"action"`, `"outcome":"maybe","action"`, 1),
			events.ReasonInvalidEnum},
		{"unknown field", strings.Replace(v, `"action"`, `"actoin":"x","action"`, 1),
			events.ReasonUnknownField},
		{"duplicate key", strings.Replace(v, `"action"`, `"decision":"deny","action"`, 1),
			events.ReasonDuplicateKey},
		{"duplicate key case differs", strings.Replace(v, `"action"`, `"Decision":"deny","action"`, 1),
			events.ReasonUnknownField},
		{"invalid utf8", strings.Replace(v, `u1`, "u\xff1", 1), events.ReasonInvalidUTF8},
		{"schema 2", strings.Replace(v, `"schema_version":"1"`, `"schema_version":"2"`, 1),
			events.ReasonSchemaVersion},
		{"account with dot", strings.Replace(v, `"acme"`, `"ac.me"`, 1), events.ReasonInvalidID},
		{"account with star", strings.Replace(v, `"acme"`, `"*"`, 1), events.ReasonInvalidID},
		{"account with gt", strings.Replace(v, `"acme"`, `">"`, 1), events.ReasonInvalidID},
		{"project with space", strings.Replace(v, `"proj_prod"`, `"proj prod"`, 1),
			events.ReasonInvalidID},
		{"missing event id", strings.Replace(v, `"event_id":"e1",`, ``, 1),
			events.ReasonMissingField},
		{"missing time", strings.Replace(v, `"occurred_at":"2026-12-03T11:59:58.123Z",`, ``, 1),
			events.ReasonMissingField},
		{"bad time", strings.Replace(v, `2026-12-03T11:59:58.123Z`, `yesterday`, 1),
			events.ReasonInvalidTime},
		{"far future", strings.Replace(v, `2026-12-03T11:59:58.123Z`, `2026-12-04T11:59:58Z`, 1),
			events.ReasonInvalidTime},
		{"far past", strings.Replace(v, `2026-12-03T11:59:58.123Z`, `2025-01-01T00:00:00Z`, 1),
			events.ReasonInvalidTime},
		{"nested metadata", strings.Replace(v, `{"k":"v"}`, `{"k":{"deep":"v"}}`, 1),
			events.ReasonWrongType},
		{"too deep", strings.Replace(v, `"labels":{"env":"prod"}`,
			`"labels":`+strings.Repeat(`{"a":`, 20)+`1`+strings.Repeat(`}`, 20), 1),
			events.ReasonLimit},
		{"oversize", strings.Replace(v, `"u1"`, `"`+strings.Repeat("x", 70000)+`"`, 1),
			events.ReasonTooLarge},
		{"long string", strings.Replace(v, `"u1"`, `"`+strings.Repeat("x", 2000)+`"`, 1),
			events.ReasonLimit},
		{"negative latency", strings.Replace(v, `"total_ms":9.1`, `"total_ms":-1`, 1),
			events.ReasonLimit},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev, err := decoder().Decode([]byte(c.payload))
			require.Error(t, err)
			require.Nil(t, ev)
			require.Equal(t, c.reason, events.ReasonOf(err), "%v", err)
		})
	}
}

func TestDecodeTooManyMetadataEntries(t *testing.T) {
	var ev events.Event
	require.NoError(t, json.Unmarshal([]byte(validJSON()), &ev))
	ev.Metadata = map[string]string{}
	for i := range 100 {
		ev.Metadata[strings.Repeat("k", i+1)] = "v"
	}
	err := decoder().Validate(&ev)
	require.Equal(t, events.ReasonLimit, events.ReasonOf(err))
}

func TestSubjects(t *testing.T) {
	s, err := events.Subject("acme", "proj_prod", events.KindDecision)
	require.NoError(t, err)
	require.Equal(t, "guard.v1.acme.proj_prod.decision", s)

	a, p, k, err := events.ParseSubject(s)
	require.NoError(t, err)
	require.Equal(t, []string{"acme", "proj_prod", "decision"}, []string{a, p, k})

	for _, id := range []string{"", "a.b", "*", ">", "a b", "a\tb", "a/b", "..",
		strings.Repeat("a", 65), "ü", "a\x00"} {
		_, err := events.Subject(id, "p", events.KindDecision)
		require.ErrorIs(t, err, events.ErrInvalidID, "account %q", id)
		_, err = events.Subject("a", id, events.KindDecision)
		require.ErrorIs(t, err, events.ErrInvalidID, "project %q", id)
	}
	for _, subj := range []string{"guard.v1.a.b", "guard.v1.a.b.c.d", "guard.v2.a.b.decision",
		"guard.v1.a%.b.decision", "guard.v1..b.decision", "guard.v1.*.b.decision"} {
		_, _, _, err := events.ParseSubject(subj)
		require.Error(t, err, subj)
	}
}
