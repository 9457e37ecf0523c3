package alert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/guardwatch/observatory/internal/events"
)

// Config configures an evaluator replica. Zero fields take the defaults
// shown; Guard is required.
type Config struct {
	Stream  string // the decisions stream, default "GUARD"
	Durable string // evaluator consumer shared by replicas, default "alerter"
	// DeliverDurable is the outbox consumer shared by replicas, default
	// Durable + "-deliver".
	DeliverDurable string
	// Replica names this process in claims and delivery records, default
	// <hostname>-<pid>.
	Replica string
	Guard   *Guard
	Retry   RetryPolicy
	// AckWait is how long a replica may hold a message unacknowledged
	// before it goes to another replica, default 30s.
	AckWait time.Duration
	// Workers bounds concurrent sends, default 32; PerProject bounds one
	// project's share of them, default 4.
	Workers    int
	PerProject int
	// PullBatch is how many decisions a replica asks the server for at a
	// time, default 500. Small batches spread decisions over replicas more
	// evenly; large ones move more per round trip.
	PullBatch int
	// Grace is how long a stopping replica lets sends in flight finish,
	// default 10s.
	Grace time.Duration
	// Replicas of the buckets and the outbox in a clustered JetStream,
	// default 1.
	Replicas int
	// Limits validate decisions as the ingester does.
	Limits events.Limits
	// PublicURL is the observatory's address; when set, alerts link to
	// their subscription's page.
	PublicURL string
	Now       func() time.Time
}

func (c *Config) defaults() {
	if c.Stream == "" {
		c.Stream = "GUARD"
	}
	if c.Durable == "" {
		c.Durable = "alerter"
	}
	if c.DeliverDurable == "" {
		c.DeliverDurable = c.Durable + "-deliver"
	}
	if c.Replica == "" {
		host, _ := os.Hostname()
		c.Replica = host + "-" + strconv.Itoa(os.Getpid())
	}
	c.Retry.defaults()
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.Workers <= 0 {
		c.Workers = 32
	}
	if c.PerProject <= 0 {
		c.PerProject = 4
	}
	if c.PullBatch <= 0 {
		c.PullBatch = 500
	}
	if c.Grace <= 0 {
		c.Grace = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Alerter is one evaluator replica: it counts matching decisions and
// delivers the alerts they fire. Any number may run against one JetStream.
type Alerter struct {
	cfg   Config
	js    jetstream.JetStream
	store *Store
	state jetstream.KeyValue
	eval  jetstream.Consumer
	out   jetstream.Consumer
	claim jetstream.KeyValue
	send  *Sender
	m     *metrics
	log   *slog.Logger
}

// ErrNoStream is returned by New while the decisions stream does not
// exist yet; the ingester creates it.
var ErrNoStream = errors.New("alert: decisions stream not found")

// New prepares a replica: the buckets, the outbox and both durable
// consumers. It returns ErrNoStream, having registered nothing with reg,
// while the decisions stream does not exist. The evaluator's consumer is created to start at new
// decisions, so a first start does not alert on the stream's history;
// after that it resumes where the replicas left off. reg may be nil.
func New(ctx context.Context, cfg Config, js jetstream.JetStream,
	reg prometheus.Registerer, log *slog.Logger) (*Alerter, error) {
	cfg.defaults()
	if cfg.Guard == nil {
		return nil, errors.New("alerter: a guard is required")
	}
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "alerter", "replica", cfg.Replica)
	decisions, err := js.Stream(ctx, cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNoStream, cfg.Stream)
	}
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", cfg.Stream, err)
	}
	a := &Alerter{cfg: cfg, js: js, m: newMetrics(reg), log: log}
	r := max(cfg.Replicas, 1)
	if a.store, err = OpenStore(ctx, js, StoreConfig{Guard: cfg.Guard, Replicas: r,
		Now: cfg.Now}); err != nil {
		return nil, err
	}
	if a.state, err = ensureKV(ctx, js, stateConfig(r)); err != nil {
		return nil, err
	}
	if a.claim, err = ensureKV(ctx, js, claimConfig(r)); err != nil {
		return nil, err
	}
	outbox, err := ensureOutbox(ctx, js, r)
	if err != nil {
		return nil, err
	}
	if a.eval, err = decisions.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: cfg.Durable, FilterSubject: events.DecisionFilter,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: cfg.AckWait, MaxDeliver: -1,
		MaxAckPending: 20_000, DeliverPolicy: jetstream.DeliverNewPolicy,
	}); err != nil {
		return nil, fmt.Errorf("create or update consumer %s: %w", cfg.Durable, err)
	}
	if a.out, err = outbox.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: cfg.DeliverDurable, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: cfg.AckWait, MaxDeliver: -1, MaxAckPending: 10_000,
	}); err != nil {
		return nil, fmt.Errorf("create or update consumer %s: %w", cfg.DeliverDurable, err)
	}
	a.send, err = newSender(SenderConfig{Guard: cfg.Guard, JS: js, Retry: cfg.Retry,
		Replica: cfg.Replica, Logger: log, Now: cfg.Now}, a.m)
	if err != nil {
		return nil, err
	}
	return a, nil
}

// Run evaluates and delivers until ctx ends, then finishes the decision
// in hand and gives sends in flight the grace period.
func (a *Alerter) Run(ctx context.Context) error {
	subs, err := watchSubs(ctx, a.store.subs, a.log)
	if err != nil {
		return err
	}
	ev := &evaluator{batch: a.cfg.PullBatch, js: a.js, cons: a.eval, state: a.state, subs: subs,
		dec: events.NewDecoder(a.cfg.Limits), m: a.m, log: a.log,
		cache: map[string]cachedWindow{}}
	dl := &deliverer{cons: a.out, claims: a.claim, store: a.store, sender: a.send,
		replica: a.cfg.Replica, workers: a.cfg.Workers, perProject: a.cfg.PerProject,
		link: strings.TrimSuffix(a.cfg.PublicURL, "/"), lease: a.lease(),
		ackWait: a.cfg.AckWait, grace: a.cfg.Grace, now: a.cfg.Now,
		m: a.m, log: a.log, slots: map[string]chan struct{}{}}

	errc := make(chan error, 2)
	go func() { errc <- ev.run(ctx) }()
	go func() { errc <- dl.run(ctx) }()
	a.log.Info("alerter running", "stream", a.cfg.Stream, "durable", a.cfg.Durable)
	err = errors.Join(<-errc, <-errc)
	a.log.Info("alerter stopped")
	return err
}

// lease is how long a claim protects a send in progress: longer than the
// longest a send can take with every retry.
func (a *Alerter) lease() time.Duration {
	return a.cfg.Retry.MaxElapsed + 2*a.cfg.Retry.AttemptTimeout + 30*time.Second
}
