package testenv_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/guardwatch/observatory/internal/natsembed"
	"github.com/guardwatch/observatory/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestClickHouseDatabaseRoundTrip(t *testing.T) {
	addr := testenv.ClickHouse(t)
	db := testenv.Database(t, addr)
	ctx := t.Context()

	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}})
	if err != nil {
		t.Fatalf("open clickhouse: %v", err)
	}
	t.Cleanup(func() { conn.Close() })

	err = conn.Exec(ctx, "CREATE TABLE "+db+".t (a UInt32) ENGINE = MergeTree ORDER BY a")
	if err != nil {
		t.Fatalf("create table: %v", err)
	}
	// A prepared batch, never INSERT ... VALUES through Exec: 18.16 waits
	// for a data block that Exec does not send.
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".t (a)")
	if err != nil {
		t.Fatalf("prepare insert: %v", err)
	}
	for i := range uint32(100) {
		if err := batch.Append(i); err != nil {
			t.Fatalf("append row %d: %v", i, err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatalf("send batch: %v", err)
	}

	var n, sum uint64
	if err := conn.QueryRow(ctx, "SELECT count(), sum(a) FROM "+db+".t").Scan(&n, &sum); err != nil {
		t.Fatalf("count rows: %v", err)
	}
	if n != 100 || sum != 4950 {
		t.Fatalf("read back count=%d sum=%d, want 100 and 4950", n, sum)
	}
}

func TestDatabaseIsDroppedAtCleanup(t *testing.T) {
	addr := testenv.ClickHouse(t)
	var db string
	t.Run("use", func(t *testing.T) { db = testenv.Database(t, addr) })

	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}})
	if err != nil {
		t.Fatalf("open clickhouse: %v", err)
	}
	defer conn.Close()
	var n uint64
	err = conn.QueryRow(t.Context(), "SELECT count() FROM system.databases WHERE name = ?",
		db).Scan(&n)
	if err != nil {
		t.Fatalf("look up database: %v", err)
	}
	if n != 0 {
		t.Fatalf("database %s still exists after its test ended", db)
	}
}

func TestNATSJetStreamSurvivesRestart(t *testing.T) {
	srv := testenv.NATS(t)
	ctx := t.Context()

	nc, err := nats.Connect(srv.URL(), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T",
		Subjects: []string{"t.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	if _, err := js.Publish(ctx, "t.one", []byte("hello")); err != nil {
		t.Fatalf("publish: %v", err)
	}

	// The message is on disk, so it outlives the server.
	srv.Restart(t)

	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "c",
		AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("create consumer after restart: %v", err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	if got := string(msg.Data()); got != "hello" || msg.Subject() != "t.one" {
		t.Fatalf("got %q on %s, want \"hello\" on t.one", got, msg.Subject())
	}
	if err := msg.DoubleAck(ctx); err != nil {
		t.Fatalf("ack: %v", err)
	}

	srv.Shutdown()
	down, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if _, err := js.Publish(down, "t.two", []byte("x")); err == nil {
		t.Fatal("publish succeeded with the server shut down")
	}
}

func TestStartNATSWithConfigFile(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	// The file's port is overridden by Listen; its user is kept.
	err := os.WriteFile(conf, []byte(`
port: 4999
authorization { user: obs, password: secret }
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsembed.StartNATS(natsembed.NATSOptions{Listen: "127.0.0.1:-1",
		StoreDir: filepath.Join(dir, "js"), ConfigFile: conf})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer srv.Shutdown()

	if nc, err := nats.Connect(srv.ClientURL()); err == nil {
		nc.Close()
		t.Fatal("connected without the config file's credentials")
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo("obs", "secret"))
	if err != nil {
		t.Fatalf("connect with credentials: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("jetstream account info: %v", err)
	}
}

func TestStartNATSReportsTakenPort(t *testing.T) {
	first, err := natsembed.StartNATS(natsembed.NATSOptions{Port: -1,
		StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start first: %v", err)
	}
	defer first.Shutdown()

	start := time.Now()
	_, err = natsembed.StartNATS(natsembed.NATSOptions{Listen: first.Addr().String(),
		StoreDir: t.TempDir()})
	if err == nil {
		t.Fatal("second server started on a taken port")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s to report the taken port", d)
	}
	t.Logf("second start failed as expected: %v", err)
}
