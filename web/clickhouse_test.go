package web_test

import (
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
