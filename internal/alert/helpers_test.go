package alert_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/alert"
	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/store"
	"github.com/guardwatch/observatory/internal/testenv"
)

// harness is a real JetStream with the decisions stream, an alert store
// and a guard that allows loopback, where the test receivers listen.
type harness struct {
	nats  *testenv.NATSServer
	nc    *nats.Conn
	js    jetstream.JetStream
	guard *alert.Guard
	store *alert.Store
	pub   *bus.Publisher
	seq   atomic.Int64
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{nats: testenv.NATS(t)}
	var err error
	h.nc, err = nats.Connect(h.nats.URL(), nats.MaxReconnects(-1))
	require.NoError(t, err)
	t.Cleanup(h.nc.Close)
	h.js, err = jetstream.New(h.nc)
	require.NoError(t, err)
	ctx := context.Background()
	_, err = bus.EnsureStream(ctx, h.js, bus.StreamConfig{})
	require.NoError(t, err)
	allow, err := alert.ParseCIDRs([]string{"127.0.0.1/32"})
	require.NoError(t, err)
	h.guard = alert.NewGuard(allow)
	h.store, err = alert.OpenStore(ctx, h.js, alert.StoreConfig{Guard: h.guard})
	require.NoError(t, err)
	h.pub = bus.NewPublisher(h.js, 10*time.Second)
	return h
}

// fastRetry keeps failing-receiver tests short.
var fastRetry = alert.RetryPolicy{MaxAttempts: 3, Initial: 20 * time.Millisecond,
	Max: 50 * time.Millisecond, MaxElapsed: 10 * time.Second, AttemptTimeout: 2 * time.Second}

// replica is one running evaluator.
type replica struct {
	a    *alert.Alerter
	reg  *prometheus.Registry
	stop func()
}

// start runs a replica until the test ends or stop is called.
func (h *harness) start(t *testing.T, name string) *replica {
	t.Helper()
	return h.startWith(t, alert.Config{Replica: name})
}

// startWith runs a replica with cfg, filled with the harness's guard and
// short timings.
func (h *harness) startWith(t *testing.T, cfg alert.Config) *replica {
	t.Helper()
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	cfg.Guard, cfg.Retry, cfg.AckWait, cfg.Grace = h.guard, fastRetry, 5*time.Second,
		2*time.Second
	a, err := alert.New(ctx, cfg, h.js, reg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	r := &replica{a: a, reg: reg}
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(15 * time.Second):
				t.Error("replica did not stop")
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

// counter reads a counter of a replica's registry.
func (r *replica) counter(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func scope(t *testing.T, account, project string) store.Scope {
	t.Helper()
	sc, err := store.NewScope(account, project)
	require.NoError(t, err)
	return sc
}

// subscribe creates a subscription and returns it with its secret.
func (h *harness) subscribe(t *testing.T, sc store.Scope, spec alert.Spec) (alert.Subscription,
	string) {
	t.Helper()
	if spec.Name == "" {
		spec.Name = "test subscription"
	}
	sub, secret, err := h.store.Create(context.Background(), sc, spec, "tester")
	require.NoError(t, err)
	return sub, secret
}

// decision is a valid blocked, high-severity prompt-injection decision of
// alice; mod changes it.
func (h *harness) decision(account, project string, mod ...func(*events.Event)) *events.Event {
	score := 92.0
	ev := &events.Event{
		SchemaVersion: events.SchemaVersion,
		EventID:       "evt-" + time.Now().Format("150405") + "-" + itoa(h.seq.Add(1)),
		OccurredAt:    time.Now().UTC().Truncate(time.Millisecond),
		AccountID:     account, ProjectID: project, Source: "shield",
		EventType: "prompt", Action: "process_prompt", Mode: "enforce",
		Decision: "deny", ActualDecision: "deny", Outcome: "blocked",
		Reason: "Prompt injection attempt detected", HighestSeverity: "high",
		ThreatCategories:    []string{"prompt_injection"},
		DeterminingPolicies: []events.Policy{{PolicyID: "pol-block-injection"}},
		Signals: []events.Signal{{ID: "s1", Detector: "injection-classifier",
			Score: &score}},
		Latency:   events.Latency{TotalMS: 12, EvalMS: 8},
		Identity:  &events.Identity{UserID: "alice"},
		SessionID: "sess-1",
	}
	for _, m := range mod {
		m(ev)
	}
	return ev
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func (h *harness) publish(t *testing.T, evs ...*events.Event) {
	t.Helper()
	for _, ev := range evs {
		require.NoError(t, h.pub.Publish(context.Background(), ev))
	}
}

// settle waits until the evaluators acknowledged every decision and the
// outbox is empty.
func (h *harness) settle(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	require.Eventually(t, func() bool {
		for _, c := range []struct{ stream, durable string }{
			{"GUARD", "alerter"}, {alert.OutboxStream, "alerter-deliver"}} {
			cons, err := h.js.Consumer(ctx, c.stream, c.durable)
			if err != nil {
				return false
			}
			info, err := cons.Info(ctx)
			if err != nil || info.NumPending > 0 || info.NumAckPending > 0 {
				return false
			}
		}
		return true
	}, 15*time.Second, 20*time.Millisecond)
}

// request is one request a receiver got.
type request struct {
	At     time.Time
	Header http.Header
	Body   []byte
}

// receiver is a real HTTP server that records requests and answers with
// the status its script gives for the n-th request (200 when unset).
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []request
	status func(n int) int
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, request{At: time.Now(), Header: req.Header.Clone(), Body: body})
		n := len(r.got)
		status := r.status
		r.mu.Unlock()
		code := http.StatusOK
		if status != nil {
			code = status(n)
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.got...)
}

// waitFor waits until the receiver has n requests and returns them.
func (r *receiver) waitFor(t *testing.T, n int) []request {
	t.Helper()
	require.Eventually(t, func() bool { return len(r.requests()) >= n }, 15*time.Second,
		10*time.Millisecond, "want %d requests", n)
	return r.requests()
}

// quiet asserts that the receiver stays at n requests for a while.
func (r *receiver) quiet(t *testing.T, n int) {
	t.Helper()
	time.Sleep(700 * time.Millisecond)
	require.Len(t, r.requests(), n)
}

// alerts decodes the bodies as alerts.
func alerts(t *testing.T, reqs []request) []alert.Alert {
	t.Helper()
	out := make([]alert.Alert, len(reqs))
	for i, r := range reqs {
		require.NoError(t, json.Unmarshal(r.Body, &out[i]), string(r.Body))
	}
	return out
}

// checkSignature recomputes the signature as a receiver in any language
// would: HMAC-SHA256 over "<timestamp>.<body>" keyed with the secret.
func checkSignature(t *testing.T, secret string, r request) {
	t.Helper()
	ts := r.Header.Get(alert.HeaderTimestamp)
	require.NotEmpty(t, ts)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "."))
	m.Write(r.Body)
	want := "v1=" + hex.EncodeToString(m.Sum(nil))
	require.Equal(t, want, r.Header.Get(alert.HeaderSignature))
	require.NoError(t, alert.Verify(secret, ts, r.Header.Get(alert.HeaderSignature), r.Body,
		time.Now(), 5*time.Minute))
}

func webhook(r *receiver) alert.Channel {
	return alert.Channel{Type: alert.ChannelWebhook, URL: r.srv.URL + "/hook"}
}
