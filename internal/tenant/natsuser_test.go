package tenant_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/natsembed"
	"github.com/guardwatch/observatory/internal/tenant"
	"github.com/guardwatch/observatory/internal/tenant/tenanttest"
)

// broker is an embedded nats-server whose users come from the producer
// blocks, with an ingest user that owns the stream.
type broker struct {
	port  int
	store string
	conf  string
	creds string
	url   string
	js    jetstream.JetStream
	st    jetstream.Stream
	srv   interface{ Reload() error }
}

// writeConf writes the server's config file: everything a reload compares
// is in it, so that only the users change.
func (b *broker) writeConf(t *testing.T, producers string) {
	t.Helper()
	conf := `
host: 127.0.0.1
port: ` + strconv.Itoa(b.port) + `
jetstream { store_dir: "` + b.store + `" }
accounts {
  GUARD {
    jetstream: enabled
    users: [
      { user: ingest, password: ingest-secret }
` + producers + `
    ]
  }
}
`
	require.NoError(t, os.WriteFile(b.conf, []byte(conf), 0o600))
}

func startBroker(t *testing.T, snap *tenant.Snapshot) *broker {
	t.Helper()
	dir := t.TempDir()
	b := &broker{conf: filepath.Join(dir, "nats.conf"), creds: filepath.Join(dir, "creds"),
		store: filepath.Join(dir, "js"), port: freePort(t)}
	for _, account := range snap.Accounts() {
		_, created, err := tenant.ProducerKey(b.creds, account)
		require.NoError(t, err)
		require.True(t, created)
	}
	users, err := tenant.ProducersConfig(snap, b.creds)
	require.NoError(t, err)
	b.writeConf(t, users)

	srv, err := natsembed.StartNATS(natsembed.NATSOptions{ConfigFile: b.conf})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	b.url, b.srv = srv.ClientURL(), srv

	nc, err := nats.Connect(b.url, nats.UserInfo("ingest", "ingest-secret"))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	b.js, err = jetstream.New(nc)
	require.NoError(t, err)
	b.st, err = bus.EnsureStream(t.Context(), b.js, bus.StreamConfig{})
	require.NoError(t, err)
	return b
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// producer is a guard of one account, connected with its nkey seed.
type producer struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	mu   sync.Mutex
	errs []error
}

func (b *broker) producer(t *testing.T, account string, inbox string) *producer {
	t.Helper()
	p := &producer{}
	seed, err := nats.NkeyOptionFromSeed(filepath.Join(b.creds, account+".nk"))
	require.NoError(t, err)
	opts := []nats.Option{seed, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription,
		err error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.errs = append(p.errs, err)
	})}
	if inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(inbox))
	}
	p.nc, err = nats.Connect(b.url, opts...)
	require.NoError(t, err)
	t.Cleanup(p.nc.Close)
	p.js, err = jetstream.New(p.nc)
	require.NoError(t, err)
	return p
}

func (p *producer) publish(ctx context.Context, subject string) error {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	_, err := p.js.Publish(ctx, subject, []byte(`{}`))
	return err
}

// violation waits for the server's permissions violation naming subject.
func (p *producer) violation(t *testing.T, subject string) {
	t.Helper()
	require.Eventually(t, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, err := range p.errs {
			if errors.Is(err, nats.ErrPermissionViolation) &&
				strings.Contains(err.Error(), `"`+subject+`"`) {
				return true
			}
		}
		return false
	}, 2*time.Second, 10*time.Millisecond, "permissions violation for %s", subject)
}

// stored counts the stream's messages on subjects matching filter.
func (b *broker) stored(t *testing.T, filter string) uint64 {
	t.Helper()
	info, err := b.st.Info(t.Context(), jetstream.WithSubjectFilter(filter))
	require.NoError(t, err)
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

func TestProducerPublishesOnlyAsItsOwnAccount(t *testing.T) {
	_, root := tenanttest.Tree(t, tenanttest.Tiers, map[tenant.Key]string{
		{Account: "acme", Project: "proj_prod"}:   "pro",
		{Account: "acme", Project: "proj_stage"}:  "free",
		{Account: "globex", Project: "proj_prod"}: "pro",
	})
	tiersFile := filepath.Join(filepath.Dir(root), "tiers.yaml")
	reg, err := tenant.OpenRegistry(tiersFile, root, nil)
	require.NoError(t, err)
	b := startBroker(t, reg.Snapshot())
	ctx := t.Context()

	acme := b.producer(t, "acme", tenant.InboxPrefix("acme"))
	require.NoError(t, acme.publish(ctx, "guard.v1.acme.proj_prod.decision"))
	require.NoError(t, acme.publish(ctx, "guard.v1.acme.proj_stage.decision"))

	// Another account's subject, the same project id included.
	for _, subject := range []string{
		"guard.v1.globex.proj_prod.decision",
		"guard.v1.globex.proj_prod.deadletter",
	} {
		require.Error(t, acme.publish(ctx, subject), subject)
		acme.violation(t, subject)
	}
	// Subjects with wildcards, dead letters and alerts of its own account,
	// projects it does not have, the unscoped dead letters.
	for _, subject := range []string{
		"guard.v1.acme.*.decision",
		"guard.v1.*.proj_prod.decision",
		"guard.v1.acme.>",
		"guard.v1.>",
		"guard.v1.acme.proj_prod.*",
		"guard.v1.acme.proj_prod.deadletter",
		"guard.v1.acme.proj_prod.alert",
		"guard.v1.acme.proj_new.decision",
		"guard.unscoped.deadletter",
		"$JS.API.STREAM.INFO.GUARD",
		"$JS.API.STREAM.PURGE.GUARD",
	} {
		// A plain publish: the server refuses it the same way, without
		// the wait for an acknowledgement that never comes.
		require.NoError(t, acme.nc.Publish(subject, []byte(`{}`)))
		require.NoError(t, acme.nc.Flush())
		acme.violation(t, subject)
	}
	require.Equal(t, uint64(0), b.stored(t, "guard.v1.globex.>"), "nothing of globex's")
	require.Equal(t, uint64(2), b.stored(t, "guard.v1.>"), "only acme's two decisions")
	info, err := b.st.Info(ctx, jetstream.WithSubjectFilter(">"))
	require.NoError(t, err)
	for subject := range info.State.Subjects {
		require.NotContains(t, subject, "*", "a wildcard subject reached the stream")
		require.NotContains(t, subject, ">", "a wildcard subject reached the stream")
	}

	// Reading: no other producer's acknowledgements, no decisions.
	for _, subject := range []string{"_INBOX.>", tenant.InboxPrefix("globex") + ".>",
		"guard.v1.>", "guard.v1.globex.proj_prod.decision"} {
		sub, err := acme.nc.SubscribeSync(subject)
		require.NoError(t, err)
		require.NoError(t, acme.nc.Flush())
		acme.violation(t, subject)
		require.NoError(t, sub.Unsubscribe())
	}

	// Without its own inbox prefix a producer gets no acknowledgement.
	plain := b.producer(t, "acme", "")
	require.Error(t, plain.publish(ctx, "guard.v1.acme.proj_prod.decision"))

	globex := b.producer(t, "globex", tenant.InboxPrefix("globex"))
	require.NoError(t, globex.publish(ctx, "guard.v1.globex.proj_prod.decision"))
	require.Error(t, globex.publish(ctx, "guard.v1.acme.proj_prod.decision"))
	globex.violation(t, "guard.v1.acme.proj_prod.decision")
}

func TestProvisionedProjectMayPublishAfterReload(t *testing.T) {
	k := tenant.Key{Account: "acme", Project: "proj_prod"}
	tiersFile, root := tenanttest.Tree(t, tenanttest.Tiers, map[tenant.Key]string{k: "pro"})
	reg, err := tenant.OpenRegistry(tiersFile, root, nil)
	require.NoError(t, err)
	b := startBroker(t, reg.Snapshot())
	acme := b.producer(t, "acme", tenant.InboxPrefix("acme"))
	ctx := t.Context()

	require.Error(t, acme.publish(ctx, "guard.v1.acme.proj_new.decision"))
	acme.violation(t, "guard.v1.acme.proj_new.decision")

	tiers, err := tenant.LoadTiers(tiersFile)
	require.NoError(t, err)
	_, err = tenant.Provision(root, tiers, "acme", "proj_new", "free")
	require.NoError(t, err)
	require.NoError(t, reg.Reload())
	users, err := tenant.ProducersConfig(reg.Snapshot(), b.creds)
	require.NoError(t, err)
	require.Contains(t, users, `"guard.v1.acme.proj_new.decision"`)
	b.writeConf(t, users)
	require.NoError(t, b.srv.Reload())

	require.Eventually(t, func() bool {
		return acme.publish(ctx, "guard.v1.acme.proj_new.decision") == nil
	}, 5*time.Second, 50*time.Millisecond)
}

func TestAccountWithoutProjectsMayPublishNothing(t *testing.T) {
	block, err := tenant.Producer{Account: "acme", User: "producer-acme",
		Password: "$PRODUCER_ACME_PASSWORD"}.Block()
	require.NoError(t, err)
	// An empty allow list would allow every subject.
	require.Contains(t, block, `publish: { deny: [">"] }`)
	require.NotContains(t, block, "allow: []")

	_, err = tenant.Producer{Account: "acme"}.Block()
	require.Error(t, err)
	_, err = tenant.Producer{Account: "ac.me", NKey: "x"}.Block()
	require.Error(t, err)
}

func TestShippedNATSConfigMatchesShippedProjects(t *testing.T) {
	for _, v := range []string{"INGEST_PASSWORD", "OBSERVATORY_PASSWORD",
		"PRODUCER_ACME_PASSWORD", "PRODUCER_GLOBEX_PASSWORD", "SYS_PASSWORD"} {
		t.Setenv(v, "x")
	}
	opts, err := server.ProcessConfigFile("../../deploy/nats.conf")
	require.NoError(t, err)
	reg, err := tenant.OpenRegistry("../../deploy/tiers.yaml", "../../policies", nil)
	require.NoError(t, err)
	snap := reg.Snapshot()

	producers := 0
	for _, u := range opts.Users {
		account, ok := strings.CutPrefix(u.Username, "producer-")
		if !ok {
			require.Nil(t, u.Permissions, "service user %s", u.Username)
			continue
		}
		producers++
		want, err := tenant.Producer{Account: account,
			Projects: snap.AccountProjects(account)}.PublishSubjects()
		require.NoError(t, err)
		require.NotEmpty(t, want, "producer of an account with no project: %s", account)
		require.Equal(t, want, u.Permissions.Publish.Allow, u.Username)
		require.Empty(t, u.Permissions.Publish.Deny, u.Username)
		require.Equal(t, []string{tenant.InboxPrefix(account) + ".>"},
			u.Permissions.Subscribe.Allow, u.Username)
	}
	require.Equal(t, 2, producers)
}
