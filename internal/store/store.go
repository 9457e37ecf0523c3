// Package store keeps decision rows in ClickHouse: schema migrations,
// partition-grouped batch inserts, and the tenant-scoped reads of the UI,
// exports and alerts. Every read takes a Scope; there is no other path.
package store

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"
)

// Config says how to reach ClickHouse.
type Config struct {
	Addr     string // native protocol host:port, e.g. 127.0.0.1:9000
	Database string // default "observatory"
	User     string // default "default"
	Password string
	// MaxPartitionsPerBatch caps the partitions one insert block may span;
	// current servers refuse more than 100 by default. Default 100.
	MaxPartitionsPerBatch int
	// Compression of the native protocol's blocks: "lz4" (default) or
	// "none". Without it, a ClickHouse on the same machine or a fast link
	// spares both ends the work of compressing every insert.
	Compression string
	Logger      *slog.Logger
}

// Store is a connection to the decisions database.
type Store struct {
	conn    driver.Conn
	db      string
	version proto.Version
	maxPart int
	log     *slog.Logger
	cfg     Config // as opened, for exports' own connections
}

// Open connects, reads the server version and applies pending migrations.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Database == "" {
		cfg.Database = "observatory"
	}
	if !validIdent(cfg.Database) {
		return nil, fmt.Errorf("store: database name %q must be letters, digits and _", cfg.Database)
	}
	if cfg.User == "" {
		cfg.User = "default"
	}
	if cfg.MaxPartitionsPerBatch <= 0 {
		cfg.MaxPartitionsPerBatch = 100
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var comp *clickhouse.Compression
	switch cfg.Compression {
	case "", "lz4":
		comp = &clickhouse.Compression{Method: clickhouse.CompressionLZ4}
	case "none":
	default:
		return nil, fmt.Errorf("store: compression %q must be lz4 or none", cfg.Compression)
	}

	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:            []string{cfg.Addr},
		Auth:            clickhouse.Auth{Username: cfg.User, Password: cfg.Password},
		Compression:     comp,
		DialTimeout:     5 * time.Second,
		ReadTimeout:     60 * time.Second,
		MaxOpenConns:    16,
		MaxIdleConns:    8,
		ConnMaxLifetime: time.Hour,
	})
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", cfg.Addr, err)
	}
	s := &Store{conn: conn, db: cfg.Database, maxPart: cfg.MaxPartitionsPerBatch,
		log: cfg.Logger.With("component", "store"), cfg: cfg}

	if err := s.connect(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	if err := s.Migrate(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) connect(ctx context.Context) error {
	if err := s.conn.Ping(ctx); err != nil {
		return fmt.Errorf("ping clickhouse: %w", err)
	}
	v, err := s.conn.ServerVersion()
	if err != nil {
		return fmt.Errorf("read clickhouse version: %w", err)
	}
	s.version = v.Version
	s.log.Info("connected to clickhouse", "version", v.Version.String(), "modern", s.Modern())
	return nil
}

// Modern reports whether the server is 21.0 or newer, where row policies,
// TTL and the other newer features used behind version gates exist.
func (s *Store) Modern() bool {
	return proto.CheckMinVersion(proto.Version{Major: 21}, s.version)
}

// Ping checks that ClickHouse answers.
func (s *Store) Ping(ctx context.Context) error { return s.conn.Ping(ctx) }

// Conn exposes the driver connection for tools that need raw access, such
// as benchmarks. Tenant reads go through the Scope-taking methods instead.
func (s *Store) Conn() driver.Conn { return s.conn }

// Database returns the database name.
func (s *Store) Database() string { return s.db }

// Close closes the connection pool.
func (s *Store) Close() error { return s.conn.Close() }

func (s *Store) table() string { return s.db + ".decisions" }

func validIdent(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
