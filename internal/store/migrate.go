package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/guardwatch/observatory/internal/events"
)

// migration is one versioned schema step. Its statements must be
// idempotent, so a step interrupted half-way can run again.
type migration struct {
	version    uint32
	name       string
	statements func(s *Store) []string
}

// migrations in order. Append only: a released step never changes.
var migrations = []migration{
	{1, "decisions table", func(s *Store) []string {
		return []string{decisionsDDL(s.table())}
	}},
	{2, "exports table", func(s *Store) []string {
		return []string{exportsDDL(s.exportsTable())}
	}},
	{3, "quota usage and tenant deletions", func(s *Store) []string {
		return []string{quotaUsageDDL(s.quotaUsageTable()),
			tenantDeletionsDDL(s.deletionsTable())}
	}},
}

// enum8 renders an Enum8 type whose values are numbered from 1 in order.
func enum8(values []string) string {
	parts := make([]string, len(values))
	for i, v := range values {
		parts[i] = fmt.Sprintf("'%s' = %d", v, i+1)
	}
	return "Enum8(" + strings.Join(parts, ", ") + ")"
}

// decisionsDDL is the decision table. It uses only what ClickHouse 18.16
// and current servers both accept: DateTime plus a milliseconds column
// instead of DateTime64, parallel arrays instead of Map, UInt8 for flags.
//
// The partition key holds (account_id, project_id) so that a tenant's data
// is dropped or aged by partition; the month keeps retention cheap. Rows
// are immutable; ReplacingMergeTree folds redelivered copies in the
// background and reads hide the rest with LIMIT 1 BY / uniqExact.
func decisionsDDL(table string) string {
	return `CREATE TABLE IF NOT EXISTS ` + table + ` (
    account_id        String,
    project_id        String,
    occurred_at       DateTime('UTC'),
    occurred_ms       UInt16,
    event_id          String,
    source            ` + enum8(events.Sources) + `,
    event_type        ` + enum8(events.EventTypes) + `,
    action            String,
    mode              ` + enum8(events.Modes) + `,
    decision          ` + enum8(events.Decisions) + `,
    actual_decision   ` + enum8(events.Decisions) + `,
    outcome           ` + enum8(events.Outcomes) + `,
    highest_severity  ` + enum8(events.Severities) + `,
    reason            String,
    application_id    String,
    request_id        String,
    audit_id          String,
    trace_id          String,
    span_id           String,
    session_id        String,
    conversation_turn Nullable(Int32),
    threat_categories Array(String),
    policy_ids        Array(String),
    detectors         Array(String),
    max_score         Nullable(Float32),
    user_id           String,
    agent_id          String,
    model             String,
    tool_name         String,
    latency_ms        Float32,
    eval_ms           Float32,
    content_preview   String,
    metadata_keys     Array(String),
    metadata_values   Array(String),
    label_keys        Array(String),
    label_values      Array(String),
    raw               String,
    ingested_at       UInt64
) ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY (account_id, project_id, toYYYYMM(occurred_at))
ORDER BY (account_id, project_id, occurred_at, event_id)
SETTINGS index_granularity = 8192`
}

// Migrate creates the database and applies every migration not yet
// recorded. It is safe to run at every start-up and from several
// processes: each step is idempotent and recorded after it succeeds.
func (s *Store) Migrate(ctx context.Context) error {
	setup := []string{
		"CREATE DATABASE IF NOT EXISTS " + s.db,
		`CREATE TABLE IF NOT EXISTS ` + s.db + `.schema_migrations (
    version    UInt32,
    name       String,
    applied_at DateTime('UTC')
) ENGINE = ReplacingMergeTree ORDER BY version`,
	}
	for _, q := range setup {
		if err := s.conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("prepare migrations: %w", err)
		}
	}

	applied, err := s.appliedMigrations(ctx)
	if err != nil {
		return err
	}
	for _, m := range migrations {
		if applied[m.version] {
			continue
		}
		for _, q := range m.statements(s) {
			if err := s.conn.Exec(ctx, q); err != nil {
				return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
			}
		}
		if err := s.recordMigration(ctx, m); err != nil {
			return err
		}
		s.log.Info("applied migration", "version", m.version, "name", m.name)
	}
	return nil
}

func (s *Store) appliedMigrations(ctx context.Context) (map[uint32]bool, error) {
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT version FROM "+s.db+".schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read applied migrations: %w", err)
	}
	defer rows.Close()

	applied := map[uint32]bool{}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("read applied migrations: %w", err)
		}
		applied[v] = true
	}
	return applied, rows.Err()
}

func (s *Store) recordMigration(ctx context.Context, m migration) error {
	b, err := s.conn.PrepareBatch(ctx,
		"INSERT INTO "+s.db+".schema_migrations (version, name, applied_at)")
	if err != nil {
		return fmt.Errorf("record migration %d: %w", m.version, err)
	}
	if err := b.Append(m.version, m.name, time.Now().UTC()); err != nil {
		return fmt.Errorf("record migration %d: %w", m.version, err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("record migration %d: %w", m.version, err)
	}
	return nil
}
