package bus

import (
	"context"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestRetryableSeparatesOutagesFromRefusals(t *testing.T) {
	brokenPipe := &net.OpError{Op: "write", Net: "tcp", Err: &netErr{syscall.EPIPE}}
	cases := []struct {
		name  string
		err   error
		retry bool
	}{
		{"broken pipe while the server stops", fmt.Errorf("publish: %w", brokenPipe), true},
		{"connection reset", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, true},
		{"EOF", io.EOF, true},
		{"disconnected", nats.ErrDisconnected, true},
		{"reconnecting", nats.ErrConnectionReconnecting, true},
		{"no stream answers yet", jetstream.ErrNoStreamResponse, true},
		{"ack timeout", jetstream.ErrAsyncPublishTimeout, true},
		{"too many stalled", jetstream.ErrTooManyStalledMsgs, true},
		{"reconnect buffer full", nats.ErrReconnectBufExceeded, true},
		{"deadline", context.DeadlineExceeded, true},
		{"jetstream starting", &jetstream.APIError{Code: 503, ErrorCode: 10008}, true},
		{"stream full", &jetstream.APIError{Code: 503, ErrorCode: errCodeStoreFailed}, false},
		{"message too large for the stream",
			&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamMessageExceedsMaximum},
			false},
		{"bad subject", nats.ErrBadSubject, false},
		{"payload over the server's max", nats.ErrMaxPayload, false},
		{"permissions", fmt.Errorf("%w: publish", nats.ErrPermissionViolation), false},
		{"caller gave up", context.Canceled, false},
	}
	for _, c := range cases {
		if got := retryable(c.err); got != c.retry {
			t.Errorf("%s: retryable(%v) = %v, want %v", c.name, c.err, got, c.retry)
		}
	}
}

// netErr wraps an errno the way the net package's syscall errors do.
type netErr struct{ errno syscall.Errno }

func (e *netErr) Error() string { return e.errno.Error() }
func (e *netErr) Unwrap() error { return e.errno }
