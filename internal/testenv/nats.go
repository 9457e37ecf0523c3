package testenv

import (
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/guardwatch/observatory/internal/natsembed"
)

// restartTimeout bounds how long Restart retries binding the old port.
const restartTimeout = 10 * time.Second

// NATSServer is an embedded JetStream NATS server owned by one test. It
// keeps its port and store across Restart, so clients reconnect to the same
// URL and find the same streams, as after a real server restart.
type NATSServer struct {
	mu       sync.Mutex
	srv      *server.Server // nil while shut down
	port     int
	storeDir string
}

// NATS starts an embedded JetStream NATS server on a free loopback port,
// storing its streams in a temporary folder, and shuts it down when the
// test ends.
func NATS(tb testing.TB) *NATSServer {
	tb.Helper()
	s := &NATSServer{storeDir: tb.TempDir()}
	srv, err := natsembed.StartNATS(natsembed.NATSOptions{Host: "127.0.0.1", Port: -1,
		StoreDir: s.storeDir})
	if err != nil {
		tb.Fatalf("start test nats: %v", err)
	}
	s.srv = srv
	s.port = srv.Addr().(*net.TCPAddr).Port
	tb.Cleanup(s.Shutdown)
	return s
}

// URL returns the client URL, which stays the same across restarts.
func (s *NATSServer) URL() string {
	return "nats://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Shutdown stops the server and waits until it has stopped. Connected
// clients see the connection drop; Restart brings the server back.
func (s *NATSServer) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shutdownLocked()
}

func (s *NATSServer) shutdownLocked() {
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}

// Restart stops the server if it runs and starts it again on the same port
// with the same store, so streams, consumers and unacknowledged messages
// survive as they would a real restart.
func (s *NATSServer) Restart(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shutdownLocked()
	opts := natsembed.NATSOptions{Host: "127.0.0.1", Port: s.port, StoreDir: s.storeDir}
	deadline := time.Now().Add(restartTimeout)
	for {
		srv, err := natsembed.StartNATS(opts)
		if err == nil {
			s.srv = srv
			return
		}
		// The old listener's port can take a moment to become free.
		if time.Now().After(deadline) {
			tb.Fatalf("restart test nats on port %d: %v", s.port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
