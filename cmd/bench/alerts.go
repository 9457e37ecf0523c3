package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/guardwatch/observatory/internal/alert"
	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/natsembed"
	"github.com/guardwatch/observatory/internal/store"
)

type alertsCmd struct {
	Rate       int           `name:"rate" default:"5000" help:"Background decisions per second."`
	Duration   time.Duration `name:"duration" default:"30s" help:"How long probes are sent."`
	ProbeEvery time.Duration `name:"probe-every" default:"50ms" help:"Probe interval."`
	Replicas   int           `name:"replicas" default:"1" help:"Evaluator replicas in the process."`
}

// The project the bench subscribes in; most background traffic is its
// own, so every background decision is decoded and matched.
var benchTenant = gen.Tenant{Account: "bench", Project: "alerts", Weight: 8}

const probeApp = "bench-probe"

// alertsResult holds one run's figures.
type alertsResult struct {
	Background  float64 // achieved background decisions per second
	Sent, Got   int
	Latencies   []time.Duration // publish to webhook received, sorted
	Fired       int64           // alerts the background subscriptions fired
	Pending     uint64          // evaluator backlog at the end
	MaxPending  uint64          // largest evaluator backlog seen
	Deliveries  int64           // webhook requests the receiver answered
	Duplicates  int             // probes received more than once
	ReplicasRan int
	Evaluated   float64 // decisions decoded and matched by the evaluators
	Matches     float64 // matches counted in windows
	Conflicts   float64 // window writes retried after another replica's
}

func (c *alertsCmd) Run(*cli) error {
	r, err := runAlertsBench(context.Background(), c)
	if err != nil {
		return err
	}
	q := func(p float64) time.Duration {
		if len(r.Latencies) == 0 {
			return 0
		}
		return r.Latencies[min(len(r.Latencies)-1, int(p*float64(len(r.Latencies))))]
	}
	fmt.Printf("\nalerts: publish to webhook received, %d evaluator replica(s), "+
		"%.0f background decisions/s for %s\n", r.ReplicasRan, r.Background, c.Duration)
	fmt.Printf("| measurement | value |\n|---|---:|\n")
	fmt.Printf("| probes sent / received / duplicated | %d / %d / %d |\n", r.Sent, r.Got,
		r.Duplicates)
	fmt.Printf("| latency p50 | %s |\n", ms3(q(0.50)))
	fmt.Printf("| latency p90 | %s |\n", ms3(q(0.90)))
	fmt.Printf("| latency p99 | %s |\n", ms3(q(0.99)))
	if len(r.Latencies) > 0 {
		fmt.Printf("| latency max | %s |\n", ms3(r.Latencies[len(r.Latencies)-1]))
	}
	fmt.Printf("| decisions evaluated (decoded and matched) | %.0f |\n", r.Evaluated)
	fmt.Printf("| matches counted in windows / write conflicts | %.0f / %.0f |\n", r.Matches,
		r.Conflicts)
	fmt.Printf("| background alerts fired | %d |\n", r.Fired)
	fmt.Printf("| evaluator backlog, largest seen / at end | %d / %d |\n", r.MaxPending,
		r.Pending)
	verdict := "met"
	if q(0.99) >= time.Second || r.Got < r.Sent {
		verdict = "NOT met"
	}
	fmt.Printf("target p99 < 1 s with every probe delivered: %s\n", verdict)
	summary(fmt.Sprintf("alerts: publish to webhook p50 / p99 at %.0f decisions/s",
		r.Background), ms3(q(0.50))+" / "+ms3(q(0.99))+fmt.Sprintf(" (%d of %d probes)",
		r.Got, r.Sent), "p99 < 1 s", verdict == "met")
	return nil
}

func ms3(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) + " ms"
}

// probeReceiver records when each probe's alert arrived.
type probeReceiver struct {
	mu    sync.Mutex
	at    map[string][]time.Time // trigger event id → arrivals
	count atomic.Int64
}

func (p *probeReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	body, _ := io.ReadAll(r.Body)
	p.count.Add(1)
	var a alert.Alert
	if json.Unmarshal(body, &a) == nil {
		p.mu.Lock()
		p.at[a.Trigger.EventID] = append(p.at[a.Trigger.EventID], now)
		p.mu.Unlock()
	}
	w.WriteHeader(http.StatusNoContent)
}

func runAlertsBench(ctx context.Context, c *alertsCmd) (alertsResult, error) {
	res := alertsResult{ReplicasRan: max(c.Replicas, 1)}
	dir, err := os.MkdirTemp("", "bench-alerts-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	srv, err := natsembed.StartNATS(natsembed.NATSOptions{Listen: "127.0.0.1:-1",
		StoreDir: dir})
	if err != nil {
		return res, err
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return res, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192))
	if err != nil {
		return res, err
	}
	if _, err := bus.EnsureStream(ctx, js, bus.StreamConfig{}); err != nil {
		return res, err
	}

	recv := &probeReceiver{at: map[string][]time.Time{}}
	hook := httptest.NewServer(recv)
	defer hook.Close()
	allow, _ := alert.ParseCIDRs([]string{"127.0.0.1/32"})
	guard := alert.NewGuard(allow)
	if err := subscribeBench(ctx, js, guard, hook.URL); err != nil {
		return res, err
	}

	reg := prometheus.NewRegistry()
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range res.ReplicasRan {
		// Replicas share one registry, wrapped with their name.
		r := prometheus.WrapRegistererWith(prometheus.Labels{"replica": strconv.Itoa(i)}, reg)
		a, err := alert.New(ctx, alert.Config{Replica: "bench-" + strconv.Itoa(i), Guard: guard},
			js, r, slog.Default())
		if err != nil {
			stop()
			return res, err
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = a.Run(runCtx) }()
	}
	defer func() { stop(); wg.Wait() }()

	msgs, err := backgroundMessages(20_000)
	if err != nil {
		return res, err
	}
	bgDone := make(chan float64, 1)
	go func() { bgDone <- publishBackground(runCtx, js, msgs, c.Rate) }()
	time.Sleep(2 * time.Second) // background traffic reaches a steady state

	cons, err := js.Consumer(ctx, "GUARD", "alerter")
	if err != nil {
		return res, err
	}
	sent, err := sendProbes(ctx, js, cons, c, &res)
	if err != nil {
		return res, err
	}
	res.Sent = len(sent)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && receivedAll(recv, sent) < len(sent) {
		time.Sleep(50 * time.Millisecond)
	}
	if info, err := cons.Info(ctx); err == nil {
		res.Pending = info.NumPending + uint64(info.NumAckPending)
	}
	stop()
	res.Background = <-bgDone

	recv.mu.Lock()
	defer recv.mu.Unlock()
	for id, t0 := range sent {
		at := recv.at[id]
		if len(at) == 0 {
			continue
		}
		res.Got++
		if len(at) > 1 {
			res.Duplicates++
		}
		res.Latencies = append(res.Latencies, at[0].Sub(t0))
	}
	slices.Sort(res.Latencies)
	res.Evaluated = sumCounter(reg, "guard_alert_decisions_evaluated_total")
	res.Matches = sumCounter(reg, "guard_alert_matches_total")
	res.Conflicts = sumCounter(reg, "guard_alert_window_conflicts_total")
	res.Deliveries = recv.count.Load()
	res.Fired = int64(res.Deliveries) - int64(res.Got)
	return res, nil
}

func sumCounter(reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
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

func receivedAll(r *probeReceiver, sent map[string]time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for id := range sent {
		if len(r.at[id]) > 0 {
			n++
		}
	}
	return n
}

// subscribeBench creates the probe subscription (every probe alerts, to
// the webhook) and three subscriptions that match a share of the
// background, as a real project's would, so windows are written and
// alerts fire while probes are measured.
func subscribeBench(ctx context.Context, js jetstream.JetStream, guard *alert.Guard,
	hookURL string) error {
	st, err := alert.OpenStore(ctx, js, alert.StoreConfig{Guard: guard})
	if err != nil {
		return err
	}
	sc, err := store.NewScope(benchTenant.Account, benchTenant.Project)
	if err != nil {
		return err
	}
	webhook := alert.Channel{Type: alert.ChannelWebhook, URL: hookURL}
	specs := []alert.Spec{
		{Name: "probe", Match: map[string]string{"application": probeApp}, Channel: webhook},
		{Name: "injection bursts per user", Threshold: 100, Window: alert.Duration(time.Minute),
			GroupBy: alert.GroupUser, Cooldown: alert.Duration(time.Minute), Channel: webhook,
			Match: map[string]string{"outcome": "blocked", "severity": "high"}},
		{Name: "pii per session", Threshold: 20, Window: alert.Duration(time.Minute),
			GroupBy: alert.GroupSession, Cooldown: alert.Duration(5 * time.Minute),
			Channel: webhook, Match: map[string]string{"category": "pii"}},
		{Name: "critical per policy", GroupBy: alert.GroupPolicy,
			Cooldown: alert.Duration(10 * time.Second), Channel: webhook,
			Match: map[string]string{"severity": "critical"}},
	}
	for _, s := range specs {
		if _, _, err := st.Create(ctx, sc, s, "bench"); err != nil {
			return fmt.Errorf("create subscription %q: %w", s.Name, err)
		}
	}
	return nil
}

// backgroundMessages prepares n decisions, most of them for the bench
// project, so that publishing them costs no generation.
func backgroundMessages(n int) ([]*nats.Msg, error) {
	tenants := append([]gen.Tenant{benchTenant}, gen.DemoTenants[:2]...)
	g := gen.New(7, tenants, nil)
	out := make([]*nats.Msg, n)
	for i := range out {
		m, err := bus.Message(g.Next())
		if err != nil {
			return nil, err
		}
		out[i] = m
	}
	return out, nil
}

// publishBackground publishes at rate per second, in 10 ms steps, until
// ctx ends, and returns the rate achieved.
func publishBackground(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg,
	rate int) float64 {
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	sent, i := 0, 0
	for {
		select {
		case <-ctx.Done():
			return float64(sent) / time.Since(start).Seconds()
		case <-tick.C:
		}
		due := int(time.Since(start).Seconds()*float64(rate)) - sent
		for range due {
			if _, err := js.PublishMsgAsync(msgs[i%len(msgs)]); err != nil {
				continue
			}
			sent++
			i++
		}
	}
}

// sendProbes publishes one matching decision per interval and returns
// when each was published, by event id. It samples the evaluator's
// backlog meanwhile.
func sendProbes(ctx context.Context, js jetstream.JetStream, cons jetstream.Consumer,
	c *alertsCmd, res *alertsResult) (map[string]time.Time, error) {
	g := gen.New(11, []gen.Tenant{benchTenant}, nil)
	sent := map[string]time.Time{}
	tick := time.NewTicker(c.ProbeEvery)
	defer tick.Stop()
	end := time.Now().Add(c.Duration)
	for n := 0; time.Now().Before(end); n++ {
		<-tick.C
		ev := g.NextFor(benchTenant)
		ev.EventID, ev.ApplicationID = "probe-"+strconv.Itoa(n), probeApp
		ev.OccurredAt = time.Now().UTC().Truncate(time.Millisecond)
		m, err := bus.Message(ev)
		if err != nil {
			return nil, err
		}
		sent[ev.EventID] = time.Now()
		if _, err := js.PublishMsg(ctx, m); err != nil {
			return nil, fmt.Errorf("publish probe: %w", err)
		}
		if n%20 == 0 {
			if info, err := cons.Info(ctx); err == nil {
				res.MaxPending = max(res.MaxPending, info.NumPending+uint64(info.NumAckPending))
			}
		}
	}
	return sent, nil
}
