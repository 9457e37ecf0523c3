package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
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
	Events        int    `name:"events" default:"200000" help:"Events per measurement."`
	BatchSize     int    `name:"batch-size" default:"5000" help:"Ingester batch size; the ingester's own default."`
	IngestBin     string `name:"ingest-bin" type:"existingfile" help:"Built cmd/ingest: the end-to-end run starts it as its own process and reports its peak RSS and CPU; without it the ingester runs in this process."`
	ClickHousePID int    `name:"clickhouse-pid" help:"Process id of the ClickHouse server, to report its CPU time per event."`
	Compression   string `name:"clickhouse-compression" default:"lz4" enum:"lz4,none" help:"Compression of insert blocks on the wire, for every measurement and the ingester process."`
}

// ingestResult holds one run's figures, in events per second, and the CPU
// each part spent per event, in microseconds.
type ingestResult struct {
	Events      int
	Publish     float64 // publishing alone, into the stream
	ConsumeOnly float64 // fetch and ack, no ClickHouse
	InsertOnly  float64 // native batch insert, no NATS
	Backlog     float64 // ingester draining a full stream into ClickHouse
	EndToEnd    float64 // publish to visible, publisher and ingester together

	CPU []cpuShare // where the CPU went, per measurement and process

	// IngesterRSS is the separate ingester process's peak RSS in kB
	// during the end-to-end run; 0 when it ran in this process.
	IngesterRSS int64
}

// cpuShare is the CPU one process spent per event in one measurement.
type cpuShare struct {
	Measurement, Process string
	MicrosPerEvent       float64
}

func (c *ingestCmd) Run(root *cli) error {
	ctx := context.Background()
	r, err := c.run(ctx, root.ClickHouseAddr)
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
	if r.IngesterRSS > 0 {
		fmt.Printf("ingester process peak RSS at full rate (end to end): %.1f MB\n",
			float64(r.IngesterRSS)/1024)
	}
	summary("ingest: end to end, publish to visible", fmt.Sprintf("%.0f events/s",
		r.EndToEnd), "≥ 50,000 events/s", r.EndToEnd >= 50_000)
	summary("ingest: end to end / lower limit (consume only, insert only)",
		fmt.Sprintf("%.2f (limits %.0f, %.0f)", r.EndToEnd/lower, r.ConsumeOnly, r.InsertOnly),
		"≥ 0.7", r.EndToEnd/lower >= 0.7)
	if r.IngesterRSS > 0 {
		summary("ingest: ingester process peak RSS at full rate",
			fmt.Sprintf("%.0f MB", float64(r.IngesterRSS)/1024), "", true)
	}
	if len(r.CPU) > 0 {
		fmt.Printf("\nCPU per event, user + system: on %d cores a total of T µs per event "+
			"caps the rate at %d,000,000/T events/s\n", runtime.NumCPU(), runtime.NumCPU())
		fmt.Printf("| measurement | process | CPU µs per event |\n|---|---|---:|\n")
		sums := map[string]float64{}
		var order []string
		for _, c := range r.CPU {
			fmt.Printf("| %s | %s | %.1f |\n", c.Measurement, c.Process, c.MicrosPerEvent)
			if _, ok := sums[c.Measurement]; !ok {
				order = append(order, c.Measurement)
			}
			sums[c.Measurement] += c.MicrosPerEvent
		}
		for _, m := range order {
			fmt.Printf("| %s | all of the above | %.1f (at most %.0f events/s on %d cores) |\n",
				m, sums[m], float64(runtime.NumCPU())*1e6/sums[m], runtime.NumCPU())
		}
	}
	return nil
}

// cpuMeter takes CPU readings of this process and, when its pid is known,
// of the ClickHouse server.
type cpuMeter struct {
	chPID int
	res   *ingestResult
}

type cpuReading struct{ self, server float64 }

func (m cpuMeter) read() cpuReading {
	r := cpuReading{self: cpuSeconds()}
	if m.chPID > 0 {
		r.server, _ = procCPU(m.chPID)
	}
	return r
}

// since records the CPU spent since r per event of n, under measurement
// name; self names what this process did in it.
func (m cpuMeter) since(r cpuReading, name, self string, n int) {
	now := m.read()
	per := func(s float64) float64 { return s * 1e6 / float64(n) }
	m.res.CPU = append(m.res.CPU, cpuShare{name, self, per(now.self - r.self)})
	if m.chPID > 0 {
		m.res.CPU = append(m.res.CPU, cpuShare{name, "ClickHouse server",
			per(now.server - r.server)})
	}
}

func (c *ingestCmd) run(ctx context.Context, chAddr string) (ingestResult, error) {
	n, batchSize := c.Events, c.BatchSize
	res := ingestResult{Events: n}
	meter := cpuMeter{chPID: c.ClickHousePID, res: &res}
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
	cpu := meter.read()
	secs, err := timed(func() error { return publishAll(js, msgs) })
	if err != nil {
		return res, err
	}
	res.Publish = float64(n) / secs
	meter.since(cpu, "publish only", "bench: publisher + embedded NATS", n)
	raw, err := bus.EnsureConsumer(ctx, st, bus.ConsumerConfig{Durable: "raw"})
	if err != nil {
		return res, err
	}
	cpu = meter.read()
	secs, err = timed(func() error { return consumeAll(raw, n, batchSize) })
	if err != nil {
		return res, err
	}
	res.ConsumeOnly = float64(n) / secs
	meter.since(cpu, "consume only", "bench: consumer + embedded NATS", n)

	// Insert the same rows without NATS.
	rawDB, err := store.Open(ctx, store.Config{Addr: chAddr, Database: "bench_insert",
		Compression: c.Compression})
	if err != nil {
		return res, err
	}
	defer dropDB(ctx, rawDB)
	cpu = meter.read()
	secs, err = timed(func() error { return insertAll(ctx, rawDB, evs, batchSize) })
	if err != nil {
		return res, err
	}
	res.InsertOnly = float64(n) / secs
	meter.since(cpu, "insert only", "bench: row building + driver", n)

	// The ingester drains the stream that is already full.
	cpu = meter.read()
	res.Backlog, err = ingestRun(ctx, chAddr, c.Compression, "bench_backlog", st, js, n,
		batchSize, nil)
	if err != nil {
		return res, err
	}
	meter.since(cpu, "ingester draining a backlog", "bench: ingester + embedded NATS", n)

	// End to end: a fresh stream, the ingester running while events are
	// published.
	if err := js.DeleteStream(ctx, "BENCH"); err != nil {
		return res, err
	}
	publish := func() error { return publishAll(js, msgs) }
	if c.IngestBin != "" {
		cpu = meter.read()
		var ing procFigures
		res.EndToEnd, ing, err = ingestProcessRun(ctx, c.IngestBin, srv.ClientURL(), chAddr,
			c.Compression, "bench_e2e", js, n, batchSize, publish)
		if err != nil {
			return res, err
		}
		meter.since(cpu, "end to end", "bench: publisher + embedded NATS", n)
		res.CPU = append(res.CPU, cpuShare{"end to end", "ingester process",
			ing.cpu * 1e6 / float64(n)})
		res.IngesterRSS = ing.peakRSS
		return res, nil
	}
	st, err = bus.EnsureStream(ctx, js, bus.StreamConfig{Name: "BENCH"})
	if err != nil {
		return res, err
	}
	cpu = meter.read()
	res.EndToEnd, err = ingestRun(ctx, chAddr, c.Compression, "bench_e2e", st, js, n,
		batchSize, publish)
	meter.since(cpu, "end to end", "bench: publisher + ingester + embedded NATS", n)
	return res, err
}

// procFigures are what a child process used.
type procFigures struct {
	cpu     float64 // CPU seconds
	peakRSS int64   // kB
}

// ingestProcessRun starts the ingester binary against the bench's NATS
// server and a fresh database, publishes, and returns events per second
// from the first publish until all n are visible, with the ingester's CPU
// and peak RSS.
func ingestProcessRun(ctx context.Context, bin, natsURL, chAddr, comp, dbName string,
	js jetstream.JetStream, n, batchSize int, publish func() error) (float64, procFigures,
	error) {
	var fig procFigures
	db, err := store.Open(ctx, store.Config{Addr: chAddr, Database: dbName})
	if err != nil {
		return 0, fig, err
	}
	defer dropDB(ctx, db)

	cmd := exec.Command(bin, "--nats-url", natsURL, "--stream", "BENCH",
		"--durable", "ingest-e2e", "--clickhouse-addr", chAddr, "--clickhouse-db", dbName,
		"--batch-size", strconv.Itoa(batchSize), "--batch-wait", "200ms",
		"--clickhouse-compression", comp,
		"--http-addr", "127.0.0.1:0", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return 0, fig, fmt.Errorf("start ingester: %w", err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()

	// The ingester creates the stream and its consumer when it is up.
	deadline := time.Now().Add(time.Minute)
	for {
		if st, err := js.Stream(ctx, "BENCH"); err == nil {
			if _, err := st.Consumer(ctx, "ingest-e2e"); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			return 0, fig, fmt.Errorf("ingester did not create its consumer in a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}

	start := time.Now()
	if err := publish(); err != nil {
		return 0, fig, err
	}
	if err := waitVisible(ctx, db, uint64(n)); err != nil {
		return 0, fig, err
	}
	secs := time.Since(start).Seconds()
	if fig.cpu, err = procCPU(cmd.Process.Pid); err != nil {
		return 0, fig, err
	}
	if fig.peakRSS, err = procPeakRSS(cmd.Process.Pid); err != nil {
		return 0, fig, err
	}
	return float64(n) / secs, fig, nil
}

// waitVisible polls until the database holds at least want decisions.
func waitVisible(ctx context.Context, db *store.Store, want uint64) error {
	for {
		var got uint64
		err := db.Conn().QueryRow(ctx, "SELECT count() FROM "+db.Database()+".decisions").
			Scan(&got)
		if err != nil {
			return fmt.Errorf("count visible rows: %w", err)
		}
		if got >= want {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ingestRun runs an ingester into a fresh database until n events are
// visible, optionally publishing meanwhile, and returns events per second.
func ingestRun(ctx context.Context, chAddr, comp, dbName string, st jetstream.Stream,
	js jetstream.JetStream, n, batchSize int, publish func() error) (float64, error) {
	db, err := store.Open(ctx, store.Config{Addr: chAddr, Database: dbName, Compression: comp})
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
	if err := waitVisible(ctx, db, want); err != nil {
		cancel()
		return 0, err
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
