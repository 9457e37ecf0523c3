package gen_test

import (
	"testing"

	"github.com/go-json-experiment/json"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/gen"
)

// Generated events must pass the same validation the ingester applies, and
// each deliberately invalid payload must fail for its stated reason.
func TestGeneratedTrafficValidates(t *testing.T) {
	g := gen.New(1, nil, nil)
	dec := events.NewDecoder(events.Limits{})
	outcomes := map[string]int{}
	for range 2000 {
		ev := g.Next()
		raw, err := json.Marshal(ev)
		require.NoError(t, err)
		got, err := dec.Decode(raw)
		require.NoError(t, err, string(raw))
		outcomes[got.Outcome]++
	}
	for _, o := range events.Outcomes {
		require.Positive(t, outcomes[o], "outcome %s never generated", o)
	}
	require.Greater(t, outcomes["allowed"], 1500)

	for range 21 {
		bad := g.Invalid()
		ev, err := dec.Decode(bad.Payload)
		if bad.Reason == events.ReasonTenantMismatch {
			require.NoError(t, err)
			acct, _, _, err := events.ParseSubject(bad.Subject)
			require.NoError(t, err)
			require.NotEqual(t, acct, ev.AccountID)
			continue
		}
		require.Error(t, err)
		require.Equal(t, bad.Reason, events.ReasonOf(err), "%v", err)
	}
}
