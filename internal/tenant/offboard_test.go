package tenant_test

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/quota"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/tenant"
	"github.com/guardwatch/observatory/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The shipped demo tenants: two accounts own a project named proj_prod.
var demo = []tenant.Key{
	{Account: "acme", Project: "proj_prod"},
	{Account: "acme", Project: "proj_staging"},
	{Account: "globex", Project: "proj_prod"},
	{Account: "globex", Project: "support-bot"},
	{Account: "initech", Project: "proj_prod"},
}

const alertBucket = "GUARD_ALERT_SUBS"

// world is every place a tenant lives: ClickHouse tables, the stream, lane
// consumers, an alert bucket, policy folders and producer keys.
type world struct {
	db     *store.Store
	js     jetstream.JetStream
	st     jetstream.Stream
	kv     jetstream.KeyValue
	outbox jetstream.Stream
	root   string
	creds  string
	ob     *tenant.Offboarder
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := t.Context()
	log := slog.New(slog.DiscardHandler)
	addr := testenv.ClickHouse(t)
	db, err := store.Open(ctx, store.Config{Addr: addr, Database: testenv.Database(t, addr),
		Logger: log})
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })

	nc, err := nats.Connect(testenv.NATS(t).URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	st, err := bus.EnsureStream(ctx, js, bus.StreamConfig{})
	require.NoError(t, err)
	rest, err := bus.EnsureConsumer(ctx, st, bus.ConsumerConfig{Durable: "ingest"})
	require.NoError(t, err)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: alertBucket})
	require.NoError(t, err)
	outbox, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OUTBOX",
		Subjects: []string{"guard_alert_outbox.>"}})
	require.NoError(t, err)

	w := &world{db: db, js: js, st: st, kv: kv, outbox: outbox, root: copyPolicies(t),
		creds: t.TempDir()}

	// A table of another kind: tenant rows, but not partitioned by tenant,
	// so its rows go by mutation.
	require.NoError(t, db.Conn().Exec(ctx, "CREATE TABLE "+db.Database()+
		".notes (account_id String, project_id String, note String) "+
		"ENGINE = MergeTree ORDER BY (account_id, project_id)"))

	g := gen.New(3, nil, nil)
	for i, k := range demo {
		var evs []*events.Event
		for age := range 3 {
			for range 4 + i {
				ev := g.NextFor(gen.Tenant{Account: k.Account, Project: k.Project})
				ev.OccurredAt = time.Now().AddDate(0, -age, 0)
				evs = append(evs, ev)
			}
		}
		require.NoError(t, db.Insert(ctx, evs))
		require.NoError(t, db.RecordQuotaUsage(ctx, []store.QuotaCount{{Account: k.Account,
			Project: k.Project, Minute: time.Now(), Events: 10, OverQuota: 2}}))
		b, err := db.Conn().PrepareBatch(ctx, "INSERT INTO "+db.Database()+
			".notes (account_id, project_id, note)")
		require.NoError(t, err)
		require.NoError(t, b.Append(k.Account, k.Project, "n"))
		require.NoError(t, b.Send())

		for _, kind := range []string{events.KindDecision, events.KindDeadLetter} {
			subject, err := events.Subject(k.Account, k.Project, kind)
			require.NoError(t, err)
			for range 2 + i {
				_, err := js.Publish(ctx, subject, []byte(`{}`))
				require.NoError(t, err)
			}
		}
		subject, _ := events.Subject(k.Account, k.Project, events.KindDecision)
		_, err = st.CreateConsumer(ctx, jetstream.ConsumerConfig{
			Durable: quota.LaneName("ingest", k), FilterSubject: subject,
			AckPolicy: jetstream.AckExplicitPolicy})
		require.NoError(t, err)
		_, err = kv.Put(ctx, k.Account+"."+k.Project+".sub1", []byte(`{}`))
		require.NoError(t, err)
		_, err = js.Publish(ctx, "guard_alert_outbox."+k.Account+"."+k.Project, []byte(`{}`))
		require.NoError(t, err)
	}
	for _, a := range []string{"acme", "globex", "initech"} {
		_, _, err := tenant.ProducerKey(w.creds, a)
		require.NoError(t, err)
	}
	require.NotNil(t, rest)

	w.ob = &tenant.Offboarder{Store: db, JS: js, PolicyRoot: w.root, CredsDir: w.creds,
		AlertBuckets:    []string{alertBucket, "GUARD_ALERT_STATE"},
		SubjectPrefixes: []string{"guard_alert_outbox."}, Settle: 100 * time.Millisecond, Log: log}
	return w
}

// footprint is what the world holds of one project.
type footprint struct {
	Decisions, Quota, Notes uint64
	Messages, Outbox        uint64
	AlertHistory            uint64 // bucket messages, purge markers included
	Lane, Alert, Folder     bool
}

func (w *world) footprint(t *testing.T, k tenant.Key) footprint {
	t.Helper()
	ctx := t.Context()
	var f footprint
	for table, dst := range map[string]*uint64{"decisions": &f.Decisions,
		"quota_usage": &f.Quota, "notes": &f.Notes} {
		require.NoError(t, w.db.Conn().QueryRow(ctx, "SELECT count() FROM "+
			w.db.Database()+"."+table+" WHERE account_id = ? AND project_id = ?",
			k.Account, k.Project).Scan(dst))
	}
	f.Messages = count(t, w.st, "guard.v1."+k.Account+"."+k.Project+".>")
	f.Outbox = count(t, w.outbox, "guard_alert_outbox."+k.Account+"."+k.Project)
	kvs, err := w.js.Stream(ctx, "KV_"+alertBucket)
	require.NoError(t, err)
	f.AlertHistory = count(t, kvs, "$KV."+alertBucket+"."+k.Account+"."+k.Project+".>")
	_, err = w.st.Consumer(ctx, quota.LaneName("ingest", k))
	f.Lane = err == nil
	_, err = w.kv.Get(ctx, k.Account+"."+k.Project+".sub1")
	f.Alert = err == nil
	_, err = os.Stat(filepath.Join(w.root, "projects", k.Account, k.Project))
	f.Folder = err == nil
	return f
}

func count(t *testing.T, st jetstream.Stream, filter string) uint64 {
	t.Helper()
	info, err := st.Info(t.Context(), jetstream.WithSubjectFilter(filter))
	require.NoError(t, err)
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

func (w *world) footprints(t *testing.T) map[tenant.Key]footprint {
	out := map[tenant.Key]footprint{}
	for _, k := range demo {
		out[k] = w.footprint(t, k)
	}
	return out
}

func TestOffboardProjectLeavesEveryOtherTenantWhole(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	gone := tenant.Key{Account: "acme", Project: "proj_prod"}
	before := w.footprints(t)
	require.Equal(t, footprint{Decisions: 12, Quota: 1, Notes: 1, Messages: 4, Outbox: 1,
		AlertHistory: 1, Lane: true, Alert: true, Folder: true}, before[gone])

	rep, err := w.ob.Offboard(ctx, "ops@example", gone.Account, gone.Project)
	require.NoError(t, err)

	after := w.footprints(t)
	require.Equal(t, footprint{}, after[gone], "nothing of acme/proj_prod remains")
	for _, k := range demo {
		if k != gone {
			require.Equal(t, before[k], after[k], "%s is untouched", k)
		}
	}
	_, err = w.st.Consumer(ctx, "ingest")
	require.NoError(t, err, "the shared consumer stays")
	_, err = os.Stat(filepath.Join(w.creds, "acme.nk"))
	require.NoError(t, err, "the account keeps its producer key")

	rows, parts := rep.Rows()
	require.Equal(t, uint64(12+1+1), rows)
	require.Positive(t, parts)
	require.Equal(t, uint64(4+1), rep.Messages(), "decision stream and alert outbox")
	require.Equal(t, []string{"GUARD/" + quota.LaneName("ingest", gone)}, rep.Consumers)
	require.Equal(t, 1, rep.AlertKeys)
	require.Equal(t, 1, rep.PolicyFolders)
	for _, tp := range rep.Tables {
		if tp.Table == w.db.Database()+".notes" {
			require.True(t, tp.Mutation, "a table not partitioned by tenant uses a mutation")
		}
	}

	log, err := w.db.Deletions(ctx, "acme")
	require.NoError(t, err)
	require.Len(t, log, 1)
	require.Equal(t, "ops@example", log[0].Actor)
	require.Equal(t, "proj_prod", log[0].Project)
	require.Equal(t, rows, log[0].Rows)
	require.Equal(t, uint64(5), log[0].StreamMessages)
	var detail tenant.OffboardReport
	require.NoError(t, json.Unmarshal([]byte(log[0].Detail), &detail))
	require.Equal(t, rep.Tables, detail.Tables)
}

func TestOffboardAccountRemovesAllItsProjects(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	before := w.footprints(t)

	rep, err := w.ob.Offboard(ctx, "ops@example", "acme", "")
	require.NoError(t, err)
	after := w.footprints(t)
	for _, k := range demo {
		if k.Account == "acme" {
			require.Equal(t, footprint{}, after[k], "%s removed", k)
		} else {
			require.Equal(t, before[k], after[k], "%s is untouched", k)
		}
	}
	_, err = os.Stat(filepath.Join(w.root, "projects", "acme"))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.True(t, rep.ProducerKey)
	_, err = os.Stat(filepath.Join(w.creds, "acme.nk"))
	require.ErrorIs(t, err, os.ErrNotExist)
	_, err = os.Stat(filepath.Join(w.creds, "globex.nk"))
	require.NoError(t, err)
	require.Equal(t, uint64(2*2+3*2+2), rep.Messages())

	// Offboarding again finds nothing and says so in the log.
	rep, err = w.ob.Offboard(ctx, "ops@example", "acme", "")
	require.NoError(t, err)
	rows, _ := rep.Rows()
	require.Zero(t, rows)
	log, err := w.db.Deletions(ctx, "acme")
	require.NoError(t, err)
	require.Len(t, log, 2)
}

func TestOffboardRefusesBadInput(t *testing.T) {
	ob := &tenant.Offboarder{PolicyRoot: t.TempDir()}
	for _, tc := range []struct{ actor, account, project string }{
		{"", "acme", ""},
		{"ops", "", ""},
		{"ops", "acme", "proj.*"},
		{"ops", "ac>me", ""},
		{"ops", "..", ""},
	} {
		_, err := ob.Offboard(t.Context(), tc.actor, tc.account, tc.project)
		require.Error(t, err, "%+v", tc)
	}
}
