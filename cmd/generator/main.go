// Command generator publishes realistic guard decision traffic for several
// tenants to NATS JetStream, with a share of deliberately invalid events.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
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
}

func (c *cli) Validate() error {
	switch {
	case c.Rate <= 0 || c.Rate > 1_000_000:
		return errors.New("--rate must be above 0 and at most 1000000")
	case c.Invalid < 0 || c.Invalid > 1:
		return errors.New("--invalid must be between 0 and 1")
	case c.Count < 0 || c.Duration < 0:
		return errors.New("--count and --duration must not be negative")
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

	opts := []nats.Option{nats.Name("guard-generator"), nats.MaxReconnects(-1)}
	if c.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	}
	nc, err := nats.Connect(c.NATSURL, opts...)
	if err != nil {
		return fmt.Errorf("connect nats %s: %w", c.NATSURL, err)
	}
	defer nc.Drain()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}

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
		if c.Invalid > 0 && randFloat(&seed) < c.Invalid {
			bad := g.Invalid()
			m = nats.NewMsg(bad.Subject)
			m.Data = bad.Payload
			invalid++
		} else if m, err = bus.Message(g.Next()); err != nil {
			return err
		}
		if _, err := js.PublishMsgAsync(m); err != nil {
			log.Warn("publish", "subject", m.Subject, "err", err)
			continue
		}
		sent++
		select {
		case <-report.C:
			log.Info("progress", "sent", sent, "invalid", invalid)
		default:
		}
	}

	wait, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	select {
	case <-js.PublishAsyncComplete():
	case <-wait.Done():
		return errors.New("timed out waiting for the stream to acknowledge")
	}
	log.Info("done", "sent", sent, "invalid", invalid)
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
