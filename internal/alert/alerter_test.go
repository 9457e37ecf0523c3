package alert_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/alert"
	"github.com/guardwatch/observatory/internal/events"
)

var blockedHigh = map[string]string{"outcome": "blocked", "severity": "high"}

func TestMatchingDecisionSendsOneSignedWebhook(t *testing.T) {
	h := newHarness(t)
	rcv := newReceiver(t)
	sc := scope(t, "acme", "proj_prod")
	sub, secret := h.subscribe(t, sc, alert.Spec{Match: blockedHigh, Channel: webhook(rcv)})
	h.start(t, "r1")

	h.publish(t,
		h.decision("acme", "proj_prod", func(ev *events.Event) {
			ev.Decision, ev.ActualDecision, ev.Outcome = "allow", "allow", "allowed"
		}),
		h.decision("acme", "proj_prod", func(ev *events.Event) { ev.HighestSeverity = "low" }),
		// The same decision in another account's project of the same id.
		h.decision("globex", "proj_prod"),
		h.decision("acme", "proj_staging"),
	)
	match := h.decision("acme", "proj_prod")
	h.publish(t, match)

	reqs := rcv.waitFor(t, 1)
	h.settle(t)
	rcv.quiet(t, 1)
	r := reqs[0]
	checkSignature(t, secret, r)
	require.Equal(t, "application/json", r.Header.Get("Content-Type"))
	a := alerts(t, reqs)[0]
	require.Equal(t, a.ID, r.Header.Get(alert.HeaderIdempotency))
	require.Equal(t, a.ID, r.Header.Get(alert.HeaderAlertID))
	require.Equal(t, alert.AlertType, a.Type)
	require.Equal(t, "acme", a.AccountID)
	require.Equal(t, "proj_prod", a.ProjectID)
	require.Equal(t, sub.ID, a.Subscription.ID)
	require.Equal(t, 1, a.Count)
	require.Equal(t, match.EventID, a.Trigger.EventID)
	require.Equal(t, []string{match.EventID}, a.EventIDs)
	require.NotContains(t, string(r.Body), secret)

	// A body changed in transit no longer verifies.
	tampered := append([]byte(nil), r.Body...)
	tampered[len(tampered)-2] ^= 1
	require.ErrorIs(t, alert.Verify(secret, r.Header.Get(alert.HeaderTimestamp),
		r.Header.Get(alert.HeaderSignature), tampered, time.Now(), time.Minute),
		alert.ErrBadSignature)

	ds, err := h.store.Deliveries(context.Background(), sc, sub.ID)
	require.NoError(t, err)
	require.Len(t, ds, 1)
	require.Equal(t, alert.StatusDelivered, ds[0].Status)
	require.Equal(t, 1, ds[0].Attempts)
	require.Equal(t, 200, ds[0].HTTPStatus)
	require.Equal(t, a.ID, ds[0].AlertID)
}

func TestThresholdCountsWithinTheWindowPerGroup(t *testing.T) {
	h := newHarness(t)
	rcv := newReceiver(t)
	sc := scope(t, "acme", "proj_prod")
	h.subscribe(t, sc, alert.Spec{Match: blockedHigh, Threshold: 3,
		Window: alert.Duration(1500 * time.Millisecond), GroupBy: alert.GroupUser,
		Channel: webhook(rcv)})
	h.start(t, "r1")
	as := func(user string) func(*events.Event) {
		return func(ev *events.Event) { ev.Identity.UserID = user }
	}

	// Two each for alice and bob: no group reaches three.
	h.publish(t, h.decision("acme", "proj_prod", as("alice")),
		h.decision("acme", "proj_prod", as("bob")),
		h.decision("acme", "proj_prod", as("alice")),
		h.decision("acme", "proj_prod", as("bob")))
	h.settle(t)
	rcv.quiet(t, 0)

	// A third for alice fires alice's group only.
	h.publish(t, h.decision("acme", "proj_prod", as("alice")))
	got := alerts(t, rcv.waitFor(t, 1))
	require.Equal(t, "alice", got[0].Group)
	require.Equal(t, 3, got[0].Count)
	require.Equal(t, alert.GroupUser, got[0].GroupBy)

	// Bob's two fall out of the window: two more are not enough.
	time.Sleep(1600 * time.Millisecond)
	h.publish(t, h.decision("acme", "proj_prod", as("bob")),
		h.decision("acme", "proj_prod", as("bob")))
	h.settle(t)
	rcv.quiet(t, 1)

	// A third inside the window is.
	h.publish(t, h.decision("acme", "proj_prod", as("bob")))
	got = alerts(t, rcv.waitFor(t, 2))
	require.Equal(t, "bob", got[1].Group)
	require.Equal(t, 3, got[1].Count)
	require.Less(t, got[1].LastAt.Sub(got[1].FirstAt), 1500*time.Millisecond)
}

func TestCooldownHoldsAndReportsSuppressed(t *testing.T) {
	h := newHarness(t)
	rcv := newReceiver(t)
	sc := scope(t, "acme", "proj_prod")
	h.subscribe(t, sc, alert.Spec{Match: blockedHigh, Cooldown: alert.Duration(1500 *
		time.Millisecond), Channel: webhook(rcv)})
	h.start(t, "r1")

	h.publish(t, h.decision("acme", "proj_prod"), h.decision("acme", "proj_prod"),
		h.decision("acme", "proj_prod"))
	rcv.waitFor(t, 1)
	h.settle(t)
	rcv.quiet(t, 1)

	time.Sleep(1600 * time.Millisecond)
	h.publish(t, h.decision("acme", "proj_prod"))
	got := alerts(t, rcv.waitFor(t, 2))
	require.Equal(t, int64(2), got[1].Suppressed)
	require.NotEqual(t, got[0].ID, got[1].ID)
}

func TestRestartDuringAWindowNeitherFloodsNorForgets(t *testing.T) {
	h := newHarness(t)
	every := newReceiver(t)
	fifth := newReceiver(t)
	sc := scope(t, "acme", "proj_prod")
	h.subscribe(t, sc, alert.Spec{Name: "every", Match: blockedHigh, Channel: webhook(every)})
	h.subscribe(t, sc, alert.Spec{Name: "five", Match: blockedHigh, Threshold: 5,
		Window: alert.Duration(time.Minute), Channel: webhook(fifth)})

	first := h.start(t, "before")
	for range 3 {
		h.publish(t, h.decision("acme", "proj_prod"))
	}
	every.waitFor(t, 3)
	h.settle(t)
	first.stop()

	// Two more arrive while no evaluator runs.
	h.publish(t, h.decision("acme", "proj_prod"), h.decision("acme", "proj_prod"))
	h.start(t, "after")

	got := alerts(t, fifth.waitFor(t, 1))
	require.Equal(t, 5, got[0].Count, "the window survived the restart")
	every.waitFor(t, 5)
	h.settle(t)
	every.quiet(t, 5)
	fifth.quiet(t, 1)
	ids := map[string]bool{}
	for _, a := range alerts(t, every.requests()) {
		require.False(t, ids[a.ID], "alert %s sent twice", a.ID)
		ids[a.ID] = true
	}
}

// TestTwoReplicasFireAThresholdOnce runs two replicas on one consumer:
// ten matching decisions, whichever replica gets each, fire one alert of
// count ten. Which replica gets a decision is the server's choice, so the
// round repeats, with a fresh subscription, until both replicas counted
// some of its decisions.
func TestTwoReplicasFireAThresholdOnce(t *testing.T) {
	h := newHarness(t)
	sc := scope(t, "acme", "proj_prod")
	// One decision per pull, so the server hands them to both replicas.
	a := h.startWith(t, alert.Config{Replica: "a", PullBatch: 1})
	b := h.startWith(t, alert.Config{Replica: "b", PullBatch: 1})

	split := false
	for round := 0; round < 8 && !split; round++ {
		user := "round-" + itoa(int64(round))
		rcv := newReceiver(t)
		h.subscribe(t, sc, alert.Spec{Threshold: 10, Window: alert.Duration(time.Minute),
			Cooldown: alert.Duration(time.Minute), Channel: webhook(rcv),
			Match: map[string]string{"outcome": "blocked", "user": user}})
		time.Sleep(100 * time.Millisecond) // the replicas' watches see it
		beforeA := a.counter(t, "guard_alert_matches_total")
		beforeB := b.counter(t, "guard_alert_matches_total")
		for range 10 {
			h.publish(t, h.decision("acme", "proj_prod", func(ev *events.Event) {
				ev.Identity.UserID = user
			}))
			// Unrelated traffic of the same project in between.
			h.publish(t, h.decision("acme", "proj_prod"))
			time.Sleep(10 * time.Millisecond)
		}
		got := alerts(t, rcv.waitFor(t, 1))
		h.settle(t)
		rcv.quiet(t, 1)
		require.Equal(t, 10, got[0].Count)
		da := a.counter(t, "guard_alert_matches_total") - beforeA
		db := b.counter(t, "guard_alert_matches_total") - beforeB
		require.Equal(t, 10.0, da+db)
		t.Logf("round %d: replica a counted %v, replica b %v", round, da, db)
		split = da > 0 && db > 0
	}
	require.True(t, split, "the server never split a round between the replicas")
	t.Logf("window conflicts: %v", a.counter(t, "guard_alert_window_conflicts_total")+
		b.counter(t, "guard_alert_window_conflicts_total"))
}

func TestRepeatedAlertIsSentOnce(t *testing.T) {
	h := newHarness(t)
	rcv := newReceiver(t)
	sc := scope(t, "acme", "proj_prod")
	h.subscribe(t, sc, alert.Spec{Match: blockedHigh, Channel: webhook(rcv)})
	h.start(t, "r1")
	h.publish(t, h.decision("acme", "proj_prod"))
	reqs := rcv.waitFor(t, 1)
	h.settle(t)

	// The same alert handed on again, past the outbox's duplicate
	// window (a new message id), as a late republish would be.
	m := nats.NewMsg("guard_alert_outbox.acme.proj_prod")
	m.Data = reqs[0].Body
	m.Header.Set("Nats-Msg-Id", "another-id")
	_, err := h.js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
	h.settle(t)
	rcv.quiet(t, 1)
}

func TestFailingReceiverRetriesToTheLimitAndIsRecorded(t *testing.T) {
	h := newHarness(t)
	rcv := newReceiver(t)
	rcv.status = func(n int) int {
		// The first alert succeeds on its third attempt; the second
		// fails every attempt; after that the receiver is healthy.
		switch {
		case n <= 2:
			return 503
		case n == 3:
			return 200
		case n <= 6:
			return 500
		default:
			return 200
		}
	}
	sc := scope(t, "acme", "proj_prod")
	sub, _ := h.subscribe(t, sc, alert.Spec{Match: blockedHigh, Channel: webhook(rcv)})
	h.start(t, "r1")
	ctx := context.Background()

	h.publish(t, h.decision("acme", "proj_prod"))
	rcv.waitFor(t, 3)
	h.settle(t)
	h.publish(t, h.decision("acme", "proj_prod"))
	rcv.waitFor(t, 6)
	h.settle(t)
	rcv.quiet(t, 6)
	h.publish(t, h.decision("acme", "proj_prod"))
	reqs := rcv.waitFor(t, 7)
	h.settle(t)

	as := alerts(t, reqs)
	for i := 1; i < 3; i++ {
		require.Equal(t, as[0].ID, as[i].ID, "retries carry the same idempotency key")
		require.Equal(t, itoa(int64(i+1)), reqs[i].Header.Get(alert.HeaderAttempt))
	}
	ds, err := h.store.Deliveries(ctx, sc, sub.ID)
	require.NoError(t, err)
	require.Len(t, ds, 3)
	newest, failed, first := ds[0], ds[1], ds[2]
	require.Equal(t, alert.StatusDelivered, first.Status)
	require.Equal(t, 3, first.Attempts)
	require.Equal(t, alert.StatusFailed, failed.Status)
	require.Equal(t, 3, failed.Attempts, "retries stop at the limit")
	require.Equal(t, 500, failed.HTTPStatus)
	require.Equal(t, "HTTP 500", failed.Error)
	require.Equal(t, alert.StatusDelivered, newest.Status)
	require.Equal(t, 1, newest.Attempts)
}

func TestSlackAndNATSChannels(t *testing.T) {
	h := newHarness(t)
	slack := newReceiver(t)
	sc := scope(t, "acme", "proj_prod")
	h.subscribe(t, sc, alert.Spec{Name: "ops <!channel>", Match: blockedHigh,
		Channel: alert.Channel{Type: alert.ChannelSlack, URL: slack.srv.URL}})
	natsSub, _ := h.subscribe(t, sc, alert.Spec{Match: blockedHigh,
		Channel: alert.Channel{Type: alert.ChannelNATS}})
	tail, err := h.nc.SubscribeSync("guard.v1.acme.proj_prod.alert")
	require.NoError(t, err)
	h.start(t, "r1")

	h.publish(t, h.decision("acme", "proj_prod"))
	reqs := slack.waitFor(t, 1)
	var body map[string]string
	require.NoError(t, json.Unmarshal(reqs[0].Body, &body))
	require.Contains(t, body["text"], "ops &lt;!channel&gt;")
	require.Contains(t, body["text"], "acme/proj_prod")
	require.Empty(t, reqs[0].Header.Get(alert.HeaderSignature))

	m, err := tail.NextMsg(10 * time.Second)
	require.NoError(t, err)
	var a alert.Alert
	require.NoError(t, json.Unmarshal(m.Data, &a))
	require.Equal(t, natsSub.ID, a.Subscription.ID)
	require.Equal(t, a.ID, m.Header.Get(alert.HeaderNATSAlertID))
}

func TestEditedSubscriptionStartsAFreshWindow(t *testing.T) {
	h := newHarness(t)
	rcv := newReceiver(t)
	sc := scope(t, "acme", "proj_prod")
	spec := alert.Spec{Name: "three", Match: blockedHigh, Threshold: 3,
		Window: alert.Duration(time.Minute), Channel: webhook(rcv)}
	sub, _ := h.subscribe(t, sc, spec)
	h.start(t, "r1")
	h.publish(t, h.decision("acme", "proj_prod"), h.decision("acme", "proj_prod"))
	h.settle(t)

	spec.Name = "three, renamed"
	_, err := h.store.Update(context.Background(), sc, sub.ID, spec)
	require.NoError(t, err)
	time.Sleep(200 * time.Millisecond) // the watch carries the edit
	h.publish(t, h.decision("acme", "proj_prod"))
	h.settle(t)
	rcv.quiet(t, 0)
	h.publish(t, h.decision("acme", "proj_prod"), h.decision("acme", "proj_prod"))
	got := alerts(t, rcv.waitFor(t, 1))
	require.Equal(t, "three, renamed", got[0].Subscription.Name)
}
