package store

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/guardwatch/observatory/internal/events"
)

// quotaUsageTable counts, per project and minute, the events the ingester
// scheduled and how many of them were over the project's ingest quota.
// Over-quota events are stored like any other; this table is how the
// tenant learns that they were late.
func (s *Store) quotaUsageTable() string { return s.db + ".quota_usage" }

func quotaUsageDDL(table string) string {
	return `CREATE TABLE IF NOT EXISTS ` + table + ` (
    account_id String,
    project_id String,
    minute     DateTime('UTC'),
    events     UInt64,
    over_quota UInt64
) ENGINE = SummingMergeTree()
PARTITION BY (account_id, project_id, toYYYYMM(minute))
ORDER BY (account_id, project_id, minute)`
}

// QuotaCount is a project's count of scheduled and over-quota events in
// one minute.
type QuotaCount struct {
	Account   string
	Project   string
	Minute    time.Time // UTC, start of the minute
	Events    uint64
	OverQuota uint64
}

// RecordQuotaUsage adds counts to the usage table. Counts of the same
// project and minute add up, so each flush writes only what is new.
func (s *Store) RecordQuotaUsage(ctx context.Context, counts []QuotaCount) error {
	if len(counts) == 0 {
		return nil
	}
	sort.Slice(counts, func(i, j int) bool {
		a, b := counts[i], counts[j]
		if a.Account != b.Account {
			return a.Account < b.Account
		}
		if a.Project != b.Project {
			return a.Project < b.Project
		}
		return a.Minute.Before(b.Minute)
	})
	// One block per s.maxPart partitions, like decision inserts.
	type part struct {
		a, p string
		m    int
	}
	start, parts := 0, map[part]bool{}
	for i, c := range counts {
		if !events.ValidID(c.Account) || !events.ValidID(c.Project) {
			return fmt.Errorf("record quota usage: %w", events.ErrInvalidID)
		}
		t := c.Minute.UTC()
		k := part{c.Account, c.Project, t.Year()*100 + int(t.Month())}
		if !parts[k] && len(parts) == s.maxPart {
			if err := s.sendQuota(ctx, counts[start:i]); err != nil {
				return err
			}
			start, parts = i, map[part]bool{}
		}
		parts[k] = true
	}
	return s.sendQuota(ctx, counts[start:])
}

func (s *Store) sendQuota(ctx context.Context, counts []QuotaCount) error {
	b, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.quotaUsageTable()+
		" (account_id, project_id, minute, events, over_quota)")
	if err != nil {
		return fmt.Errorf("record quota usage: %w", err)
	}
	defer b.Abort()
	for _, c := range counts {
		err := b.Append(c.Account, c.Project, c.Minute.UTC().Truncate(time.Minute), c.Events,
			c.OverQuota)
		if err != nil {
			return fmt.Errorf("record quota usage: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("record quota usage: %w", err)
	}
	return nil
}

// QuotaUsage returns the scope's counts per minute in [from, to), oldest
// first.
func (s *Store) QuotaUsage(ctx context.Context, sc Scope, from, to time.Time) ([]QuotaCount,
	error) {
	if err := sc.check(); err != nil {
		return nil, err
	}
	rows, err := s.conn.Query(ctx, `SELECT minute, sum(events), sum(over_quota)
FROM `+s.quotaUsageTable()+`
WHERE account_id = ? AND project_id = ? AND minute >= ? AND minute < ?
GROUP BY minute ORDER BY minute`, sc.account, sc.project, from.UTC(), to.UTC())
	if err != nil {
		return nil, fmt.Errorf("read quota usage: %w", err)
	}
	defer rows.Close()
	var out []QuotaCount
	for rows.Next() {
		c := QuotaCount{Account: sc.account, Project: sc.project}
		if err := rows.Scan(&c.Minute, &c.Events, &c.OverQuota); err != nil {
			return nil, fmt.Errorf("read quota usage: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
