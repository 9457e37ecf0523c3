package web_test

import (
	"testing"

	"github.com/guardwatch/observatory/internal/testenv"
)

// TestMain stops the ClickHouse that testenv may start for this package.
func TestMain(m *testing.M) { testenv.Main(m) }

// clickhouseAddr returns the test ClickHouse; testenv decides whether a
// missing server skips or fails the test.
func clickhouseAddr(t testing.TB) string {
	t.Helper()
	return testenv.ClickHouse(t)
}

// database creates an empty database for one test and drops it after.
func database(t testing.TB, addr string) string {
	t.Helper()
	return testenv.Database(t, addr)
}
