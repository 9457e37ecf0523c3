package web_test

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2"
	"net"
	"os"
	"testing"
	"time"
)

// clickhouseAddr returns the native address of the test ClickHouse from
// OBS_CLICKHOUSE_ADDR. Without one the test is skipped, unless
// OBS_REQUIRE_INTEGRATION=1, when it fails.
func clickhouseAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("OBS_CLICKHOUSE_ADDR")
	if addr != "" {
		if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
			c.Close()
			return addr
		}
	}
	if os.Getenv("OBS_REQUIRE_INTEGRATION") == "1" {
		t.Fatalf("ClickHouse is required (OBS_REQUIRE_INTEGRATION=1) but %q does not answer", addr)
	}
	t.Skip("no ClickHouse: set OBS_CLICKHOUSE_ADDR")
	return ""
}

// database creates an empty database for one test and drops it after.
func database(t testing.TB, addr string) string {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("web_%d", time.Now().UnixNano())
	if err := conn.Exec(context.Background(), "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name)
		conn.Close()
	})
	return name
}
