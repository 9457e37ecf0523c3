package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/ingest"
	"github.com/guardwatch/observatory/internal/natsembed"
	"github.com/guardwatch/observatory/internal/store"
)

type ingestCmd struct {
	Events    int `name:"events" default:"200000" help:"Events per measurement."`
	BatchSize int `name:"batch-size" default:"5000" help:"Ingester batch size."`
}

// ingestResult holds one run's figures, in events per second.
type ingestResult struct {
	Events      int
	Publish     float64 // publishing alone, into the stream
	ConsumeOnly float64 // fetch and ack, no ClickHouse
	InsertOnly  float64 // native batch insert, no NATS
	Backlog     float64 // ingester draining a full stream into ClickHouse
	EndToEnd    float64 // publish to visible, publisher and ingester together
}

func (c *ingestCmd) Run(root *cli) error {
	ctx := context.Background()
	r, err := runIngestBench(ctx, root.ClickHouseAddr, c.Events, c.BatchSize)
	if err != nil {
		return err
	}
	lower := min(r.ConsumeOnly, r.InsertOnly)
	fmt.Printf("\ningest, %d realistic events\n", r.Events)
	fmt.Printf("| measurement | events/s |\n|---|---:|\n")
	fmt.Printf("| limit: consume only (fetch + ack, no ClickHouse) | %.0f |\n", r.ConsumeOnly)
	fmt.Printf("| limit: insert only (native batch, no NATS) | %.0f |\n", r.InsertOnly)
	fmt.Printf("| publish only | %.0f |\n", r.Publish)
	fmt.Printf("| ingester draining a backlog | %.0f |\n", r.Backlog)
	fmt.Printf("| end to end, publish to visible | %.0f |\n", r.EndToEnd)
	fmt.Printf("ratio of backlog drain to the lower limit: %.2f\n", r.Backlog/lower)
	fmt.Printf("ratio of end to end to the lower limit: %.2f\n", r.EndToEnd/lower)
	return nil
}

func runIngestBench(ctx context.Context, chAddr string, n, batchSize int) (ingestResult,
	error) {
	res := ingestResult{Events: n}
	dir, err := os.MkdirTemp("", "bench-nats-")
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

	// The same events for every measurement; the insert-only limit gets
	// them decoded, as the ingester has them.
	g := gen.New(42, nil, nil)
	dec := events.NewDecoder(events.Limits{})
	msgs := make([]*nats.Msg, n)
	evs := make([]*events.Event, n)
	for i := range msgs {
		if msgs[i], err = bus.Message(g.Next()); err != nil {
			return res, err
		}
		if evs[i], err = dec.Decode(msgs[i].Data); err != nil {
			return res, err
		}
	}

	// Publish into a first stream, then consume it without ClickHouse.
	st, err := bus.EnsureStream(ctx, js, bus.StreamConfig{Name: "BENCH"})
	if err != nil {
		return res, err
	}
	secs, err := timed(func() error { return publishAll(js, msgs) })
	if err != nil {
		return res, err
	}
	res.Publish = float64(n) / secs
	raw, err := bus.EnsureConsumer(ctx, st, bus.ConsumerConfig{Durable: "raw"})
	if err != nil {
		return res, err
	}
	secs, err = timed(func() error { return consumeAll(raw, n, batchSize) })
	if err != nil {
		return res, err
	}
	res.ConsumeOnly = float64(n) / secs

	// Insert the same rows without NATS.
	rawDB, err := store.Open(ctx, store.Config{Addr: chAddr, Database: "bench_insert"})
	if err != nil {
		return res, err
	}
	defer dropDB(ctx, rawDB)
	secs, err = timed(func() error { return insertAll(ctx, rawDB, evs, batchSize) })
	if err != nil {
		return res, err
	}
	res.InsertOnly = float64(n) / secs

	// The ingester drains the stream that is already full.
	res.Backlog, err = ingestRun(ctx, chAddr, "bench_backlog", st, js, n, batchSize, nil)
	if err != nil {
		return res, err
	}

	// End to end: a fresh stream, the ingester running while events are
	// published.
	if err := js.DeleteStream(ctx, "BENCH"); err != nil {
		return res, err
	}
	st, err = bus.EnsureStream(ctx, js, bus.StreamConfig{Name: "BENCH"})
	if err != nil {
		return res, err
	}
	res.EndToEnd, err = ingestRun(ctx, chAddr, "bench_e2e", st, js, n, batchSize,
		func() error { return publishAll(js, msgs) })
	return res, err
}

// ingestRun runs an ingester into a fresh database until n events are
// visible, optionally publishing meanwhile, and returns events per second.
func ingestRun(ctx context.Context, chAddr, dbName string, st jetstream.Stream,
	js jetstream.JetStream, n, batchSize int, publish func() error) (float64, error) {
	db, err := store.Open(ctx, store.Config{Addr: chAddr, Database: dbName})
	if err != nil {
		return 0, err
	}
	defer dropDB(ctx, db)
	cons, err := bus.EnsureConsumer(ctx, st, bus.ConsumerConfig{Durable: "ingest-" + dbName})
	if err != nil {
		return 0, err
	}
	want := uint64(n)

	runCtx, cancel := context.WithCancel(ctx)
	ing := ingest.New(ingest.Config{BatchSize: batchSize, BatchWait: 200 * time.Millisecond},
		js, cons, db, nil, slog.Default())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- ing.Run(runCtx) }()
	if publish != nil {
		if err := publish(); err != nil {
			cancel()
			return 0, err
		}
	}
	for {
		var got uint64
		err := db.Conn().QueryRow(ctx, "SELECT count() FROM "+dbName+".decisions").Scan(&got)
		if err != nil {
			cancel()
			return 0, err
		}
		if got >= want {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	secs := time.Since(start).Seconds()
	cancel()
	<-done
	return float64(n) / secs, nil
}

func dropDB(ctx context.Context, db *store.Store) {
	_ = db.Conn().Exec(ctx, "DROP DATABASE IF EXISTS "+db.Database())
	db.Close()
}

func timed(f func() error) (float64, error) {
	start := time.Now()
	err := f()
	return time.Since(start).Seconds(), err
}

func publishAll(js jetstream.JetStream, msgs []*nats.Msg) error {
	for _, m := range msgs {
		for {
			_, err := js.PublishMsgAsync(m)
			if err == nil {
				break
			}
			// The window of unacknowledged publishes is full: wait for
			// the stream to catch up, as a producer under backpressure.
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				return fmt.Errorf("publish: %w", err)
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
		return nil
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("publish: stream did not acknowledge in time")
	}
}

// consumeAll fetches and acknowledges n messages, the ingester's pattern
// without decoding or storage.
func consumeAll(c jetstream.Consumer, n, batch int) error {
	iter, err := c.Messages(jetstream.PullMaxMessages(batch * 2))
	if err != nil {
		return err
	}
	defer iter.Stop()
	for i := 0; i < n; i++ {
		m, err := iter.Next()
		if err != nil {
			return err
		}
		if err := m.Ack(); err != nil {
			return err
		}
	}
	return nil
}

// insertAll inserts the events in batches, two at a time as the ingester
// does, so the limit is what ClickHouse can take, not one connection.
func insertAll(ctx context.Context, db *store.Store, evs []*events.Event, size int) error {
	batches := make(chan []*events.Event)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			var first error
			for b := range batches {
				if err := db.Insert(ctx, b); err != nil && first == nil {
					first = err
				}
			}
			errs <- first
		}()
	}
	for i := 0; i < len(evs); i += size {
		batches <- evs[i:min(i+size, len(evs))]
	}
	close(batches)
	return errors.Join(<-errs, <-errs)
}
