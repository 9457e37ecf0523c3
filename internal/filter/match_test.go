package filter_test

import (
	"context"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/testenv"
)

// TestMain stops the ClickHouse that testenv may start for this package.
func TestMain(m *testing.M) { testenv.Main(m) }

func match(t *testing.T, q string) filter.Filter {
	t.Helper()
	v, err := url.ParseQuery(q)
	require.NoError(t, err)
	f, err := filter.ParseMatch(v)
	require.NoError(t, err)
	return f
}

func score(v float64) *float64 { return &v }

func TestMatchesEachField(t *testing.T) {
	ev := &events.Event{
		Outcome: "blocked", Decision: "deny", Mode: "enforce", EventType: "prompt",
		HighestSeverity: "high", ThreatCategories: []string{"pii", "prompt_injection"},
		DeterminingPolicies: []events.Policy{{PolicyID: "pol-a"}, {PolicyID: "pol-b"}},
		Signals:             []events.Signal{{Detector: "inj", Score: score(87.5)}},
		Detectors:           []events.Detector{{Name: "pii-recognizer"}},
		Identity:            &events.Identity{UserID: "alice", AgentID: "bot"},
		SessionID:           "s1", ApplicationID: "chat", Reason: "Prompt Injection found",
	}
	cases := map[string]bool{
		"":                                  true,
		"outcome=blocked,alerted":           true,
		"outcome=allowed":                   false,
		"decision=deny&mode=enforce":        true,
		"event_type=response":               false,
		"severity=high":                     true,
		"severity=critical":                 false,
		"severity=none":                     true,
		"min_score=87.5":                    true,
		"min_score=88":                      false,
		"category=pii":                      true,
		"category=jailbreak":                false,
		"policy=pol-b":                      true,
		"policy=pol-c":                      false,
		"detector=inj":                      true,
		"detector=pii-recognizer":           true,
		"detector=other":                    false,
		"user=alice&agent=bot":              true,
		"user=bob":                          false,
		"session=s1&application=chat":       true,
		"application=ide":                   false,
		"outcome=blocked&severity=critical": false,
	}
	for q, want := range cases {
		t.Run(q, func(t *testing.T) {
			require.Equal(t, want, match(t, q).Matches(ev))
		})
	}
}

func TestMatchesDerivesOutcomeAndTreatsMissingIdentity(t *testing.T) {
	ev := &events.Event{Mode: "monitor", Decision: "allow", ActualDecision: "deny",
		HighestSeverity: "none"}
	require.True(t, match(t, "outcome=monitored").Matches(ev))
	require.False(t, match(t, "user=alice").Matches(ev))
	require.False(t, match(t, "min_score=1").Matches(ev))
	require.False(t, filter.Filter{}.Matches(nil))
}

func TestMatchesTimeRangeAndText(t *testing.T) {
	at := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	ev := &events.Event{OccurredAt: at, Reason: "Secret Key",
		Content: &events.Content{RedactedPreview: "the Hidden text"}}
	f := filter.Filter{From: at, To: at.Add(time.Second)}
	require.True(t, f.Matches(ev), "from is inclusive")
	f = filter.Filter{From: at.Add(-time.Second), To: at}
	require.False(t, f.Matches(ev), "to is exclusive")

	require.True(t, filter.Filter{Text: "secret key"}.Matches(ev))
	require.True(t, filter.Filter{Text: "hidden"}.Matches(ev))
	require.False(t, filter.Filter{Text: "hidden", ReasonOnly: true}.Matches(ev))
}

func TestParseMatchRefusesRangeAndSearch(t *testing.T) {
	for _, q := range []string{"range=1h", "from=2026-01-01&to=2026-01-02", "q=x",
		"trace=t1", "bogus=1"} {
		v, _ := url.ParseQuery(q)
		_, err := filter.ParseMatch(v)
		var fe *filter.Error
		require.ErrorAs(t, err, &fe, q)
	}
	v, _ := url.ParseQuery("severity=urgent")
	_, err := filter.ParseMatch(v)
	require.Error(t, err)
}

func TestMatchValuesRoundTrip(t *testing.T) {
	f := match(t, "outcome=blocked,alerted&severity=high&min_score=70&category=pii"+
		"&policy=p1&user=u%20one&application=chat")
	require.True(t, f.From.IsZero() && f.To.IsZero() && f.Preset == "")
	back, err := filter.ParseMatch(f.MatchValues())
	require.NoError(t, err)
	require.Equal(t, f, back)
}

// TestMatchesAgreesWithTheStore counts generated decisions with the store's
// query and with Matches, for filters on every match field: both must see
// the same decisions.
func TestMatchesAgreesWithTheStore(t *testing.T) {
	addr := testenv.ClickHouse(t)
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{Addr: addr, Database: testenv.Database(t, addr),
		Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })

	tenant := gen.Tenant{Account: "acme", Project: "proj_prod"}
	now := time.Now().UTC()
	i := 0
	g := gen.New(7, []gen.Tenant{tenant}, func() time.Time {
		i++
		return now.Add(-time.Duration(i) * time.Second)
	})
	var evs []*events.Event
	for range 3000 {
		evs = append(evs, g.Next())
	}
	require.NoError(t, st.Insert(ctx, evs))
	sc, err := store.NewScope(tenant.Account, tenant.Project)
	require.NoError(t, err)

	queries := []string{
		"outcome=blocked", "outcome=monitored,alerted", "decision=deny", "mode=monitor",
		"event_type=tool_call", "severity=medium", "severity=critical", "min_score=50",
		"min_score=90.5", "category=pii", "policy=pol-block-injection",
		"detector=injection-classifier", "user=alice", "agent=research-agent",
		"application=chat-web", "outcome=blocked&severity=high&category=prompt_injection",
		"user=bob&min_score=10",
	}
	for _, q := range queries {
		t.Run(q, func(t *testing.T) {
			f := match(t, q)
			var want uint64
			for _, ev := range evs {
				if f.Matches(ev) {
					want++
				}
			}
			got, err := st.Count(ctx, sc, f)
			require.NoError(t, err)
			require.Equal(t, want, got)
			require.NotZero(t, got, "the query should select something")
		})
	}
}
