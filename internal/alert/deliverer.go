package alert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/store"
)

// Claim states.
const (
	claimSending = "sending"
	claimDone    = "done"
)

// claim marks an alert id as taken by one replica. It is created with
// KV Create, which only one writer can win.
type claim struct {
	State string    `json:"state"`
	By    string    `json:"by"`
	At    time.Time `json:"at"`
}

// errBusy means another replica holds a live claim on the alert.
var errBusy = errors.New("alert is being sent by another replica")

// deliverer takes fired alerts from the outbox and sends each once.
type deliverer struct {
	cons    jetstream.Consumer
	claims  jetstream.KeyValue
	store   *Store
	sender  *Sender
	replica string
	workers int
	// perProject bounds one project's concurrent sends, so that a
	// tenant's slow or failing receiver cannot take every worker.
	perProject int
	link       string // observatory base URL, or empty
	lease      time.Duration
	ackWait    time.Duration
	grace      time.Duration
	now        func() time.Time
	m          *metrics
	log        *slog.Logger

	mu    sync.Mutex
	slots map[string]chan struct{}
}

// run consumes the outbox until ctx ends, then gives sends in flight the
// grace period; sends cut short are released for another replica.
func (d *deliverer) run(ctx context.Context) error {
	iter, err := d.cons.Messages(jetstream.PullMaxMessages(d.workers))
	if err != nil {
		return fmt.Errorf("consume outbox: %w", err)
	}
	stop := context.AfterFunc(ctx, iter.Stop)
	defer stop()
	work, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()

	sem := make(chan struct{}, d.workers)
	var wg sync.WaitGroup
	for {
		m, err := iter.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			break
		}
		if err != nil {
			d.log.Warn("pull outbox", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d.deliver(work, m)
		}()
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d.grace):
		cancel()
		<-done
	}
	return nil
}

// deliver sends one alert and settles its message.
func (d *deliverer) deliver(ctx context.Context, m jetstream.Msg) {
	acct, proj, ok := parseOutbox(m.Subject())
	var a Alert
	if !ok || json.Unmarshal(m.Data(), &a) != nil || a.AccountID != acct ||
		a.ProjectID != proj || !events.ValidID(a.ID) {
		d.log.Error("malformed outbox message dropped", "subject", m.Subject())
		_ = m.Term()
		return
	}
	log := d.log.With("account", acct, "project", proj, "subscription",
		a.Subscription.ID, "alert", a.ID)
	sc, _ := store.NewScope(acct, proj)
	rec, _, err := d.store.load(ctx, sc, a.Subscription.ID)
	if errors.Is(err, ErrNotFound) {
		d.m.skipped.WithLabelValues(skipGone).Inc()
		_ = m.Ack()
		return
	}
	if err != nil {
		log.Warn("load subscription", "err", err)
		_ = m.NakWithDelay(5 * time.Second)
		return
	}

	release, ok := d.slot(acct + "." + proj)
	if !ok {
		// The project has its share of sends in flight; others go first.
		_ = m.NakWithDelay(time.Second)
		return
	}
	defer release()
	key := acct + "." + proj + "." + a.ID
	rev, err := d.claim(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		d.m.skipped.WithLabelValues(skipDuplicate).Inc()
		_ = m.Ack()
		return
	case errors.Is(err, errBusy):
		_ = m.NakWithDelay(d.lease / 4)
		return
	case err != nil:
		log.Warn("claim alert", "err", err)
		_ = m.NakWithDelay(5 * time.Second)
		return
	}

	if d.link != "" {
		a.Link = d.link + "/p/" + proj + "/alerts/" + a.Subscription.ID
	}
	stopKeepAlive := d.keepAlive(m)
	res := d.sender.Send(ctx, &rec.Subscription, &a)
	stopKeepAlive()

	// Everything below must happen even while stopping.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	if ctx.Err() != nil {
		// Stopped mid-send: let another replica have it now.
		_ = d.claims.Delete(sctx, key, jetstream.LastRevision(rev))
		_ = m.Nak()
		return
	}
	if err := d.store.Record(sctx, sc, a.Subscription.ID, res); err != nil {
		log.Warn("record delivery", "err", err)
	}
	done, _ := json.Marshal(claim{State: claimDone, By: d.replica, At: d.now().UTC()})
	if _, err := d.claims.Update(sctx, key, done, rev); err != nil {
		log.Warn("mark alert sent", "err", err)
	}
	_ = m.Ack()
}

// claim takes the alert id for this replica. It returns ErrKeyExists when
// the alert was sent (or given up) already, errBusy when another replica
// holds a live claim, and takes over a claim older than the lease, whose
// holder must have died.
func (d *deliverer) claim(ctx context.Context, key string) (uint64, error) {
	mine, _ := json.Marshal(claim{State: claimSending, By: d.replica, At: d.now().UTC()})
	rev, err := d.claims.Create(ctx, key, mine)
	if err == nil || !errors.Is(err, jetstream.ErrKeyExists) {
		return rev, err
	}
	e, err := d.claims.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("read claim %s: %w", key, err)
	}
	var c claim
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return 0, fmt.Errorf("decode claim %s: %w", key, err)
	}
	if c.State != claimSending {
		return 0, jetstream.ErrKeyExists
	}
	if d.now().Sub(c.At) < d.lease {
		return 0, errBusy
	}
	rev, err = d.claims.Update(ctx, key, mine, e.Revision())
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, errBusy
	}
	if err == nil {
		d.log.Warn("took over a stale claim", "key", key, "holder", c.By)
	}
	return rev, err
}

// slot takes one of the project's send slots, if one is free, and
// returns its release.
func (d *deliverer) slot(tenant string) (func(), bool) {
	d.mu.Lock()
	ch := d.slots[tenant]
	if ch == nil {
		ch = make(chan struct{}, d.perProject)
		d.slots[tenant] = ch
	}
	d.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, true
	default:
		return nil, false
	}
}

// keepAlive tells the server the message is still being worked on, so
// that retries longer than the ack wait are not handed to another replica.
func (d *deliverer) keepAlive(m jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(d.ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				_ = m.InProgress()
			case <-done:
				return
			}
		}
	}()
	return func() { close(done) }
}

// parseOutbox reads <account> and <project> from an outbox subject.
func parseOutbox(subject string) (string, string, bool) {
	rest, ok := strings.CutPrefix(subject, outboxPrefix)
	if !ok {
		return "", "", false
	}
	acct, proj, ok := strings.Cut(rest, ".")
	if !ok || !events.ValidID(acct) || !events.ValidID(proj) {
		return "", "", false
	}
	return acct, proj, true
}
