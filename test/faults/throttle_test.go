package faults_test

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// throttle forwards TCP connections to a target at a limited number of
// bytes per second in each direction: a slow network or a server that
// reads slowly. A rate of 0 forwards at full speed.
type throttle struct {
	ln     net.Listener
	target string
	rate   atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newThrottle(t *testing.T, target string, bytesPerSecond int64) *throttle {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &throttle{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.rate.Store(bytesPerSecond)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *throttle) addr() string { return p.ln.Addr().String() }

// setRate changes the limit of open and new connections.
func (p *throttle) setRate(bytesPerSecond int64) { p.rate.Store(bytesPerSecond) }

func (p *throttle) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func (p *throttle) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go p.handle(c)
	}
}

func (p *throttle) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *throttle) handle(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	for _, c := range []net.Conn{client, server} {
		p.track(c, true)
		defer p.track(c, false)
		defer c.Close()
	}
	done := make(chan struct{}, 2)
	go func() { p.copy(server, client); done <- struct{}{} }()
	go func() { p.copy(client, server); done <- struct{}{} }()
	<-done
}

// copy forwards in chunks, sleeping after each chunk as long as the rate
// says it should have taken.
func (p *throttle) copy(dst io.Writer, src io.Reader) {
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			if r := p.rate.Load(); r > 0 {
				time.Sleep(time.Duration(int64(n) * int64(time.Second) / r))
			}
		}
		if err != nil {
			return
		}
	}
}
