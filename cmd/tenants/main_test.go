package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestProvisionRetentionOffboard(t *testing.T) {
	ctx := t.Context()
	addr := testenv.ClickHouse(t)
	dbName := testenv.Database(t, addr)
	srv := testenv.NATS(t)
	root := t.TempDir()
	require.NoError(t, os.CopyFS(root, os.DirFS("../../policies")))
	creds := t.TempDir()

	cli := func(stdin string, args ...string) (string, error) {
		var out, errOut bytes.Buffer
		base := []string{"--tiers", "../../deploy/tiers.yaml", "--policies", root,
			"--creds-dir", creds, "--log-level", "warn"}
		err := run(ctx, append(base, args...), strings.NewReader(stdin), &out, &errOut)
		return out.String() + errOut.String(), err
	}
	ch := []string{"--clickhouse-addr", addr, "--clickhouse-db", dbName}

	// Provision: a policy folder, a producer key and its NATS user.
	out, err := cli("", "provision", "--account", "umbrella", "--project", "proj_prod",
		"--tier", "pro")
	require.NoError(t, err)
	require.Contains(t, out, "provisioned umbrella/proj_prod on tier pro")
	require.Contains(t, out, `publish: { allow: ["guard.v1.umbrella.proj_prod.decision"] }`)
	require.FileExists(t, filepath.Join(root, "projects/umbrella/proj_prod/project.json"))
	require.FileExists(t, filepath.Join(creds, "umbrella.nk"))

	out, err = cli("", "provision", "--account", "umbrella", "--project", "proj_prod",
		"--tier", "enterprise")
	require.NoError(t, err)
	require.Contains(t, out, "moved from tier pro to enterprise")

	_, err = cli("", "provision", "--account", "umbrella", "--project", "a.b", "--tier", "pro")
	require.ErrorIs(t, err, errUsage)
	_, err = cli("", "provision", "--account", "umbrella", "--project", "p", "--tier", "gold")
	require.ErrorContains(t, err, "unknown tier")

	out, err = cli("", "nats-user", "--account", "umbrella")
	require.NoError(t, err)
	require.Contains(t, out, "nkey: U")
	require.Contains(t, out, `"_INBOX_umbrella.>"`)

	// Data: old and new rows of umbrella (enterprise, 400 days) and of
	// acme/proj_staging (free, 7 days); stream messages of both.
	db, err := store.Open(ctx, store.Config{Addr: addr, Database: dbName})
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	g := gen.New(5, nil, nil)
	var evs []*events.Event
	for _, tn := range []gen.Tenant{{Account: "umbrella", Project: "proj_prod"},
		{Account: "acme", Project: "proj_staging"}} {
		for _, age := range []int{0, 30, 500} {
			ev := g.NextFor(tn)
			ev.OccurredAt = time.Now().AddDate(0, 0, -age)
			evs = append(evs, ev)
		}
	}
	require.NoError(t, db.Insert(ctx, evs))
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = bus.EnsureStream(ctx, js, bus.StreamConfig{})
	require.NoError(t, err)
	for _, s := range []string{"guard.v1.umbrella.proj_prod.decision",
		"guard.v1.acme.proj_staging.decision"} {
		_, err := js.Publish(ctx, s, []byte(`{}`))
		require.NoError(t, err)
	}

	out, err = cli("", append([]string{"retention", "--dry-run"}, ch...)...)
	require.NoError(t, err)
	require.Contains(t, out, "would remove 3 rows")
	out, err = cli("", append([]string{"retention"}, ch...)...)
	require.NoError(t, err)
	require.Contains(t, out, "removed 3 rows")
	require.Contains(t, out, "umbrella/proj_prod (enterprise, 400d")
	require.Contains(t, out, "acme/proj_staging (free, 7d")

	out, err = cli("", append([]string{"usage", "--account", "umbrella", "--project",
		"proj_prod"}, ch...)...)
	require.NoError(t, err)
	require.Contains(t, out, "0 events in 24h0m0s, 0 over quota")

	// Offboarding asks for the account id.
	off := append([]string{"offboard", "--account", "umbrella", "--nats-url", srv.URL(),
		"--settle", "10ms", "--actor", "tester"}, ch...)
	out, err = cli("acme\n", off...)
	require.ErrorContains(t, err, "not confirmed")
	require.DirExists(t, filepath.Join(root, "projects/umbrella"))

	out, err = cli("umbrella\n", off...)
	require.NoError(t, err, out)
	require.Contains(t, out, "clickhouse: 2 rows")
	require.Contains(t, out, "stream messages: 1")
	require.Contains(t, out, "producer key removed: true")
	require.NoDirExists(t, filepath.Join(root, "projects/umbrella"))
	require.NoFileExists(t, filepath.Join(creds, "umbrella.nk"))

	sc, err := store.NewScope("acme", "proj_staging")
	require.NoError(t, err)
	n, err := db.CountRange(ctx, sc, time.Time{}, time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, uint64(1), n, "acme keeps its row within retention")
	log, err := db.Deletions(ctx, "umbrella")
	require.NoError(t, err)
	require.Len(t, log, 1)
	require.Equal(t, "tester", log[0].Actor)
}
