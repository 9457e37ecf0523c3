package tenant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/store"
)

// Offboarder removes a project, or a whole account, everywhere the
// pipeline keeps it: the policy folder, the stream's messages and the
// consumers that read only that tenant, every ClickHouse table with an
// account_id column, the alert subscriptions and the producer key. Each
// offboarding is appended to the deletion log.
type Offboarder struct {
	Store      *store.Store
	JS         jetstream.JetStream // nil skips the broker (reported as a note)
	PolicyRoot string
	CredsDir   string // producer seeds; "" skips them
	// AlertBuckets are KV buckets whose keys start "<account>.<project>.":
	// alert subscriptions, their state and history. A bucket that does not
	// exist is skipped with a note.
	AlertBuckets []string
	// SubjectPrefixes are further subject prefixes under which a tenant's
	// messages live as <prefix><account>.<project>[.…] in any stream (the
	// alert outbox, say); guard.v1. is always purged.
	SubjectPrefixes []string
	// Settle is how long to wait after the broker purge before the
	// ClickHouse purge is checked a second time, so that a batch the
	// ingester had in hand is caught too; default 2s.
	Settle time.Duration
	Log    *slog.Logger
}

// StreamPurge is what the purge did to one stream.
type StreamPurge struct {
	Stream   string `json:"stream"`
	Subject  string `json:"subject"`
	Messages uint64 `json:"messages"`
}

// OffboardReport says what an offboarding removed.
type OffboardReport struct {
	Account       string             `json:"account_id"`
	Project       string             `json:"project_id,omitempty"` // empty: the whole account
	Actor         string             `json:"actor"`
	At            time.Time          `json:"at"`
	Tables        []store.TablePurge `json:"tables"`
	Streams       []StreamPurge      `json:"streams"`
	Consumers     []string           `json:"consumers"`
	PolicyFolders int                `json:"policy_folders"`
	ProducerKey   bool               `json:"producer_key_removed"`
	AlertKeys     int                `json:"alert_keys"`
	Notes         []string           `json:"notes,omitempty"`
}

// Rows is the number of rows removed from every table.
func (r OffboardReport) Rows() (rows, partitions uint64) {
	for _, t := range r.Tables {
		rows += t.Rows
		partitions += uint64(t.Partitions)
	}
	return rows, partitions
}

// Messages is the number of stream messages purged.
func (r OffboardReport) Messages() uint64 {
	var n uint64
	for _, s := range r.Streams {
		n += s.Messages
	}
	return n
}

// ErrNoActor is returned when an offboarding names no actor.
var ErrNoActor = errors.New("offboard: the actor is required")

// Offboard removes the tenant and records it. project "" removes the whole
// account. It stops at the first failure, with what was done so far in the
// report; running it again finishes the job.
//
// Revoke the producer's credentials first (regenerate the NATS users and
// reload the server): events published during or after an offboarding are
// stored again.
func (o *Offboarder) Offboard(ctx context.Context, actor, account, project string) (
	OffboardReport, error) {
	rep := OffboardReport{Account: account, Project: project, Actor: actor,
		At: time.Now().UTC()}
	if actor == "" {
		return rep, ErrNoActor
	}
	if err := events.CheckID("account", account); err != nil {
		return rep, err
	}
	if project != "" {
		if err := events.CheckID("project", project); err != nil {
			return rep, err
		}
	}
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "offboard", "account_id", account, "project_id", project)
	settle := o.Settle
	if settle <= 0 {
		settle = 2 * time.Second
	}

	// Policies first: the observatory denies the tenant from its next
	// reload on, and the ingester stops its lane.
	removed, err := removePolicies(o.PolicyRoot, account, project)
	if err != nil {
		return rep, err
	}
	if removed {
		rep.PolicyFolders = 1
	}

	if o.JS == nil {
		rep.Notes = append(rep.Notes, "broker: no NATS connection given; stream not purged")
	} else {
		if err := o.purgeBroker(ctx, &rep); err != nil {
			return rep, err
		}
		if err := o.purgeAlerts(ctx, &rep); err != nil {
			return rep, err
		}
	}

	tables, err := o.Store.PurgeTenant(ctx, account, project)
	rep.Tables = tables
	if err != nil {
		return rep, err
	}
	// A batch the ingester held when the stream was purged may land now.
	select {
	case <-ctx.Done():
		return rep, ctx.Err()
	case <-time.After(settle):
	}
	again, err := o.Store.PurgeTenant(ctx, account, project)
	rep.Tables = mergePurges(rep.Tables, again)
	if err != nil {
		return rep, err
	}

	if o.CredsDir != "" && project == "" {
		if rep.ProducerKey, err = RemoveProducerKey(o.CredsDir, account); err != nil {
			return rep, err
		}
	}
	if project != "" {
		rep.Notes = append(rep.Notes, "producer: regenerate the account's NATS user "+
			"(tenants nats-user --account "+account+") and reload the server, so that "+
			"it may no longer publish for "+project)
	} else {
		rep.Notes = append(rep.Notes, "producer: remove the account's user from the NATS "+
			"configuration and reload the server")
	}

	if err := o.record(ctx, rep); err != nil {
		return rep, err
	}
	rows, parts := rep.Rows()
	log.Info("offboarded", "actor", actor, "rows", rows, "partitions", parts,
		"stream_messages", rep.Messages(), "consumers", len(rep.Consumers))
	return rep, nil
}

// tenantSubjects returns the subject filters that hold the tenant's
// messages under each prefix: <prefix><account>.> for an account, and
// <prefix><account>.<project> with <prefix><account>.<project>.> for a
// project.
func tenantSubjects(prefixes []string, account, project string) []string {
	var out []string
	for _, p := range prefixes {
		if project == "" {
			out = append(out, p+account+".>")
		} else {
			out = append(out, p+account+"."+project, p+account+"."+project+".>")
		}
	}
	return out
}

// purgeBroker purges the tenant's subjects from every stream that holds
// any, and deletes the consumers that read only the tenant's subjects.
func (o *Offboarder) purgeBroker(ctx context.Context, rep *OffboardReport) error {
	filters := tenantSubjects(append([]string{"guard.v1."}, o.SubjectPrefixes...),
		rep.Account, rep.Project)
	names := o.JS.StreamNames(ctx)
	var streams []string
	for n := range names.Name() {
		streams = append(streams, n)
	}
	if err := names.Err(); err != nil {
		return fmt.Errorf("list streams: %w", err)
	}
	for _, name := range streams {
		st, err := o.JS.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("open stream %s: %w", name, err)
		}
		for _, filter := range filters {
			n, err := countSubject(ctx, st, filter)
			if err != nil {
				return err
			}
			if n == 0 {
				continue
			}
			if err := st.Purge(ctx, jetstream.WithPurgeSubject(filter)); err != nil {
				return fmt.Errorf("purge %s from stream %s: %w", filter, name, err)
			}
			if left, err := countSubject(ctx, st, filter); err != nil {
				return err
			} else if left > 0 {
				return fmt.Errorf("purge %s from stream %s: %d messages left", filter, name,
					left)
			}
			rep.Streams = append(rep.Streams, StreamPurge{Stream: name, Subject: filter,
				Messages: n})
		}

		cl := st.ListConsumers(ctx)
		var drop []string
		for ci := range cl.Info() {
			if readsOnly(ci.Config, filters) {
				drop = append(drop, ci.Name)
			}
		}
		if err := cl.Err(); err != nil {
			return fmt.Errorf("list consumers of %s: %w", name, err)
		}
		for _, c := range drop {
			err := st.DeleteConsumer(ctx, c)
			if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				return fmt.Errorf("delete consumer %s of %s: %w", c, name, err)
			}
			rep.Consumers = append(rep.Consumers, name+"/"+c)
		}
	}
	return nil
}

// countSubject counts the messages of st under filter.
func countSubject(ctx context.Context, st jetstream.Stream, filter string) (uint64, error) {
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0, fmt.Errorf("count %s in stream: %w", filter, err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n, nil
}

// readsOnly reports whether a consumer is filtered to the tenant's subjects
// only; a consumer that also reads other tenants is kept.
func readsOnly(c jetstream.ConsumerConfig, tenantFilters []string) bool {
	filters := append([]string(nil), c.FilterSubjects...)
	if c.FilterSubject != "" {
		filters = append(filters, c.FilterSubject)
	}
	if len(filters) == 0 {
		return false
	}
	for _, f := range filters {
		if !underAny(f, tenantFilters) {
			return false
		}
	}
	return true
}

// underAny reports whether subject filter f lies within one of filters,
// each a literal subject or one ending in ".>".
func underAny(f string, filters []string) bool {
	for _, t := range filters {
		if base, ok := strings.CutSuffix(t, ">"); ok {
			if strings.HasPrefix(f, base) {
				return true
			}
		} else if f == t {
			return true
		}
	}
	return false
}

// purgeAlerts deletes the tenant's keys from the alert buckets. Keys are
// purged through the bucket, so that watchers (the alerter's caches) see
// them go, and then the purge markers, which still name the tenant, are
// removed from the bucket's stream.
func (o *Offboarder) purgeAlerts(ctx context.Context, rep *OffboardReport) error {
	if len(o.AlertBuckets) == 0 {
		rep.Notes = append(rep.Notes, "alerts: no alert buckets configured; none removed")
		return nil
	}
	keyFilter := rep.Account + ".>"
	if rep.Project != "" {
		keyFilter = rep.Account + "." + rep.Project + ".>"
	}
	for _, bucket := range o.AlertBuckets {
		kv, err := o.JS.KeyValue(ctx, bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			rep.Notes = append(rep.Notes, "alerts: bucket "+bucket+" does not exist")
			continue
		}
		if err != nil {
			return fmt.Errorf("open alert bucket %s: %w", bucket, err)
		}
		keys, err := kv.ListKeysFiltered(ctx, keyFilter)
		if err != nil {
			return fmt.Errorf("list keys of %s: %w", bucket, err)
		}
		var all []string
		for k := range keys.Keys() {
			all = append(all, k)
		}
		for _, k := range all {
			if err := kv.Purge(ctx, k); err != nil {
				return fmt.Errorf("remove %s from %s: %w", k, bucket, err)
			}
			rep.AlertKeys++
		}
		st, err := o.JS.Stream(ctx, "KV_"+bucket)
		if err != nil {
			return fmt.Errorf("open stream of bucket %s: %w", bucket, err)
		}
		subject := "$KV." + bucket + "." + keyFilter
		if err := st.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
			return fmt.Errorf("remove purge markers of %s: %w", bucket, err)
		}
	}
	return nil
}

// mergePurges adds the counts of a second purge pass to the first.
func mergePurges(first, second []store.TablePurge) []store.TablePurge {
	idx := map[string]int{}
	for i, t := range first {
		idx[t.Table] = i
	}
	for _, t := range second {
		i, ok := idx[t.Table]
		if !ok {
			first = append(first, t)
			continue
		}
		first[i].Rows += t.Rows
		first[i].Partitions += t.Partitions
		first[i].Mutation = first[i].Mutation || t.Mutation
	}
	return first
}

func (o *Offboarder) record(ctx context.Context, rep OffboardReport) error {
	detail, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("record offboarding: %w", err)
	}
	rows, parts := rep.Rows()
	return o.Store.RecordDeletion(ctx, store.Deletion{
		At: rep.At, Actor: rep.Actor, Account: rep.Account, Project: rep.Project,
		Rows: rows, Partitions: parts, StreamMessages: rep.Messages(),
		Consumers: uint64(len(rep.Consumers)), PolicyFolders: uint64(rep.PolicyFolders),
		AlertKeys: uint64(rep.AlertKeys), Detail: string(detail),
	})
}
