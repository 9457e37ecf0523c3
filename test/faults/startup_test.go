package faults_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/deadletter"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/testenv"
)

// runIngest runs the ingest binary to its end and returns its exit code
// and standard error.
func runIngest(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binaries(t), "ingest"), args...)
	// Only this case's settings: none of the caller's GUARD_ variables.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GUARD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run ingest: %v", err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// TestBadSettingsStopStartup runs the ingest binary with wrong flags and
// environment variables: each stops start-up with exit status 2 and a
// message naming the setting and what is wrong.
func TestBadSettingsStopStartup(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  []string
		want []string
	}{
		{"batch size out of range", []string{"--batch-size", "0"}, nil,
			[]string{"--batch-size (GUARD_BATCH_SIZE)", "between 1 and 1000000"}},
		{"duration from the environment", nil, []string{"GUARD_BATCH_WAIT=soon"},
			[]string{"--batch-wait", `GUARD_BATCH_WAIT="soon"`, "invalid duration"}},
		{"number from the environment", nil, []string{"GUARD_MAX_LAG=-5"},
			[]string{"--max-lag", `GUARD_MAX_LAG="-5"`}},
		{"nats url scheme", []string{"--nats-url", "http://127.0.0.1:4222"}, nil,
			[]string{"--nats-url (GUARD_NATS_URL)", "scheme must be nats, tls, ws or wss"}},
		{"clickhouse address without port", nil, []string{"GUARD_CLICKHOUSE_ADDR=localhost"},
			[]string{"--clickhouse-addr (GUARD_CLICKHOUSE_ADDR)", "missing port"}},
		{"database name", []string{"--clickhouse-db", "obs;drop"}, nil,
			[]string{"--clickhouse-db (GUARD_CLICKHOUSE_DB)", `"obs;drop"`}},
		{"stream name with a dot", nil, []string{"GUARD_STREAM=GUARD.v2"},
			[]string{"--stream (GUARD_STREAM)", "letters, digits"}},
		{"retry delays reversed", []string{"--retry-delay", "5s", "--max-retry-delay", "1s"},
			nil, []string{"--max-retry-delay (GUARD_MAX_RETRY_DELAY)", "at least --retry-delay"}},
		{"time window past ClickHouse's range", nil, []string{"GUARD_MAX_PAST=500000h"},
			[]string{"--max-past (GUARD_MAX_PAST)", "at most 87600h0m0s"}},
		{"ack wait too short", []string{"--ack-wait", "10ms"}, nil,
			[]string{"--ack-wait (GUARD_ACK_WAIT)", "at least 1s"}},
		{"missing credentials file", []string{"--nats-creds", "/nonexistent/user.creds"}, nil,
			[]string{"--nats-creds", "/nonexistent/user.creds"}},
		{"unknown flag", []string{"--batchsize", "10"}, nil,
			[]string{"unknown flag --batchsize"}},
		{"log level", nil, []string{"GUARD_LOG_LEVEL=loud"},
			[]string{"--log-level", "loud"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, stderr := runIngest(t, c.env, c.args...)
			require.Equal(t, 2, code, stderr)
			require.True(t, strings.HasPrefix(stderr, "ingest: config: "), stderr)
			for _, w := range c.want {
				require.Contains(t, stderr, w)
			}
		})
	}

	t.Run("http address taken", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		code, stderr := runIngest(t, nil, "--http-addr", l.Addr().String())
		require.Equal(t, 2, code, stderr)
		require.Contains(t, stderr, "--http-addr (GUARD_INGEST_HTTP)")
		require.Contains(t, stderr, "address already in use")
	})

	t.Run("clickhouse refuses the user", func(t *testing.T) {
		ch := testenv.ClickHouse(t)
		srv := testenv.NATS(t)
		code, stderr := runIngest(t, []string{"GUARD_CLICKHOUSE_USER=nobody"},
			"--nats-url", srv.URL(), "--clickhouse-addr", ch,
			"--http-addr", "127.0.0.1:"+strconv.Itoa(freePort(t)))
		require.Equal(t, 2, code, stderr)
		require.Contains(t, stderr, "--clickhouse-user (GUARD_CLICKHOUSE_USER)")
		require.Contains(t, stderr, `refused user "nobody"`)
	})
}

// TestDeadLettersReplayedAfterFix rejects the events of a guard whose
// clock runs ahead, raises the limit (the fix), replays the dead letters
// with the deadletter command and finds every event once.
func TestDeadLettersReplayedAfterFix(t *testing.T) {
	e := newEnv(t, "")
	ctx := t.Context()
	in := e.startIngest("ingest-strict", append(e.ingestArgs(""), "--max-future", "1m")...)

	ahead := func() time.Time { return time.Now().Add(10 * time.Minute) }
	g := gen.New(77, []gen.Tenant{{Account: "acme", Project: "proj_prod"}}, ahead)
	pub := bus.NewPublisher(e.js, 10*time.Second)
	tr := newTraffic()
	tr.valid["acme/proj_prod"] = map[string]bool{}
	for range 40 {
		ev := g.Next()
		tr.valid["acme/proj_prod"][ev.EventID] = true
		require.NoError(t, pub.Publish(ctx, ev))
	}
	tr.total = 40

	insp := deadletter.NewInspector(e.js, "")
	q := deadletter.Query{Account: "acme", Project: "proj_prod"}
	require.Eventually(t, func() bool {
		l, err := insp.List(ctx, q)
		return err == nil && len(l) == 40
	}, 30*time.Second, 100*time.Millisecond, "40 dead letters")
	visible, _, err := e.counts(ctx)
	require.NoError(t, err)
	require.Zero(t, visible["acme/proj_prod"])

	in.kill()
	e.startIngest("ingest-fixed", append(e.ingestArgs(""), "--max-future", "1h")...)
	replay := func() string {
		out, err := exec.CommandContext(ctx, filepath.Join(e.bin, "deadletter"),
			"--nats-url", e.natsURL, "replay", "--account", "acme", "--project", "proj_prod",
			"--reason", "invalid_time").CombinedOutput()
		require.NoError(t, err, string(out))
		return string(out)
	}
	require.Contains(t, replay(), "40 replayed, 0 skipped")

	r := e.settle(tr, settleTimeout)
	require.Zero(t, r.Missing)
	require.Zero(t, r.VisibleDups)
	require.EqualValues(t, 40, r.Visible)

	// A second replay finds every letter replayed and sends nothing.
	require.Contains(t, replay(), "0 replayed, 40 skipped")
	letters, err := insp.List(ctx, q)
	require.NoError(t, err)
	require.Len(t, letters, 40, "no new dead letters after the fix")
	for _, l := range letters {
		require.NotZero(t, l.ReplayedAs)
	}
}
