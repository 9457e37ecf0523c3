package export_test

import (
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/export"
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func openStore(t testing.TB) *store.Store {
	t.Helper()
	addr := testenv.ClickHouse(t)
	st, err := store.Open(t.Context(), store.Config{Addr: addr,
		Database: testenv.Database(t, addr), Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	return st
}

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return k
}

func newExporter(t testing.TB, st *store.Store, mod func(*export.Config)) *export.Exporter {
	t.Helper()
	cfg := export.Config{Store: st, SigningKey: newKey(t), Settle: time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&cfg)
	}
	e, err := export.New(cfg)
	require.NoError(t, err)
	return e
}

func mustScope(t testing.TB, account, project string) store.Scope {
	t.Helper()
	sc, err := store.NewScope(account, project)
	require.NoError(t, err)
	return sc
}

func parseFilter(t testing.TB, q string) filter.Filter {
	t.Helper()
	v, err := url.ParseQuery(q)
	require.NoError(t, err)
	f, err := filter.Parse(v, time.Now(), time.UTC)
	require.NoError(t, err)
	return f
}

// run exports and returns the file and the result.
func run(t testing.TB, e *export.Exporter, r export.Request) ([]byte, *export.Result) {
	t.Helper()
	if r.Actor == "" {
		r.Actor = "tester"
	}
	j, err := e.NewJob(r)
	require.NoError(t, err)
	var buf bytes.Buffer
	res, err := e.Run(t.Context(), j, &buf)
	require.NoError(t, err)
	return buf.Bytes(), res
}

// plain returns the file's bytes with gzip removed when it has it.
func plain(t testing.TB, b []byte, gz bool) []byte {
	t.Helper()
	if !gz {
		return b
	}
	r, err := gzip.NewReader(bytes.NewReader(b))
	require.NoError(t, err)
	out, err := io.ReadAll(r)
	require.NoError(t, err)
	return out
}

// seed inserts n generated events per tenant, spread over the last hours,
// with many sharing a second and some a millisecond, and each tenant's
// first ten inserted twice (a redelivery). It returns the events by
// "account/project".
func seed(t testing.TB, st *store.Store, n int, tenants ...gen.Tenant) map[string][]*events.Event {
	t.Helper()
	base := time.Now().UTC().Add(-3 * time.Hour).Truncate(time.Second)
	g := gen.New(7, tenants, nil)
	out := map[string][]*events.Event{}
	var all []*events.Event
	for _, tn := range tenants {
		for i := range n {
			ev := g.NextFor(tn)
			ev.EventID = fmt.Sprintf("%s-%05d", tn.Project, i)
			ev.OccurredAt = base.Add(time.Duration(i/4) * 7 * time.Second).
				Add(time.Duration(i%2) * time.Millisecond)
			out[tn.Account+"/"+tn.Project] = append(out[tn.Account+"/"+tn.Project], ev)
			all = append(all, ev)
		}
	}
	require.NoError(t, st.Insert(t.Context(), all))
	for _, evs := range out {
		require.NoError(t, st.Insert(t.Context(), evs[:10]))
	}
	return out
}
