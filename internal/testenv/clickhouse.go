// Package testenv gives tests real servers: a ClickHouse started from the
// Debian package by scripts/clickhouse.sh, and an embedded JetStream NATS.
//
// Whether a missing server skips or fails a test follows the environment:
//
//   - OBS_CLICKHOUSE_ADDR=host:port uses that ClickHouse instead of starting
//     one (CI starts one for all packages).
//   - OBS_REQUIRE_INTEGRATION=1 fails a test whose server is unavailable.
//   - OBS_REQUIRE_INTEGRATION=0 skips such tests without trying to start
//     ClickHouse.
//   - Otherwise a test whose server is unavailable is skipped, with the
//     reason.
//
// Packages that use ClickHouse call Main from TestMain so that the server
// started for them is stopped when their tests end.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// Environment variables read by this package.
const (
	// EnvClickHouseAddr names a running ClickHouse's native address to use
	// instead of starting one.
	EnvClickHouseAddr = "OBS_CLICKHOUSE_ADDR"
	// EnvRequireIntegration is "1" to fail, "0" to skip without trying, and
	// unset to skip when a server is unavailable.
	EnvRequireIntegration = "OBS_REQUIRE_INTEGRATION"
)

const (
	scriptPath     = "scripts/clickhouse.sh"
	startTimeout   = 90 * time.Second // the script itself gives up after 60 s
	stopTimeout    = 60 * time.Second
	pingTimeout    = 10 * time.Second
	startAttempts  = 3 // free ports can be taken before the server binds them
	databasePrefix = "t_"
)

// clickHouse is the one server, or the one failure, of this test process.
var clickHouse struct {
	once sync.Once
	addr string
	dir  string // set when this process started the server
	err  error
}

// ClickHouse returns the native-protocol address ("127.0.0.1:PORT") of a
// running ClickHouse: OBS_CLICKHOUSE_ADDR if set, else a server started once
// per test process in a temporary folder. If none is available the test is
// skipped, or failed when OBS_REQUIRE_INTEGRATION=1.
func ClickHouse(tb testing.TB) string {
	tb.Helper()
	if os.Getenv(EnvRequireIntegration) == "0" {
		tb.Skipf("clickhouse: integration tests disabled by %s=0", EnvRequireIntegration)
	}
	clickHouse.once.Do(func() {
		if addr := os.Getenv(EnvClickHouseAddr); addr != "" {
			clickHouse.addr = addr
			if err := ping(addr); err != nil {
				clickHouse.err = fmt.Errorf("%s=%s: %w", EnvClickHouseAddr, addr, err)
			}
			return
		}
		clickHouse.addr, clickHouse.dir, clickHouse.err = startClickHouse()
	})
	if clickHouse.err != nil {
		unavailable(tb, clickHouse.err)
	}
	return clickHouse.addr
}

// Main runs the tests of a package and then stops the ClickHouse it started,
// if any. Call it from TestMain: func TestMain(m *testing.M) { testenv.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	if dir := clickHouse.dir; dir != "" {
		if err := stopClickHouse(dir); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		}
	}
	os.Exit(code)
}

// Database creates an empty database with a unique name on the server at
// addr and drops it when the test ends, so tests can share one server
// without seeing each other's tables.
func Database(tb testing.TB, addr string) string {
	tb.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr},
		DialTimeout: pingTimeout})
	if err != nil {
		tb.Fatalf("open clickhouse %s: %v", addr, err)
	}
	name := databasePrefix + randomHex(8)
	ctx, cancel := context.WithTimeout(tb.Context(), 30*time.Second)
	defer cancel()
	if err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		conn.Close()
		tb.Fatalf("create database %s on %s: %v", name, addr, err)
	}
	tb.Cleanup(func() {
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
			tb.Errorf("drop database %s on %s: %v", name, addr, err)
		}
	})
	return name
}

// unavailable skips or fails tb because a server it needs is missing.
func unavailable(tb testing.TB, err error) {
	tb.Helper()
	if os.Getenv(EnvRequireIntegration) == "1" {
		tb.Fatalf("clickhouse unavailable and %s=1: %v", EnvRequireIntegration, err)
	}
	tb.Skipf("clickhouse unavailable (set %s=1 to fail instead): %v",
		EnvRequireIntegration, err)
}

// startClickHouse starts a server with scripts/clickhouse.sh in a new
// temporary folder and returns its address and folder.
func startClickHouse() (addr, dir string, err error) {
	script, err := findScript()
	if err != nil {
		return "", "", fmt.Errorf("start clickhouse: %w", err)
	}
	for attempt := 1; ; attempt++ {
		addr, dir, err = startClickHouseOnce(script)
		if err == nil || attempt == startAttempts {
			return addr, dir, err
		}
		if !errors.Is(err, errPortTaken) {
			return "", "", err
		}
	}
}

// errPortTaken reports that another server already answered on the port
// picked for ours.
var errPortTaken = errors.New("port taken by another server")

func startClickHouseOnce(script string) (addr, dir string, err error) {
	ports, err := freePorts(2)
	if err != nil {
		return "", "", fmt.Errorf("start clickhouse: %w", err)
	}
	dir, err = os.MkdirTemp("", "testenv-clickhouse-")
	if err != nil {
		return "", "", fmt.Errorf("start clickhouse: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, "start", dir,
		strconv.Itoa(ports[0]), strconv.Itoa(ports[1]))
	// The script stops the server if this process dies without running
	// Main's cleanup: a panic, a test timeout, a kill.
	cmd.Env = append(os.Environ(), "CLICKHOUSE_WATCH_PID="+strconv.Itoa(os.Getpid()))
	out, err := cmd.CombinedOutput()
	if err != nil {
		discard(dir)
		if strings.Contains(string(out), "Address already in use") {
			err = fmt.Errorf("%w: %w", errPortTaken, err)
		}
		return "", "", fmt.Errorf("start clickhouse: %s: %w\n%s", script, err,
			strings.TrimSpace(string(out)))
	}
	addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	if _, err := os.Stat(filepath.Join(dir, "pid")); err != nil {
		// The script found a server already answering: not ours to use.
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("start clickhouse on %s: %w", addr, errPortTaken)
	}
	if err := ping(addr); err != nil {
		discard(dir)
		return "", "", fmt.Errorf("start clickhouse on %s: %w", addr, err)
	}
	return addr, dir, nil
}

// discard stops whatever was started in dir, if anything, and removes it.
// The server, should stop fail, still ends with this process: the script
// watches it.
func discard(dir string) {
	_ = stopClickHouse(dir)
	_ = os.RemoveAll(dir)
}

// stopClickHouse stops the server started in dir and removes the folder.
func stopClickHouse(dir string) error {
	script, err := findScript()
	if err != nil {
		return fmt.Errorf("stop clickhouse: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, script, "stop", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("stop clickhouse in %s: %w\n%s", dir, err,
			strings.TrimSpace(string(out)))
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("stop clickhouse: remove %s: %w", dir, err)
	}
	return nil
}

// ping checks that a ClickHouse answers over the native protocol at addr.
func ping(addr string) error {
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr},
		DialTimeout: pingTimeout})
	if err != nil {
		return fmt.Errorf("open clickhouse %s: %w", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	if err := conn.Ping(ctx); err != nil {
		return fmt.Errorf("ping clickhouse %s: %w", addr, err)
	}
	return nil
}

// findScript returns the absolute path of scripts/clickhouse.sh in the
// module holding the working directory, which is where go test runs.
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find %s: %w", scriptPath, err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			script := filepath.Join(dir, filepath.FromSlash(scriptPath))
			if _, err := os.Stat(script); err != nil {
				return "", fmt.Errorf("find %s: %w", scriptPath, err)
			}
			return script, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find %s: no go.mod above the working directory",
				scriptPath)
		}
		dir = parent
	}
}

// freePorts returns n distinct loopback TCP ports that were free a moment
// ago.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
