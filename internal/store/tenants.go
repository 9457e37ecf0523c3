package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/guardwatch/observatory/internal/events"
)

// Tenant-wide maintenance: retention and offboarding. These are the only
// writes that remove rows, and each one names its tenant in every
// statement: partitions are dropped only when the table's partition key
// holds the tenant's ids (so a partition holds nobody else's rows), and
// mutations always filter on account_id (and project_id).

// deletionsTable is the append-only log of offboardings. It names the
// tenants it removed, so tenant purges never touch it.
func (s *Store) deletionsTable() string { return s.db + ".tenant_deletions" }

func tenantDeletionsDDL(table string) string {
	return `CREATE TABLE IF NOT EXISTS ` + table + ` (
    deleted_at      DateTime('UTC'),
    actor           String,
    account_id      String,
    project_id      String,
    rows            UInt64,
    partitions      UInt64,
    stream_messages UInt64,
    consumers       UInt64,
    policy_folders  UInt64,
    alert_keys      UInt64,
    detail          String
) ENGINE = MergeTree
PARTITION BY toYYYYMM(deleted_at)
ORDER BY (deleted_at, account_id, project_id)`
}

// Partition is one partition of a project in the decisions table.
type Partition struct {
	ID      string
	Month   int // YYYYMM of occurred_at
	Rows    uint64
	MinTime time.Time
	MaxTime time.Time
}

// End returns the first instant after the partition's month.
func (p Partition) End() time.Time {
	return time.Date(p.Month/100, time.Month(p.Month%100)+1, 1, 0, 0, 0, 0, time.UTC)
}

// ProjectRef names a project that has rows, found from the table's parts.
type ProjectRef struct {
	Account string
	Project string
}

// DataProjects lists every project with rows in the decisions table. It
// reads the partition values of the active parts, not the rows, so it
// stays cheap on a large table.
func (s *Store) DataProjects(ctx context.Context) ([]ProjectRef, error) {
	rows, err := s.conn.Query(ctx, `SELECT DISTINCT partition FROM system.parts
WHERE database = ? AND table = 'decisions' AND active`, s.db)
	if err != nil {
		return nil, fmt.Errorf("list partitions: %w", err)
	}
	defer rows.Close()

	seen := map[ProjectRef]bool{}
	var out []ProjectRef
	for rows.Next() {
		var part string
		if err := rows.Scan(&part); err != nil {
			return nil, fmt.Errorf("list partitions: %w", err)
		}
		acct, proj, _, ok := parsePartition(part)
		if !ok {
			s.log.Warn("partition value not understood", "partition", part)
			continue
		}
		ref := ProjectRef{acct, proj}
		if !seen[ref] {
			seen[ref] = true
			out = append(out, ref)
		}
	}
	return out, rows.Err()
}

// parsePartition reads the value of the decisions partition key as the
// server prints it: ('acct','proj',202401). Ids cannot hold quotes or
// commas, so a split is exact; anything else is refused.
func parsePartition(v string) (account, project string, month int, ok bool) {
	v, ok1 := strings.CutPrefix(v, "(")
	v, ok2 := strings.CutSuffix(v, ")")
	parts := strings.Split(v, ",")
	if !ok1 || !ok2 || len(parts) != 3 {
		return "", "", 0, false
	}
	unquote := func(s string) (string, bool) {
		s = strings.TrimSpace(s)
		if len(s) < 2 || s[0] != '\'' || s[len(s)-1] != '\'' {
			return "", false
		}
		s = s[1 : len(s)-1]
		return s, events.ValidID(s)
	}
	account, ok1 = unquote(parts[0])
	project, ok2 = unquote(parts[1])
	if _, err := fmt.Sscanf(strings.TrimSpace(parts[2]), "%d", &month); err != nil {
		return "", "", 0, false
	}
	return account, project, month, ok1 && ok2 && month > 190000 && month < 300000
}

// Partitions returns the active partitions that hold rows of the scope, in
// month order. The set comes from a query filtered on the scope's ids, so
// it can never name another tenant's partition.
func (s *Store) Partitions(ctx context.Context, sc Scope) ([]Partition, error) {
	if err := sc.check(); err != nil {
		return nil, err
	}
	rows, err := s.conn.Query(ctx, `SELECT partition_id, toYYYYMM(min(min_time)),
    sum(rows), min(min_time), max(max_time)
FROM system.parts
WHERE database = ? AND table = 'decisions' AND active AND partition_id IN (
    SELECT DISTINCT _partition_id FROM `+s.table()+`
    WHERE account_id = ? AND project_id = ?)
GROUP BY partition_id
ORDER BY 2`, s.db, sc.account, sc.project)
	if err != nil {
		return nil, fmt.Errorf("partitions of %s/%s: %w", sc.account, sc.project, err)
	}
	defer rows.Close()
	var out []Partition
	for rows.Next() {
		var p Partition
		var month uint32
		if err := rows.Scan(&p.ID, &month, &p.Rows, &p.MinTime, &p.MaxTime); err != nil {
			return nil, fmt.Errorf("partitions of %s/%s: %w", sc.account, sc.project, err)
		}
		p.Month = int(month)
		out = append(out, p)
	}
	return out, rows.Err()
}

// DropPartition removes one partition of the decisions table that
// Partitions returned for sc. It checks again, just before the drop, that
// the partition holds rows of sc and of nobody else.
func (s *Store) DropPartition(ctx context.Context, sc Scope, id string) error {
	if err := sc.check(); err != nil {
		return err
	}
	return s.dropTenantPartition(ctx, s.table(), sc.account, sc.project, id)
}

// dropTenantPartition drops partition id of table after checking that
// every row in it belongs to account (and project, when not empty).
func (s *Store) dropTenantPartition(ctx context.Context, table, account, project,
	id string) error {
	if !validPartitionID(id) {
		return fmt.Errorf("drop partition %q of %s: not a partition id", id, table)
	}
	cond, args := tenantCond(account, project)
	qargs := make([]any, 0, 2*len(args)+1)
	qargs = append(append(append(qargs, args...), args...), id)
	var mine, others uint64
	err := s.conn.QueryRow(ctx, `SELECT countIf(`+cond+`), countIf(NOT (`+cond+`))
FROM `+table+` WHERE _partition_id = ?`, qargs...).Scan(&mine, &others)
	if err != nil {
		return fmt.Errorf("check partition %s of %s: %w", id, table, err)
	}
	if others > 0 {
		return fmt.Errorf("drop partition %s of %s: %d rows of other tenants; not dropped",
			id, table, others)
	}
	if err := s.conn.Exec(ctx, "ALTER TABLE "+table+" DROP PARTITION ID '"+id+"'"); err != nil {
		return fmt.Errorf("drop partition %s of %s: %w", id, table, err)
	}
	return nil
}

func validPartitionID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' ||
			c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// tenantCond is the WHERE condition naming an account, or one project of
// it when project is not empty.
func tenantCond(account, project string) (string, []any) {
	if project == "" {
		return "account_id = ?", []any{account}
	}
	return "account_id = ? AND project_id = ?", []any{account, project}
}

// CountRange counts the scope's rows (redelivered copies included) that
// occurred in [from, to).
func (s *Store) CountRange(ctx context.Context, sc Scope, from, to time.Time) (uint64, error) {
	if err := sc.check(); err != nil {
		return 0, err
	}
	var n uint64
	err := s.conn.QueryRow(ctx, "SELECT count() FROM "+s.table()+
		" WHERE account_id = ? AND project_id = ? AND occurred_at >= ? AND occurred_at < ?",
		sc.account, sc.project, from.UTC(), to.UTC()).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count rows of %s/%s: %w", sc.account, sc.project, err)
	}
	return n, nil
}

// DeleteBefore removes the scope's rows that occurred before t with a
// mutation and waits until the mutation is done. t is applied at whole
// seconds, as every bound time is.
func (s *Store) DeleteBefore(ctx context.Context, sc Scope, t time.Time) error {
	if err := sc.check(); err != nil {
		return err
	}
	err := s.conn.Exec(ctx, "ALTER TABLE "+s.table()+
		" DELETE WHERE account_id = ? AND project_id = ? AND occurred_at < ?",
		sc.account, sc.project, t.UTC())
	if err != nil {
		return fmt.Errorf("delete rows of %s/%s: %w", sc.account, sc.project, err)
	}
	return s.waitMutations(ctx, s.table())
}

// waitMutations polls system.mutations until table has none pending. 18.16
// has no mutations_sync setting, so polling is the one way on every
// version.
func (s *Store) waitMutations(ctx context.Context, table string) error {
	db, name, _ := strings.Cut(table, ".")
	wait := 50 * time.Millisecond
	for {
		var pending uint64
		err := s.conn.QueryRow(ctx, `SELECT count() FROM system.mutations
WHERE database = ? AND table = ? AND is_done = 0`, db, name).Scan(&pending)
		if err != nil {
			return fmt.Errorf("wait for mutations of %s: %w", table, err)
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for mutations of %s: %d pending: %w", table, pending,
				ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// TablePurge is what a tenant purge did to one table.
type TablePurge struct {
	Table      string `json:"table"`
	Rows       uint64 `json:"rows"`
	Partitions int    `json:"partitions"`
	Mutation   bool   `json:"mutation,omitempty"` // rows removed by ALTER ... DELETE
}

// tenantTable is a table of the database that holds tenant rows.
type tenantTable struct {
	name         string // db.table
	hasProject   bool
	partitionKey []string // top-level elements of the partition key
}

// tenantTables lists the tables of the database with an account_id column,
// except the deletion log. (18.16 has no correlated subqueries, so the
// columns are read apart from the tables.)
func (s *Store) tenantTables(ctx context.Context) ([]tenantTable, error) {
	cols := map[string]map[string]bool{}
	rows, err := s.conn.Query(ctx, `SELECT table, name FROM system.columns
WHERE database = ? AND name IN ('account_id', 'project_id')`, s.db)
	if err != nil {
		return nil, fmt.Errorf("list tenant tables: %w", err)
	}
	for rows.Next() {
		var table, col string
		if err := rows.Scan(&table, &col); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list tenant tables: %w", err)
		}
		if cols[table] == nil {
			cols[table] = map[string]bool{}
		}
		cols[table][col] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tenant tables: %w", err)
	}

	rows, err = s.conn.Query(ctx, `SELECT name, partition_key FROM system.tables
WHERE database = ? AND engine LIKE '%MergeTree%' ORDER BY name`, s.db)
	if err != nil {
		return nil, fmt.Errorf("list tenant tables: %w", err)
	}
	defer rows.Close()
	var out []tenantTable
	for rows.Next() {
		var name, key string
		if err := rows.Scan(&name, &key); err != nil {
			return nil, fmt.Errorf("list tenant tables: %w", err)
		}
		if !cols[name]["account_id"] || s.db+"."+name == s.deletionsTable() {
			continue
		}
		out = append(out, tenantTable{name: s.db + "." + name,
			hasProject: cols[name]["project_id"], partitionKey: keyElements(key)})
	}
	return out, rows.Err()
}

// keyElements splits "(a, b, toYYYYMM(c))" into its top-level elements.
func keyElements(key string) []string {
	key = strings.TrimSpace(key)
	if strings.HasPrefix(key, "(") && strings.HasSuffix(key, ")") {
		key = key[1 : len(key)-1]
	}
	var out []string
	depth, start := 0, 0
	for i, c := range key {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, strings.TrimSpace(key[start:i]))
				start = i + 1
			}
		}
	}
	if rest := strings.TrimSpace(key[start:]); rest != "" {
		out = append(out, rest)
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// PurgeTenant removes every row of an account, or of one project of it
// when project is not empty, from every table of the database that has an
// account_id column (the deletion log excepted). A table whose partition
// key holds the tenant's ids loses whole partitions; any other table gets
// a mutation filtered on the ids. The returned counts are rows as stored,
// redelivered copies included.
func (s *Store) PurgeTenant(ctx context.Context, account, project string) ([]TablePurge,
	error) {
	if err := events.CheckID("account", account); err != nil {
		return nil, err
	}
	if project != "" {
		if err := events.CheckID("project", project); err != nil {
			return nil, err
		}
	}
	tables, err := s.tenantTables(ctx)
	if err != nil {
		return nil, err
	}
	var out []TablePurge
	for _, t := range tables {
		if project != "" && !t.hasProject {
			continue // account-level data stays while the account does
		}
		r, err := s.purgeTable(ctx, t, account, project)
		out = append(out, r)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func (s *Store) purgeTable(ctx context.Context, t tenantTable, account,
	project string) (TablePurge, error) {
	r := TablePurge{Table: t.name}
	cond, args := tenantCond(account, project)
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM "+t.name+" WHERE "+cond,
		args...).Scan(&r.Rows); err != nil {
		return r, fmt.Errorf("count tenant rows of %s: %w", t.name, err)
	}
	if r.Rows == 0 {
		return r, nil
	}

	byPartition := contains(t.partitionKey, "account_id") &&
		(project == "" || contains(t.partitionKey, "project_id"))
	if byPartition {
		ids, err := s.partitionIDs(ctx, t.name, cond, args)
		if err != nil {
			return r, err
		}
		for _, id := range ids {
			if err := s.dropTenantPartition(ctx, t.name, account, project, id); err != nil {
				return r, err
			}
			r.Partitions++
		}
	} else {
		r.Mutation = true
		if err := s.conn.Exec(ctx, "ALTER TABLE "+t.name+" DELETE WHERE "+cond,
			args...); err != nil {
			return r, fmt.Errorf("delete tenant rows of %s: %w", t.name, err)
		}
		if err := s.waitMutations(ctx, t.name); err != nil {
			return r, err
		}
	}

	var left uint64
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM "+t.name+" WHERE "+cond,
		args...).Scan(&left); err != nil {
		return r, fmt.Errorf("count tenant rows of %s: %w", t.name, err)
	}
	if left > 0 {
		return r, fmt.Errorf("purge %s: %d rows left (written during the purge?)", t.name, left)
	}
	return r, nil
}

func (s *Store) partitionIDs(ctx context.Context, table, cond string,
	args []any) ([]string, error) {
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT _partition_id FROM "+table+
		" WHERE "+cond+" ORDER BY _partition_id", args...)
	if err != nil {
		return nil, fmt.Errorf("tenant partitions of %s: %w", table, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("tenant partitions of %s: %w", table, err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// Deletion is one entry of the offboarding log.
type Deletion struct {
	At             time.Time
	Actor          string
	Account        string
	Project        string // empty when the whole account was removed
	Rows           uint64
	Partitions     uint64
	StreamMessages uint64
	Consumers      uint64
	PolicyFolders  uint64
	AlertKeys      uint64
	Detail         string // JSON: per-table counts and notes
}

// ErrNoActor is returned for a deletion without an actor.
var ErrNoActor = errors.New("store: deletion without an actor")

// RecordDeletion appends an entry to the offboarding log.
func (s *Store) RecordDeletion(ctx context.Context, d Deletion) error {
	if d.Actor == "" {
		return ErrNoActor
	}
	if err := events.CheckID("account", d.Account); err != nil {
		return err
	}
	b, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.deletionsTable()+
		" (deleted_at, actor, account_id, project_id, rows, partitions, stream_messages,"+
		" consumers, policy_folders, alert_keys, detail)")
	if err != nil {
		return fmt.Errorf("record deletion: %w", err)
	}
	defer b.Abort()
	if err := b.Append(d.At.UTC().Truncate(time.Second), d.Actor, d.Account, d.Project,
		d.Rows, d.Partitions, d.StreamMessages, d.Consumers, d.PolicyFolders, d.AlertKeys,
		d.Detail); err != nil {
		return fmt.Errorf("record deletion: %w", err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("record deletion: %w", err)
	}
	return nil
}

// Deletions returns the offboarding log of an account, newest first.
func (s *Store) Deletions(ctx context.Context, account string) ([]Deletion, error) {
	if err := events.CheckID("account", account); err != nil {
		return nil, err
	}
	rows, err := s.conn.Query(ctx, `SELECT deleted_at, actor, account_id, project_id, rows,
    partitions, stream_messages, consumers, policy_folders, alert_keys, detail
FROM `+s.deletionsTable()+` WHERE account_id = ? ORDER BY deleted_at DESC`, account)
	if err != nil {
		return nil, fmt.Errorf("read deletions: %w", err)
	}
	defer rows.Close()
	var out []Deletion
	for rows.Next() {
		var d Deletion
		if err := rows.Scan(&d.At, &d.Actor, &d.Account, &d.Project, &d.Rows, &d.Partitions,
			&d.StreamMessages, &d.Consumers, &d.PolicyFolders, &d.AlertKeys,
			&d.Detail); err != nil {
			return nil, fmt.Errorf("read deletions: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}
