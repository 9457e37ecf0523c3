package events_test

import (
	"strings"
	"testing"

	"github.com/go-json-experiment/json"

	"github.com/guardwatch/observatory/internal/events"
)

// FuzzDecode checks that any payload is either rejected with a known
// reason or accepted as an event that names valid tenant ids and survives
// a round trip unchanged.
func FuzzDecode(f *testing.F) {
	v := validJSON()
	for _, seed := range []string{
		v, "", "{}", "[]", "null", v + v, strings.Replace(v, `97.5`, `1e999`, 1),
		strings.Replace(v, `"acme"`, `"a.b"`, 1), `{"schema_version":"1","schema_version":"1"}`,
		strings.Repeat("[", 100), "\xff\xfe", `{"metadata":{"a":{"b":{}}}}`,
	} {
		f.Add([]byte(seed))
	}
	known := map[events.Reason]bool{}
	for _, r := range events.Reasons {
		known[r] = true
	}

	f.Fuzz(func(t *testing.T, payload []byte) {
		ev, err := decoder().Decode(payload)
		if err != nil {
			if r := events.ReasonOf(err); !known[r] {
				t.Fatalf("rejection without a known reason: %v", err)
			}
			return
		}
		if !events.ValidID(ev.AccountID) || !events.ValidID(ev.ProjectID) {
			t.Fatalf("accepted invalid tenant %q/%q", ev.AccountID, ev.ProjectID)
		}
		again, err := decoder().Decode(ev.Raw)
		if err != nil {
			t.Fatalf("raw bytes of an accepted event are rejected: %v", err)
		}
		a, _ := json.Marshal(ev, json.Deterministic(true))
		b, _ := json.Marshal(again, json.Deterministic(true))
		if string(a) != string(b) {
			t.Fatalf("round trip changed the event:\n%s\n%s", a, b)
		}
	})
}

// FuzzParseSubject checks that a parsed subject is rebuilt exactly from
// its parts, so no id with '.', '*', '>' or spaces gets through.
func FuzzParseSubject(f *testing.F) {
	for _, s := range []string{"guard.v1.acme.proj_prod.decision", "guard.v1.a.b.c.d",
		"guard.v1.*.>.decision", "guard.v1.a b.p.decision", "guard.v1..p.decision", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		acct, proj, kind, err := events.ParseSubject(subject)
		if err != nil {
			return
		}
		rebuilt, err := events.Subject(acct, proj, kind)
		if err != nil || rebuilt != subject {
			t.Fatalf("parsed %q into %q %q %q, rebuilt %q (%v)", subject, acct, proj, kind,
				rebuilt, err)
		}
	})
}
