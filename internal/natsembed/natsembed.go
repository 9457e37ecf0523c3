// Package natsembed runs a JetStream-enabled NATS server inside the calling
// process. The ingest command embeds one for the one-command dev run, and the
// tests embed one instead of needing an external server.
package natsembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// readyTimeout bounds how long StartNATS waits for the server to accept
// clients. JetStream recovers its store first, which takes a while for a
// large one.
const readyTimeout = 30 * time.Second

// NATSOptions configures an embedded server. The zero value listens on
// 127.0.0.1:4222 and keeps JetStream data in the nats-server default folder.
type NATSOptions struct {
	// Host is the client listen address; empty means what the config file
	// says, else 127.0.0.1.
	Host string
	// Port is the client port: -1 picks a free one, 0 means 4222 or what
	// the config file says.
	Port int
	// Listen is "host:port" and, when set, replaces Host and Port. Port -1
	// picks a free one here too, as in "127.0.0.1:-1".
	Listen string
	// StoreDir is the JetStream storage folder. Empty means the config
	// file's store_dir, or the nats-server default under the temp folder.
	StoreDir string
	// ConfigFile is an optional nats-server config file (accounts, users,
	// limits). Host, Port, Listen and StoreDir, when set, override it, and
	// JetStream is always on.
	ConfigFile string
	// Logger receives the server's log lines; nil discards them.
	Logger *slog.Logger
}

// StartNATS starts a JetStream-enabled server and returns once it accepts
// clients. The caller owns the server and stops it with Shutdown; its
// client URL is ClientURL().
func StartNATS(o NATSOptions) (*server.Server, error) {
	opts, err := o.serverOptions()
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start nats: %w", err)
	}
	// The server reports start-up failures (port taken, store unusable)
	// only through its logger, so the adapter also watches for them.
	logger := &serverLogger{l: o.Logger, fatal: make(chan string, 1)}
	srv.SetLoggerV2(logger, opts.Debug, opts.Trace, false)
	hostPort := net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port))
	fail := func(err error) (*server.Server, error) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("start nats on %s: %w", hostPort, err)
	}

	srv.Start()
	deadline := time.Now().Add(readyTimeout)
	for !srv.ReadyForConnections(50 * time.Millisecond) {
		select {
		case msg := <-logger.fatal:
			return fail(errors.New(msg))
		default:
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("not ready for connections after %s", readyTimeout))
		}
	}
	select {
	case msg := <-logger.fatal:
		return fail(errors.New(msg))
	default:
	}
	if !srv.JetStreamEnabled() {
		return fail(errors.New("jetstream is not enabled"))
	}
	return srv, nil
}

// serverOptions builds the nats-server options: the config file if any,
// then the explicit fields over it.
func (o NATSOptions) serverOptions() (*server.Options, error) {
	opts := &server.Options{}
	if o.ConfigFile != "" {
		var err error
		if opts, err = server.ProcessConfigFile(o.ConfigFile); err != nil {
			return nil, fmt.Errorf("read nats config %s: %w", o.ConfigFile, err)
		}
	}
	host, port := o.Host, o.Port
	if o.Listen != "" {
		h, p, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("parse nats listen address %q: %w", o.Listen, err)
		}
		if port, err = strconv.Atoi(p); err != nil || port < -1 || port > 65535 {
			return nil, fmt.Errorf("parse nats listen address %q: bad port %q", o.Listen, p)
		}
		host = h
	}
	if host != "" {
		opts.Host = host
	}
	if opts.Host == "" {
		// An embedded server is a convenience, not a deployment: stay
		// off the network unless asked.
		opts.Host = "127.0.0.1"
	}
	if port != 0 {
		opts.Port = port
	}
	if o.StoreDir != "" {
		opts.StoreDir = o.StoreDir
	}
	opts.JetStream = true
	// The embedding program owns signals and logging.
	opts.NoSigs = true
	opts.NoLog = true
	return opts, nil
}

// serverLogger turns the nats-server logger calls into slog records, if
// there is a slog logger, and hands the first fatal message to StartNATS.
type serverLogger struct {
	l     *slog.Logger
	fatal chan string
}

func (a *serverLogger) log(level slog.Level, format string, v ...any) {
	if a.l != nil && a.l.Enabled(context.Background(), level) {
		a.l.Log(context.Background(), level, fmt.Sprintf(format, v...), "component", "nats")
	}
}

func (a *serverLogger) Noticef(format string, v ...any) { a.log(slog.LevelInfo, format, v...) }
func (a *serverLogger) Warnf(format string, v ...any)   { a.log(slog.LevelWarn, format, v...) }
func (a *serverLogger) Errorf(format string, v ...any)  { a.log(slog.LevelError, format, v...) }
func (a *serverLogger) Debugf(format string, v ...any)  { a.log(slog.LevelDebug, format, v...) }
func (a *serverLogger) Tracef(format string, v ...any)  { a.log(slog.LevelDebug-4, format, v...) }

func (a *serverLogger) Fatalf(format string, v ...any) {
	a.log(slog.LevelError, format, v...)
	select {
	case a.fatal <- fmt.Sprintf(format, v...):
	default:
	}
}
