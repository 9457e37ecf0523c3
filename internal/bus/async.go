package bus

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// AsyncConfig tunes an AsyncPublisher. Zero fields take the defaults shown.
type AsyncConfig struct {
	// MaxInFlight bounds the publishes awaiting their ack, default 4,096.
	// Keep it at or below the JetStream context's async max pending.
	MaxInFlight int
	// AckTimeout is how long one attempt waits for its ack before the
	// message is sent again, default 5s.
	AckTimeout time.Duration
	// MaxElapsed is the retry budget of one message, default 2m.
	MaxElapsed time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts of one
	// message, default 100ms and 2s.
	MinBackoff, MaxBackoff time.Duration
}

func (c *AsyncConfig) defaults() {
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 4096
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 5 * time.Second
	}
	if c.MaxElapsed <= 0 {
		c.MaxElapsed = 2 * time.Minute
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(2*time.Second, c.MinBackoff)
	}
}

// AsyncPublisher keeps up to MaxInFlight publishes outstanding and sends a
// message again, with the same bytes and headers, whenever an attempt
// fails, is cut off by a disconnect or is not acknowledged within
// AckTimeout. A message whose first attempt was stored but whose ack was
// lost is stored twice; readers see it once, as for Publisher.
//
// The JetStream context should be created with
// jetstream.WithPublishAsyncTimeout so that an attempt the server never
// answers is also released inside the client.
type AsyncPublisher struct {
	js    jetstream.JetStream
	cfg   AsyncConfig
	slots chan struct{}
	wg    sync.WaitGroup

	retries atomic.Int64
	stored  atomic.Int64

	mu       sync.Mutex
	failed   int
	firstErr error
}

// NewAsyncPublisher returns a publisher on js.
func NewAsyncPublisher(js jetstream.JetStream, cfg AsyncConfig) *AsyncPublisher {
	cfg.defaults()
	return &AsyncPublisher{js: js, cfg: cfg, slots: make(chan struct{}, cfg.MaxInFlight)}
}

// Publish starts sending m and returns once it is in flight; it blocks
// while MaxInFlight publishes are outstanding. onAck, if not nil, is
// called once from another goroutine when the stream stored m. m must not
// be changed afterwards. Publish fails only when ctx ends first.
func (p *AsyncPublisher) Publish(ctx context.Context, m *nats.Msg,
	onAck func(*jetstream.PubAck)) error {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("publish %s: %w", m.Subject, ctx.Err())
	}
	p.wg.Add(1)
	go func() {
		defer func() {
			<-p.slots
			p.wg.Done()
		}()
		ack, err := p.send(m)
		if err != nil {
			p.fail(fmt.Errorf("publish %s: %w", m.Subject, err))
			return
		}
		p.stored.Add(1)
		if onAck != nil {
			onAck(ack)
		}
	}()
	return nil
}

// send makes attempts until one is acknowledged, the error is final or
// the retry budget is spent.
func (p *AsyncPublisher) send(m *nats.Msg) (*jetstream.PubAck, error) {
	deadline := time.Now().Add(p.cfg.MaxElapsed)
	wait := p.cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		ack, err := p.attempt(m)
		if err == nil {
			return ack, nil
		}
		if !retryable(err) {
			return nil, err
		}
		if time.Now().Add(wait).After(deadline) {
			return nil, fmt.Errorf("gave up after %d attempts: %w", attempt, err)
		}
		p.retries.Add(1)
		// Jitter keeps thousands of messages cut off by one disconnect
		// from coming back in one burst.
		time.Sleep(wait/2 + rand.N(wait/2+1))
		wait = min(2*wait, p.cfg.MaxBackoff)
	}
}

func (p *AsyncPublisher) attempt(m *nats.Msg) (*jetstream.PubAck, error) {
	f, err := p.js.PublishMsgAsync(m)
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(p.cfg.AckTimeout)
	defer t.Stop()
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		return nil, err
	case <-t.C:
		return nil, jetstream.ErrAsyncPublishTimeout
	}
}

func (p *AsyncPublisher) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failed++
	if p.firstErr == nil {
		p.firstErr = err
	}
}

// Flush waits until every message handed to Publish is stored or given
// up, and reports how many were given up, with the first error.
func (p *AsyncPublisher) Flush(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("flush: %d publishes still in flight: %w", len(p.slots), ctx.Err())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed > 0 {
		return fmt.Errorf("%d messages not stored, first: %w", p.failed, p.firstErr)
	}
	return nil
}

// Stats reports the messages stored so far, the attempts that were
// repeated and the messages given up.
func (p *AsyncPublisher) Stats() (stored, retries int64, failed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stored.Load(), p.retries.Load(), p.failed
}

// errCodeStoreFailed is the JetStream error a stream answers when it
// refuses a message, such as when it is full with the discard-new policy.
const errCodeStoreFailed jetstream.ErrorCode = 10077

// serverUnavailable matches JetStream API errors that mean "not now"
// rather than "never", such as JetStream still starting after a restart.
// A full stream answers 503 too, but a retry would only delay the error.
func serverUnavailable(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.Code == 503 &&
		apiErr.ErrorCode != errCodeStoreFailed
}
