package deadletter_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/deadletter"
	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/testenv"
)

type fixture struct {
	js  jetstream.JetStream
	st  jetstream.Stream
	pub *bus.Publisher
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := testenv.NATS(t)
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	st, err := bus.EnsureStream(t.Context(), js, bus.StreamConfig{})
	require.NoError(t, err)
	return &fixture{js: js, st: st, pub: bus.NewPublisher(js, 5*time.Second)}
}

// reject stores payload on subject and dead-letters it as the ingester
// does, returning the dead letter's sequence.
func (f *fixture) reject(t *testing.T, subject, payload string, r events.Reason) uint64 {
	t.Helper()
	ctx := t.Context()
	orig, err := f.js.Publish(ctx, subject, []byte(payload))
	require.NoError(t, err)
	l := bus.DeadLetter(subject, orig.Sequence, []byte(payload), r, "detail of "+string(r))
	ack, err := f.js.PublishMsg(ctx, l)
	require.NoError(t, err)
	return ack.Sequence
}

func TestListIsScopedAndFiltered(t *testing.T) {
	f := newFixture(t)
	acme := "guard.v1.acme.proj_prod.decision"
	a1 := f.reject(t, acme, `{"x":`, events.ReasonInvalidJSON)
	a2 := f.reject(t, acme, `{"mode":"yolo"}`, events.ReasonInvalidEnum)
	f.reject(t, "guard.v1.globex.proj_prod.decision", `{"x":`, events.ReasonInvalidJSON)
	f.reject(t, "guard.v1.a%b.p.decision", `{}`, events.ReasonBadSubject)

	in := deadletter.NewInspector(f.js, "")
	ctx := t.Context()
	all, err := in.List(ctx, deadletter.Query{Account: "acme", Project: "proj_prod"})
	require.NoError(t, err)
	require.Len(t, all, 2)
	require.Equal(t, a1, all[0].Seq)
	require.Equal(t, events.ReasonInvalidJSON, all[0].Reason)
	require.Equal(t, acme, all[0].OriginalSubject)
	require.Equal(t, `{"x":`, string(all[0].Data))
	require.NotZero(t, all[0].OriginalSeq)

	enum, err := in.List(ctx, deadletter.Query{Account: "acme", Project: "proj_prod",
		Reason: events.ReasonInvalidEnum})
	require.NoError(t, err)
	require.Len(t, enum, 1)
	require.Equal(t, a2, enum[0].Seq)

	later, err := in.List(ctx, deadletter.Query{Account: "acme", Project: "proj_prod",
		Since: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	require.Empty(t, later)

	unscoped, err := in.ListUnscoped(ctx, time.Time{})
	require.NoError(t, err)
	require.Len(t, unscoped, 1)
	require.Equal(t, events.ReasonBadSubject, unscoped[0].Reason)

	// A sequence of another tenant, or of a decision, is not handed out.
	_, err = in.Get(ctx, a1, "globex", "proj_prod")
	require.ErrorIs(t, err, deadletter.ErrNotDeadLetter)
	_, err = in.Get(ctx, a1-1, "acme", "proj_prod") // the rejected decision itself
	require.ErrorIs(t, err, deadletter.ErrNotDeadLetter)
	_, err = in.Get(ctx, 10_000, "", "")
	require.ErrorIs(t, err, deadletter.ErrNotDeadLetter)
	got, err := in.Get(ctx, a1, "acme", "proj_prod")
	require.NoError(t, err)
	require.Equal(t, "detail of invalid_json", got.Detail)
}

func TestReplayOnceToTheOwnDecisionSubjectOnly(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	good := f.reject(t, "guard.v1.acme.proj_prod.decision", `{"fixed":"later"}`,
		events.ReasonInvalidTime)
	// A dead letter whose original subject names another tenant: it can
	// only be forged, as the ingester files letters by subject, and must
	// never move an event across tenants.
	forged := bus.DeadLetter("guard.v1.globex.proj_prod.decision", 1, []byte(`{"evil":1}`),
		events.ReasonInvalidTime, "x")
	forged.Subject = "guard.v1.acme.proj_prod.deadletter"
	fa, err := f.js.PublishMsg(ctx, forged)
	require.NoError(t, err)

	in := deadletter.NewInspector(f.js, "")
	q := deadletter.Query{Account: "acme", Project: "proj_prod",
		Reason: events.ReasonInvalidTime}
	out, err := in.Replay(ctx, q, f.pub)
	require.NoError(t, err)
	require.Len(t, out, 2)
	require.Equal(t, good, out[0].Letter.Seq)
	require.Empty(t, out[0].Skipped)
	require.NotZero(t, out[0].NewSeq)
	require.Equal(t, fa.Sequence, out[1].Letter.Seq)
	require.Contains(t, out[1].Skipped, "is not guard.v1.acme.proj_prod.decision")

	// The replayed decision carries the original bytes and its origin.
	raw, err := f.st.GetMsg(ctx, out[0].NewSeq)
	require.NoError(t, err)
	require.Equal(t, "guard.v1.acme.proj_prod.decision", raw.Subject)
	require.Equal(t, `{"fixed":"later"}`, string(raw.Data))
	require.Equal(t, strconv.FormatUint(good, 10), raw.Header.Get(bus.HeaderReplayOf))

	// A second replay finds the record and publishes nothing.
	before, err := f.st.Info(ctx)
	require.NoError(t, err)
	again, err := in.Replay(ctx, q, f.pub)
	require.NoError(t, err)
	require.Contains(t, again[0].Skipped, "already replayed")
	after, err := f.st.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, before.State.LastSeq, after.State.LastSeq)

	list, err := in.List(ctx, deadletter.Query{Account: "acme", Project: "proj_prod"})
	require.NoError(t, err)
	require.Equal(t, out[0].NewSeq, list[0].ReplayedAs)

	// globex's stream holds nothing from the forged letter.
	c, err := f.st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"guard.v1.globex.>"}})
	require.NoError(t, err)
	info, err := c.Info(context.Background())
	require.NoError(t, err)
	require.Zero(t, info.NumPending)
}
