package gen

import (
	"strings"

	"github.com/go-json-experiment/json"

	"github.com/guardwatch/observatory/internal/events"
)

// Bad is a deliberately invalid payload and the reason it must be
// rejected with.
type Bad struct {
	Subject string
	Payload []byte
	Reason  events.Reason
}

// Invalid returns one of the invalid payload kinds, in rotation: broken
// JSON, a NaN score, an unknown enum value, a tenant that differs from the
// subject, an oversize event, a duplicate key and trailing data.
func (g *Generator) Invalid() Bad {
	g.mu.Lock()
	t := g.tenant()
	ev := g.next(t)
	kind := g.seq % 7
	g.mu.Unlock()

	subj, _ := events.Subject(t.Account, t.Project, events.KindDecision)
	valid, _ := json.Marshal(ev)
	s := string(valid)

	switch kind {
	case 0:
		return Bad{subj, valid[:len(valid)/2], events.ReasonInvalidJSON}
	case 1:
		return Bad{subj, []byte(strings.Replace(s, `"score":`, `"score":NaN,"x":`, 1)),
			events.ReasonInvalidJSON}
	case 2:
		return Bad{subj, []byte(strings.Replace(s, `"mode":"`+ev.Mode+`"`,
			`"mode":"yolo"`, 1)), events.ReasonInvalidEnum}
	case 3:
		other := "intruder"
		if t.Account == other {
			other = "intruder2"
		}
		return Bad{subj, []byte(strings.Replace(s, `"account_id":"`+t.Account+`"`,
			`"account_id":"`+other+`"`, 1)), events.ReasonTenantMismatch}
	case 4:
		ev.Reason = strings.Repeat("A", events.DefaultLimits.MaxBytes)
		big, _ := json.Marshal(ev)
		return Bad{subj, big, events.ReasonTooLarge}
	case 5:
		return Bad{subj, []byte(strings.Replace(s, `{"schema_version":"1"`,
			`{"schema_version":"1","schema_version":"1"`, 1)), events.ReasonDuplicateKey}
	default:
		return Bad{subj, append(valid, []byte(` {"second":true}`)...), events.ReasonInvalidJSON}
	}
}
