package alert_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/alert"
	"github.com/guardwatch/observatory/internal/store"
)

func TestStoreLifecycleAndSecretOnce(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	sc := scope(t, "acme", "proj_prod")
	spec := alert.Spec{Name: "  Injections  ", Match: map[string]string{
		"outcome": "alerted, blocked", "severity": "high", "user": ""},
		Threshold: 5, Window: alert.Duration(time.Minute), GroupBy: alert.GroupUser,
		Cooldown: alert.Duration(5 * time.Minute),
		Channel:  alert.Channel{Type: alert.ChannelWebhook, URL: "http://127.0.0.1:1/h"}}
	sub, secret, err := h.store.Create(ctx, sc, spec, "alice")
	require.NoError(t, err)
	require.Regexp(t, `^sub_[0-9a-f]{20}$`, sub.ID)
	require.Regexp(t, `^whsec_[A-Za-z0-9_-]{43}$`, secret)
	require.Equal(t, "Injections", sub.Name)
	require.Equal(t, map[string]string{"outcome": "alerted,blocked", "severity": "high"},
		sub.Match, "the match is kept in its canonical form")
	require.Equal(t, int64(1), sub.Version)

	got, err := h.store.Get(ctx, sc, sub.ID)
	require.NoError(t, err)
	b, err := json.Marshal(got)
	require.NoError(t, err)
	require.NotContains(t, string(b), secret, "the secret is never marshalled")
	require.NotContains(t, string(b), "secret")

	spec.Threshold = 7
	upd, err := h.store.Update(ctx, sc, sub.ID, spec)
	require.NoError(t, err)
	require.Equal(t, 7, upd.Threshold)
	require.Equal(t, int64(2), upd.Version)
	require.Equal(t, sub.CreatedAt, upd.CreatedAt)

	list, err := h.store.List(ctx, sc)
	require.NoError(t, err)
	require.Len(t, list, 1)

	require.NoError(t, h.store.Delete(ctx, sc, sub.ID))
	_, err = h.store.Get(ctx, sc, sub.ID)
	require.ErrorIs(t, err, alert.ErrNotFound)
	require.ErrorIs(t, h.store.Delete(ctx, sc, sub.ID), alert.ErrNotFound)
}

func TestStoreKeepsTenantsApart(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	acme := scope(t, "acme", "proj_prod")
	sub, _ := h.subscribe(t, acme, alert.Spec{Channel: alert.Channel{Type: alert.ChannelNATS}})

	for _, other := range []store.Scope{scope(t, "globex", "proj_prod"),
		scope(t, "acme", "proj_staging")} {
		_, err := h.store.Get(ctx, other, sub.ID)
		require.ErrorIs(t, err, alert.ErrNotFound)
		_, err = h.store.Update(ctx, other, sub.ID, alert.Spec{Name: "x",
			Channel: alert.Channel{Type: alert.ChannelNATS}})
		require.ErrorIs(t, err, alert.ErrNotFound)
		require.ErrorIs(t, h.store.Delete(ctx, other, sub.ID), alert.ErrNotFound)
		_, err = h.store.Deliveries(ctx, other, sub.ID)
		require.ErrorIs(t, err, alert.ErrNotFound)
		list, err := h.store.List(ctx, other)
		require.NoError(t, err)
		require.Empty(t, list)
	}
	// Ids that could add a level or a wildcard to a key name nothing.
	for _, id := range []string{"*", ">", sub.ID + ".x", "a.b", "", "..", "sub_ x"} {
		_, err := h.store.Get(ctx, acme, id)
		require.ErrorIs(t, err, alert.ErrNotFound, id)
	}
	_, err := h.store.List(ctx, store.Scope{})
	require.ErrorIs(t, err, store.ErrNoScope)
}

func TestStoreRefusesBadSpecs(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	sc := scope(t, "acme", "proj_prod")
	nats := alert.Channel{Type: alert.ChannelNATS}
	bad := []struct {
		field string
		spec  alert.Spec
	}{
		{"name", alert.Spec{Channel: nats}},
		{"match", alert.Spec{Name: "x", Channel: nats,
			Match: map[string]string{"severity": "urgent"}}},
		{"match", alert.Spec{Name: "x", Channel: nats, Match: map[string]string{"q": "a"}}},
		{"threshold", alert.Spec{Name: "x", Channel: nats, Threshold: alert.MaxThreshold + 1}},
		{"window", alert.Spec{Name: "x", Channel: nats, Window: alert.Duration(48 * time.Hour)}},
		{"cooldown", alert.Spec{Name: "x", Channel: nats, Cooldown: -1}},
		{"group_by", alert.Spec{Name: "x", Channel: nats, GroupBy: "tenant"}},
		{"channel.type", alert.Spec{Name: "x", Channel: alert.Channel{Type: "email"}}},
		{"channel.url", alert.Spec{Name: "x", Channel: alert.Channel{Type: alert.ChannelSlack}}},
	}
	for _, c := range bad {
		_, _, err := h.store.Create(ctx, sc, c.spec, "t")
		var se *alert.SpecError
		require.ErrorAs(t, err, &se, c.field)
		require.Equal(t, c.field, se.Field)
	}

	// The guard refuses a target without an allow-list entry.
	_, _, err := h.store.Create(ctx, sc, alert.Spec{Name: "meta", Channel: alert.Channel{
		Type: alert.ChannelWebhook, URL: "http://169.254.169.254/"}}, "t")
	var se *alert.SpecError
	require.ErrorAs(t, err, &se)
}

func TestStoreBoundsSubscriptionsPerProject(t *testing.T) {
	h := newHarness(t)
	sc := scope(t, "acme", "proj_prod")
	for range alert.MaxPerProject {
		h.subscribe(t, sc, alert.Spec{Channel: alert.Channel{Type: alert.ChannelNATS}})
	}
	_, _, err := h.store.Create(context.Background(), sc, alert.Spec{Name: "one more",
		Channel: alert.Channel{Type: alert.ChannelNATS}}, "t")
	var se *alert.SpecError
	require.ErrorAs(t, err, &se)
	// Another project is not affected.
	h.subscribe(t, scope(t, "acme", "proj_staging"),
		alert.Spec{Channel: alert.Channel{Type: alert.ChannelNATS}})
}
