package main

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/testenv"
)

func TestListShowReplay(t *testing.T) {
	srv := testenv.NATS(t)
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := t.Context()
	_, err = bus.EnsureStream(ctx, js, bus.StreamConfig{})
	require.NoError(t, err)

	// Two rejects of acme, one with a hostile detail and payload.
	subj := "guard.v1.acme.proj_prod.decision"
	var seqs []uint64
	for _, c := range []struct {
		payload, detail string
		reason          events.Reason
	}{
		{`{"occurred_at":"2099-01-01T00:00:00Z"}`, "occurred_at is more than 5m0s in the future",
			events.ReasonInvalidTime},
		{"{\"mode\":\"\x1b[2Jyolo\"}", "mode \"\x1b[2Jyolo\" is not one of [enforce]",
			events.ReasonInvalidEnum},
	} {
		orig, err := js.Publish(ctx, subj, []byte(c.payload))
		require.NoError(t, err)
		ack, err := js.PublishMsg(ctx, bus.DeadLetter(subj, orig.Sequence, []byte(c.payload),
			c.reason, c.detail))
		require.NoError(t, err)
		seqs = append(seqs, ack.Sequence)
	}

	cli := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(ctx, append([]string{"--nats-url", srv.URL()}, args...), &out, &errOut)
		return out.String() + errOut.String(), err
	}

	out, err := cli("list", "--account", "acme", "--project", "proj_prod")
	require.NoError(t, err)
	t.Logf("list:\n%s", out)
	require.Contains(t, out, strconv.FormatUint(seqs[0], 10))
	require.Contains(t, out, "invalid_time")
	require.Contains(t, out, "occurred_at is more than 5m0s in the future")
	require.Contains(t, out, subj)
	require.NotContains(t, out, "\x1b", "terminal escapes are printed escaped")
	require.Contains(t, out, "2 dead letters: invalid_enum=1 invalid_time=1")

	out, err = cli("list", "--account", "acme", "--project", "proj_prod", "--reason",
		"invalid_enum")
	require.NoError(t, err)
	require.Contains(t, out, "1 dead letters: invalid_enum=1")

	out, err = cli("list", "--account", "globex", "--project", "proj_prod")
	require.NoError(t, err)
	require.Contains(t, out, "0 dead letters")

	out, err = cli("show", strconv.FormatUint(seqs[1], 10))
	require.NoError(t, err)
	t.Logf("show:\n%s", out)
	require.Contains(t, out, bus.HeaderReason+": invalid_enum")
	require.Contains(t, out, bus.HeaderOriginalSubject+": "+subj)
	require.Contains(t, out, `\x1b[2Jyolo`)
	require.NotContains(t, out, "\x1b")

	out, err = cli("show", strconv.FormatUint(seqs[1], 10), "--raw")
	require.NoError(t, err)
	require.Equal(t, "{\"mode\":\"\x1b[2Jyolo\"}", out)

	_, err = cli("show", strconv.FormatUint(seqs[1], 10), "--account", "globex",
		"--project", "proj_prod")
	require.ErrorContains(t, err, "not a dead letter of this tenant")

	out, err = cli("replay", "--account", "acme", "--project", "proj_prod", "--dry-run",
		"--all")
	require.NoError(t, err)
	require.Contains(t, out, "2 dead letters selected")

	out, err = cli("replay", "--account", "acme", "--project", "proj_prod", "--seq",
		strconv.FormatUint(seqs[0], 10))
	require.NoError(t, err)
	require.Contains(t, out, "1 replayed, 0 skipped")
	out, err = cli("replay", "--account", "acme", "--project", "proj_prod", "--reason",
		"invalid_time")
	require.NoError(t, err)
	require.Contains(t, out, "0 replayed, 1 skipped")
	require.Contains(t, out, "already replayed")

	out, err = cli("list", "--account", "acme", "--project", "proj_prod")
	require.NoError(t, err)
	require.Regexp(t, `invalid_time .* `+strconv.FormatUint(seqs[1]+1, 10), out,
		"the list shows what each letter was replayed as")

	_, err = cli("replay", "--account", "acme", "--project", "proj_prod", "--seq", "99999")
	require.ErrorContains(t, err, "not dead letters of acme/proj_prod: [99999]")

	_, err = cli("replay", "--account", "acme", "--project", "proj_prod")
	require.ErrorIs(t, err, errUsage)
	_, err = cli("list", "--account", "acme.*", "--project", "p")
	require.ErrorIs(t, err, errUsage)
	require.True(t, strings.Contains(err.Error(), "--account"), err.Error())
}
