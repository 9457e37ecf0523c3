// Package ingest moves decision events from a durable JetStream consumer
// into storage: it batches by size and time, validates each payload,
// dead-letters what it must reject, and acknowledges a message only after
// its row was accepted.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/events"
)

// Inserter stores validated events; it returns only once they are durable.
type Inserter interface {
	Insert(ctx context.Context, evs []*events.Event) error
}

// Config tunes batching and retries. Zero fields take the defaults shown.
type Config struct {
	BatchSize    int           // rows per insert, default 5,000
	BatchWait    time.Duration // longest a row waits for its batch, default 500ms
	Workers      int           // decoding goroutines, default GOMAXPROCS
	Inserters    int           // batches inserted at once, default 2
	RetryDelay   time.Duration // first wait after a failed insert, default 1s
	MaxDelay     time.Duration // cap of the growing wait between retries, default 30s
	DrainTimeout time.Duration // time to finish the open batches on stop, default 20s
	// InsertTimeout bounds one insert attempt, default 30s.
	InsertTimeout time.Duration
	// MaxLag is the consumer backlog, in messages not yet delivered, above
	// which Status reports the ingester as lagging; 0 disables the check.
	MaxLag uint64
	Limits events.Limits
}

func (c *Config) defaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = 5000
	}
	if c.BatchWait <= 0 {
		c.BatchWait = 500 * time.Millisecond
	}
	if c.Workers <= 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	if c.Inserters <= 0 {
		c.Inserters = 2
	}
	if c.RetryDelay <= 0 {
		c.RetryDelay = time.Second
	}
	if c.MaxDelay <= 0 {
		c.MaxDelay = 30 * time.Second
	}
	if c.InsertTimeout <= 0 {
		c.InsertTimeout = 30 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 20 * time.Second
	}
}

// Ingester consumes one durable consumer into an Inserter.
type Ingester struct {
	cfg   Config
	js    jetstream.JetStream
	cons  jetstream.Consumer
	store Inserter
	dec   *events.Decoder
	m     *metrics
	log   *slog.Logger

	lastErr   atomic.Pointer[string]
	lastBatch atomic.Int64 // unix ms of the last successful insert
}

// New returns an ingester. reg may be nil to skip metrics registration.
func New(cfg Config, js jetstream.JetStream, cons jetstream.Consumer, store Inserter,
	reg prometheus.Registerer, log *slog.Logger) *Ingester {
	cfg.defaults()
	if log == nil {
		log = slog.Default()
	}
	return &Ingester{
		cfg: cfg, js: js, cons: cons, store: store,
		dec: events.NewDecoder(cfg.Limits),
		m:   newMetrics(reg),
		log: log.With("component", "ingest"),
	}
}

// Run consumes until ctx ends, then stops pulling, finishes the batches in
// hand (bounded by DrainTimeout) and returns.
//
// A batch whose insert fails is held and retried with a growing delay
// while its messages' ack deadlines are extended. Held batches stop the
// pipeline from pulling more, so during a ClickHouse outage the backlog
// stays in the stream and the ingester's memory stays bounded by a few
// batches.
func (in *Ingester) Run(ctx context.Context) error {
	// One batch pulled ahead keeps the next batch filling during an insert;
	// more would only hold messages in memory that the stream keeps anyway.
	iter, err := in.cons.Messages(jetstream.PullMaxMessages(in.cfg.BatchSize))
	if err != nil {
		return fmt.Errorf("start consuming: %w", err)
	}

	// Inserts run on drain, which outlives ctx by DrainTimeout so that
	// the batches in hand can still be stored on stop.
	drain, cancelDrain := context.WithCancel(context.Background())
	defer cancelDrain()
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
		case <-stopped:
			return
		}
		iter.Drain()
		t := time.AfterFunc(in.cfg.DrainTimeout, cancelDrain)
		<-stopped
		t.Stop()
	}()

	msgs := make(chan jetstream.Msg, min(in.cfg.BatchSize, 1024))
	go in.pull(iter, msgs)
	go in.watchLag(ctx)

	// Batches are inserted while the next ones fill; a ClickHouse insert
	// is mostly single-threaded on the server, so two in flight use both
	// of a small machine's cores. At most Inserters+1 batches are held.
	batches := make(chan []jetstream.Msg)
	var wg sync.WaitGroup
	for range in.cfg.Inserters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				in.process(ctx, drain, b)
			}
		}()
	}

	in.batch(msgs, batches)
	close(batches)
	wg.Wait()
	in.log.Info("ingester stopped")
	return nil
}

// pull copies messages from the iterator until it is closed.
func (in *Ingester) pull(iter jetstream.MessagesContext, out chan<- jetstream.Msg) {
	defer close(out)
	for {
		m, err := iter.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			in.log.Warn("pull messages", "err", err)
			in.setErr("pull: " + err.Error())
			time.Sleep(100 * time.Millisecond)
			continue
		}
		out <- m
	}
}

// batch groups messages by count and by age of the oldest one.
func (in *Ingester) batch(msgs <-chan jetstream.Msg, out chan<- []jetstream.Msg) {
	var cur []jetstream.Msg
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	flush := func() {
		if len(cur) > 0 {
			out <- cur
			cur = nil
		}
		timer.Stop()
	}

	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				flush()
				return
			}
			if len(cur) == 0 {
				timer.Reset(in.cfg.BatchWait)
			}
			cur = append(cur, m)
			if len(cur) >= in.cfg.BatchSize {
				flush()
			}
		case <-timer.C:
			flush()
		}
	}
}

type decoded struct {
	ev     *events.Event
	reason events.Reason
	detail string
}

// process validates a batch, dead-letters rejects, inserts the rest and
// settles every message: ack when stored, term when dead-lettered. An
// insert that fails is retried until it succeeds or ctx ends; then the
// messages are negatively acknowledged so that the broker redelivers them.
// Each attempt runs on drain, so the one under way when ctx ends may
// still finish.
func (in *Ingester) process(ctx, drain context.Context, batch []jetstream.Msg) {
	in.m.received.Add(float64(len(batch)))
	in.m.batchMessages.Observe(float64(len(batch)))

	results := in.decodeAll(batch)

	var valid []*events.Event
	var validMsgs, rejectMsgs []jetstream.Msg
	var letters []*nats.Msg
	for i, r := range results {
		m := batch[i]
		if r.ev != nil {
			valid = append(valid, r.ev)
			validMsgs = append(validMsgs, m)
			continue
		}
		seq := uint64(0)
		if md, err := m.Metadata(); err == nil {
			seq = md.Sequence.Stream
		}
		l := bus.DeadLetter(m.Subject(), seq, m.Data(), r.reason, r.detail)
		if of := m.Headers().Get(bus.HeaderReplayOf); of != "" {
			l.Header.Set(bus.HeaderReplayOf, of) // a replay rejected again
		}
		letters = append(letters, l)
		rejectMsgs = append(rejectMsgs, m)
	}

	if len(letters) > 0 {
		dctx, cancel := context.WithTimeout(drain, in.cfg.InsertTimeout)
		in.deadLetter(dctx, letters, rejectMsgs)
		cancel()
	}
	if len(valid) == 0 {
		return
	}

	if !in.insert(ctx, drain, valid, validMsgs) {
		for _, m := range validMsgs {
			_ = m.NakWithDelay(in.retryDelay(m))
		}
		in.m.retried.Add(float64(len(validMsgs)))
		return
	}

	for _, m := range validMsgs {
		if err := m.Ack(); err != nil {
			// The row is stored; a redelivery is hidden by read-time dedup.
			in.m.ackErrors.Inc()
			in.log.Warn("ack", "subject", m.Subject(), "err", err)
		}
	}
	now := time.Now()
	in.m.stored.Add(float64(len(valid)))
	in.m.batchRows.Observe(float64(len(valid)))
	for _, ev := range valid {
		in.m.projectRows.WithLabelValues(ev.AccountID, ev.ProjectID).Inc()
		in.m.eventDelay.Observe(now.Sub(ev.OccurredAt).Seconds())
	}
	in.lastBatch.Store(now.UnixMilli())
	in.lastErr.Store(nil)
}

// insert stores the events, retrying with a growing delay until ctx
// ends, and keeps the messages' ack deadlines from passing meanwhile,
// through slow attempts too. It reports whether the events were stored.
//
// TODO: a row that ClickHouse refuses for its content (not for being
// unreachable) holds its batch until an operator steps in; splitting the
// batch to dead-letter that row needs a reason of its own in events.
func (in *Ingester) insert(ctx, drain context.Context, evs []*events.Event,
	msgs []jetstream.Msg) bool {
	in.m.held.Add(float64(len(msgs)))
	defer in.m.held.Sub(float64(len(msgs)))
	defer in.keepInProgress(msgs)()

	wait := in.cfg.RetryDelay
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(drain, in.cfg.InsertTimeout)
		start := time.Now()
		err := in.store.Insert(actx, evs)
		cancel()
		in.m.insertTime.Observe(time.Since(start).Seconds())
		if err == nil {
			if attempt > 1 {
				in.log.Info("insert recovered", "rows", len(evs), "attempts", attempt)
			}
			return true
		}
		in.m.insertErrors.Inc()
		in.setErr("insert: " + err.Error())
		in.log.Error("insert batch", "rows", len(evs), "attempt", attempt, "err", err)

		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, in.cfg.MaxDelay)
		in.m.insertRetries.Inc()
	}
}

// keepInProgress resets the ack deadline of msgs every third of the
// consumer's AckWait, so that a slow or retried insert is not redelivered
// meanwhile, until the returned func is called.
func (in *Ingester) keepInProgress(msgs []jetstream.Msg) (stop func()) {
	every := 10 * time.Second
	if info := in.cons.CachedInfo(); info != nil && info.Config.AckWait > 0 {
		every = info.Config.AckWait / 3
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, m := range msgs {
					_ = m.InProgress()
				}
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

func (in *Ingester) deadLetter(ctx context.Context, letters []*nats.Msg,
	msgs []jetstream.Msg) {
	if err := bus.PublishDeadLetters(ctx, in.js, letters); err != nil {
		// Not recorded as a dead letter yet: let the broker redeliver.
		in.m.deadLetterErrors.Inc()
		in.log.Error("dead-letter batch", "count", len(letters), "err", err)
		in.setErr("dead letter: " + err.Error())
		for _, m := range msgs {
			_ = m.NakWithDelay(in.retryDelay(m))
		}
		return
	}
	// One line per batch: a storm of rejects must not become a storm of
	// log lines. Each letter's detail is in the stream (cmd/deadletter).
	byReason := map[string]int{}
	for _, l := range letters {
		reason := l.Header.Get(bus.HeaderReason)
		in.m.deadLetters.WithLabelValues(reason).Inc()
		byReason[reason]++
		in.log.Debug("dead letter", "subject", l.Header.Get(bus.HeaderOriginalSubject),
			"reason", reason, "detail", l.Header.Get(bus.HeaderDetail))
	}
	in.log.Info("dead letters", "count", len(letters), "by_reason", byReason)
	for _, m := range msgs {
		_ = m.Term()
	}
}

// decodeAll validates the batch on Workers goroutines.
func (in *Ingester) decodeAll(batch []jetstream.Msg) []decoded {
	out := make([]decoded, len(batch))
	workers := min(in.cfg.Workers, len(batch))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(batch) {
					return
				}
				out[i] = in.decodeOne(batch[i])
			}
		}()
	}
	wg.Wait()
	return out
}

func (in *Ingester) decodeOne(m jetstream.Msg) decoded {
	acct, proj, kind, err := events.ParseSubject(m.Subject())
	if err != nil || kind != events.KindDecision {
		return decoded{reason: events.ReasonBadSubject,
			detail: "subject does not name a valid account and project"}
	}
	ev, err := in.dec.Decode(m.Data())
	if err != nil {
		var inv *events.InvalidError
		if errors.As(err, &inv) {
			return decoded{reason: inv.Reason, detail: inv.Detail}
		}
		return decoded{reason: events.ReasonInvalidJSON, detail: err.Error()}
	}
	if ev.AccountID != acct || ev.ProjectID != proj {
		return decoded{reason: events.ReasonTenantMismatch,
			detail: "payload account_id/project_id differ from the subject's"}
	}
	return decoded{ev: ev}
}

// retryDelay doubles with each delivery of the message, up to MaxDelay.
func (in *Ingester) retryDelay(m jetstream.Msg) time.Duration {
	n := uint64(1)
	if md, err := m.Metadata(); err == nil {
		n = md.NumDelivered
	}
	d := in.cfg.RetryDelay
	for i := uint64(1); i < n && d < in.cfg.MaxDelay; i++ {
		d *= 2
	}
	return min(d, in.cfg.MaxDelay)
}

// watchLag samples the consumer's backlog for metrics and health.
func (in *Ingester) watchLag(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		info, err := in.cons.Info(ctx)
		if err == nil {
			in.m.pending.Set(float64(info.NumPending))
			in.m.ackPending.Set(float64(info.NumAckPending))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (in *Ingester) setErr(s string) { in.lastErr.Store(&s) }

// Status is the ingester's view of its own health.
type Status struct {
	LastError     string    `json:"last_error,omitempty"`
	LastInsert    time.Time `json:"last_insert,omitzero"`
	Pending       uint64    `json:"pending"`
	AckPending    int       `json:"ack_pending"`
	MaxLag        uint64    `json:"max_lag,omitempty"`
	Lagging       bool      `json:"lagging,omitempty"`
	ConsumerError string    `json:"consumer_error,omitempty"`
}

// Status reports the last error since the last good insert and the lag,
// measured against Config.MaxLag.
func (in *Ingester) Status(ctx context.Context) Status {
	s := Status{MaxLag: in.cfg.MaxLag}
	if p := in.lastErr.Load(); p != nil {
		s.LastError = *p
	}
	if ms := in.lastBatch.Load(); ms > 0 {
		s.LastInsert = time.UnixMilli(ms).UTC()
	}
	info, err := in.cons.Info(ctx)
	if err != nil {
		s.ConsumerError = err.Error()
		return s
	}
	s.Pending = info.NumPending
	s.AckPending = info.NumAckPending
	s.Lagging = s.MaxLag > 0 && s.Pending > s.MaxLag
	return s
}

// Err says what is wrong, nil when nothing is: the consumer cannot be
// read, the last insert failed, or the backlog is over MaxLag.
func (s Status) Err() error {
	var problems []string
	if s.ConsumerError != "" {
		problems = append(problems, "consumer info: "+s.ConsumerError)
	}
	if s.LastError != "" {
		since := "never"
		if !s.LastInsert.IsZero() {
			since = time.Since(s.LastInsert).Round(time.Second).String() + " ago"
		}
		problems = append(problems, fmt.Sprintf("%s (last good insert %s)", s.LastError, since))
	}
	if s.Lagging {
		problems = append(problems, fmt.Sprintf(
			"lag: %d messages not yet delivered, over the limit of %d (%d awaiting ack)",
			s.Pending, s.MaxLag, s.AckPending))
	}
	if len(problems) == 0 {
		return nil
	}
	return errors.New(strings.Join(problems, "; "))
}
