// Command generator publishes realistic guard decision traffic for several
// tenants to NATS JetStream, with a share of deliberately invalid events.
// Every message is retried with the same bytes until the stream stores it,
// across disconnects and server restarts; --ids-out records what was
// stored.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/gen"
)

type cli struct {
	NATSURL   string        `name:"nats-url" env:"GUARD_NATS_URL" default:"nats://127.0.0.1:4222" help:"NATS server URL."`
	NATSCreds string        `name:"nats-creds" env:"GUARD_NATS_CREDS" type:"existingfile" help:"NATS credentials file."`
	Rate      float64       `name:"rate" default:"50" help:"Events per second."`
	Duration  time.Duration `name:"duration" default:"0s" help:"Stop after this long; 0 runs until interrupted."`
	Count     int           `name:"count" default:"0" help:"Stop after this many events; 0 means no limit."`
	Invalid   float64       `name:"invalid" default:"0.01" help:"Share of deliberately invalid events, 0 to 1."`
	Seed      uint64        `name:"seed" default:"0" help:"Random seed; 0 picks one from the clock."`
	Tenants   string        `name:"tenants" help:"account/project[:weight],... (default: the demo tenants)."`
	IDsOut    string        `name:"ids-out" type:"path" help:"Write one line per stored message: valid|invalid, account, project, event id or reason."`

	MaxInFlight int           `name:"max-in-flight" default:"4096" help:"Publishes awaiting their ack at most."`
	AckTimeout  time.Duration `name:"ack-timeout" default:"5s" help:"Send a message again when its ack takes longer."`
	RetryFor    time.Duration `name:"retry-for" default:"2m" help:"Give a message up after retrying this long."`
}

func (c *cli) Validate() error {
	switch {
	case c.Rate <= 0 || c.Rate > 1_000_000:
		return errors.New("--rate must be above 0 and at most 1000000")
	case c.Invalid < 0 || c.Invalid > 1:
		return errors.New("--invalid must be between 0 and 1")
	case c.Count < 0 || c.Duration < 0:
		return errors.New("--count and --duration must not be negative")
	case c.MaxInFlight < 1:
		return errors.New("--max-in-flight must be at least 1")
	case c.AckTimeout <= 0 || c.RetryFor <= 0:
		return errors.New("--ack-timeout and --retry-for must be positive")
	}
	_, err := parseTenants(c.Tenants)
	return err
}

func parseTenants(s string) ([]gen.Tenant, error) {
	if s == "" {
		return gen.DemoTenants, nil
	}
	var out []gen.Tenant
	for _, item := range strings.Split(s, ",") {
		spec, weight, _ := strings.Cut(strings.TrimSpace(item), ":")
		acct, proj, ok := strings.Cut(spec, "/")
		if !ok || !events.ValidID(acct) || !events.ValidID(proj) {
			return nil, fmt.Errorf("--tenants: %q is not account/project with valid ids", item)
		}
		w := 1
		if weight != "" {
			var err error
			if w, err = strconv.Atoi(weight); err != nil || w < 1 {
				return nil, fmt.Errorf("--tenants: weight of %q must be a positive integer", item)
			}
		}
		out = append(out, gen.Tenant{Account: acct, Project: proj, Weight: w})
	}
	return out, nil
}

func main() {
	var c cli
	kong.Parse(&c, kong.Description("Publish demo guard decisions to NATS JetStream."))
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if c.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Duration)
		defer cancel()
	}
	if err := run(ctx, c, log); err != nil {
		log.Error("generator stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c cli, log *slog.Logger) error {
	tenants, _ := parseTenants(c.Tenants)
	seed := c.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	g := gen.New(seed, tenants, nil)

	var ids *idLog
	if c.IDsOut != "" {
		var err error
		if ids, err = openIDLog(c.IDsOut); err != nil {
			return err
		}
		defer ids.Close()
	}

	opts := []nats.Option{nats.Name("guard-generator"), nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond), nats.RetryOnFailedConnect(true),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Debug("nats", "err", err)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("nats reconnected") }),
	}
	if c.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	}
	nc, err := nats.Connect(c.NATSURL, opts...)
	if err != nil {
		return fmt.Errorf("connect nats %s: %w", c.NATSURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(c.MaxInFlight),
		jetstream.WithPublishAsyncTimeout(c.AckTimeout))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	pub := bus.NewAsyncPublisher(js, bus.AsyncConfig{MaxInFlight: c.MaxInFlight,
		AckTimeout: c.AckTimeout, MaxElapsed: c.RetryFor})

	lim := rate.NewLimiter(rate.Limit(c.Rate), max(1, int(c.Rate/10)))
	var sent, invalid int
	report := time.NewTicker(10 * time.Second)
	defer report.Stop()
	log.Info("publishing", "rate", c.Rate, "tenants", len(tenants), "invalid_share", c.Invalid)

	for c.Count == 0 || sent < c.Count {
		if err := lim.Wait(ctx); err != nil {
			break
		}
		var m *nats.Msg
		var rec string
		if c.Invalid > 0 && randFloat(&seed) < c.Invalid {
			bad := g.Invalid()
			m = nats.NewMsg(bad.Subject)
			m.Data = bad.Payload
			acct, proj, _, _ := events.ParseSubject(bad.Subject)
			rec = "invalid\t" + acct + "\t" + proj + "\t" + string(bad.Reason)
			invalid++
		} else {
			ev := g.Next()
			if m, err = bus.Message(ev); err != nil {
				return err
			}
			rec = "valid\t" + ev.AccountID + "\t" + ev.ProjectID + "\t" + ev.EventID
		}
		var onAck func(*jetstream.PubAck)
		if ids != nil {
			onAck = func(*jetstream.PubAck) { ids.Add(rec) }
		}
		if err := pub.Publish(ctx, m, onAck); err != nil {
			break
		}
		sent++
		select {
		case <-report.C:
			stored, retries, failed := pub.Stats()
			log.Info("progress", "sent", sent, "invalid", invalid, "stored", stored,
				"retries", retries, "failed", failed)
		default:
		}
	}

	// Whatever was handed to the publisher is retried to the end, even
	// after an interrupt, so that the id log matches the stream.
	wait, cancel := context.WithTimeout(context.Background(), c.RetryFor+c.AckTimeout)
	defer cancel()
	flushErr := pub.Flush(wait)
	stored, retries, failed := pub.Stats()
	log.Info("done", "sent", sent, "invalid", invalid, "stored", stored, "retries", retries,
		"failed", failed)
	if flushErr != nil {
		return fmt.Errorf("wait for the stream to store every message: %w", flushErr)
	}
	if ids != nil {
		return ids.Close()
	}
	return nil
}

// idLog records one line per message the stream stored, so that a test
// knows exactly what was published: "valid ACCOUNT PROJECT EVENT_ID" or
// "invalid ACCOUNT PROJECT REASON", tab-separated.
type idLog struct {
	mu  sync.Mutex
	f   *os.File
	w   *bufio.Writer
	err error
}

func openIDLog(path string) (*idLog, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--ids-out: %w", err)
	}
	return &idLog{f: f, w: bufio.NewWriterSize(f, 1<<16)}, nil
}

func (l *idLog) Add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil && l.f != nil {
		_, l.err = l.w.WriteString(line + "\n")
	}
}

// Close flushes and closes the file; it may be called more than once.
func (l *idLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return l.err
	}
	if err := l.w.Flush(); err != nil && l.err == nil {
		l.err = err
	}
	if err := l.f.Close(); err != nil && l.err == nil {
		l.err = err
	}
	l.f = nil
	if l.err != nil {
		return fmt.Errorf("--ids-out: %w", l.err)
	}
	return nil
}

// randFloat is a small xorshift so the invalid share does not depend on
// the generator's own stream of choices.
func randFloat(s *uint64) float64 {
	*s ^= *s << 13
	*s ^= *s >> 7
	*s ^= *s << 17
	return float64(*s>>11) / (1 << 53)
}
