package alert

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/store"
)

// ErrNotFound is returned for a subscription that does not exist in the
// scope, and for an id that could not name one.
var ErrNotFound = errors.New("alert: subscription not found")

// Store keeps subscriptions and their recent deliveries in JetStream KV
// buckets. Every method takes the store.Scope an allowed authorization
// decision handed out, so no call reaches another tenant's keys.
type Store struct {
	subs       jetstream.KeyValue
	deliveries jetstream.KeyValue
	guard      *Guard
	now        func() time.Time
}

// StoreConfig configures a Store.
type StoreConfig struct {
	// Guard checks webhook targets when a subscription is saved; required.
	Guard *Guard
	// Replicas of the buckets in a clustered JetStream; default 1.
	Replicas int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// OpenStore creates or updates the subscription and delivery buckets and
// returns a store over them.
func OpenStore(ctx context.Context, js jetstream.JetStream, cfg StoreConfig) (*Store, error) {
	if cfg.Guard == nil {
		return nil, errors.New("open alert store: a guard is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := max(cfg.Replicas, 1)
	subs, err := ensureKV(ctx, js, subsConfig(r))
	if err != nil {
		return nil, fmt.Errorf("open alert store: %w", err)
	}
	dels, err := ensureKV(ctx, js, deliveriesConfig(r))
	if err != nil {
		return nil, fmt.Errorf("open alert store: %w", err)
	}
	return &Store{subs: subs, deliveries: dels, guard: cfg.Guard, now: cfg.Now}, nil
}

// Guard returns the guard that checks targets.
func (s *Store) Guard() *Guard { return s.guard }

// subKey is <account>.<project>.<id>. Every token follows the id rules, so
// no token can add a level or a wildcard to the key.
func subKey(sc store.Scope, id string) (string, error) {
	if !sc.Valid() {
		return "", store.ErrNoScope
	}
	if !events.ValidID(id) {
		return "", ErrNotFound
	}
	return sc.Account() + "." + sc.Project() + "." + id, nil
}

// List returns the subscriptions of the scope's project, by name.
func (s *Store) List(ctx context.Context, sc store.Scope) ([]Subscription, error) {
	if !sc.Valid() {
		return nil, store.ErrNoScope
	}
	keys, err := s.keys(ctx, sc)
	if err != nil {
		return nil, err
	}
	out := make([]Subscription, 0, len(keys))
	for _, k := range keys {
		e, err := s.subs.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("get subscription %s: %w", k, err)
		}
		rec, err := decodeRecord(e.Value())
		if err != nil {
			return nil, fmt.Errorf("decode subscription %s: %w", k, err)
		}
		out = append(out, rec.Subscription)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

func (s *Store) keys(ctx context.Context, sc store.Scope) ([]string, error) {
	kl, err := s.subs.ListKeysFiltered(ctx, sc.Account()+"."+sc.Project()+".*")
	if err != nil {
		return nil, fmt.Errorf("list subscriptions of %s/%s: %w", sc.Account(), sc.Project(), err)
	}
	var keys []string
	for k := range kl.Keys() {
		keys = append(keys, k)
	}
	return keys, nil
}

// Get returns one subscription of the scope's project, or ErrNotFound.
func (s *Store) Get(ctx context.Context, sc store.Scope, id string) (Subscription, error) {
	rec, _, err := s.load(ctx, sc, id)
	if err != nil {
		return Subscription{}, err
	}
	return rec.Subscription, nil
}

// load returns the stored record, with the secret, and its revision.
func (s *Store) load(ctx context.Context, sc store.Scope, id string) (*record, uint64, error) {
	key, err := subKey(sc, id)
	if err != nil {
		return nil, 0, err
	}
	e, err := s.subs.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("get subscription %s: %w", key, err)
	}
	rec, err := decodeRecord(e.Value())
	if err != nil {
		return nil, 0, fmt.Errorf("decode subscription %s: %w", key, err)
	}
	if rec.AccountID != sc.Account() || rec.ProjectID != sc.Project() || rec.ID != id {
		return nil, 0, fmt.Errorf("subscription %s: stored tenant differs from its key", key)
	}
	return rec, e.Revision(), nil
}

// Create saves a new subscription and returns it with its secret. The
// secret is returned here only; nothing reads it back out. A *SpecError
// reports a spec its author must fix, including a target the guard
// refuses.
func (s *Store) Create(ctx context.Context, sc store.Scope, spec Spec,
	by string) (Subscription, string, error) {
	if !sc.Valid() {
		return Subscription{}, "", store.ErrNoScope
	}
	spec, m, err := s.check(ctx, spec)
	if err != nil {
		return Subscription{}, "", err
	}
	keys, err := s.keys(ctx, sc)
	if err != nil {
		return Subscription{}, "", err
	}
	if len(keys) >= MaxPerProject {
		return Subscription{}, "", specErr("", "a project may have at most %d subscriptions",
			MaxPerProject)
	}

	now := s.now().UTC().Truncate(time.Millisecond)
	rec := &record{Subscription: Subscription{ID: newID(), AccountID: sc.Account(),
		ProjectID: sc.Project(), Spec: spec, Version: 1, CreatedAt: now, UpdatedAt: now,
		CreatedBy: by, match: m}, Secret: newSecret()}
	rec.secret = rec.Secret
	key, _ := subKey(sc, rec.ID)
	data, err := json.Marshal(rec)
	if err != nil {
		return Subscription{}, "", fmt.Errorf("encode subscription: %w", err)
	}
	if _, err := s.subs.Create(ctx, key, data); err != nil {
		return Subscription{}, "", fmt.Errorf("create subscription %s: %w", key, err)
	}
	return rec.Subscription, rec.Secret, nil
}

// Update replaces the spec of a subscription; its id, secret and history
// stay. It returns ErrNotFound when the subscription does not exist.
func (s *Store) Update(ctx context.Context, sc store.Scope, id string,
	spec Spec) (Subscription, error) {
	spec, m, err := s.check(ctx, spec)
	if err != nil {
		return Subscription{}, err
	}
	for range 5 {
		rec, rev, err := s.load(ctx, sc, id)
		if err != nil {
			return Subscription{}, err
		}
		rec.Spec, rec.match = spec, m
		rec.Version++
		rec.UpdatedAt = s.now().UTC().Truncate(time.Millisecond)
		data, err := json.Marshal(rec)
		if err != nil {
			return Subscription{}, fmt.Errorf("encode subscription: %w", err)
		}
		key, _ := subKey(sc, id)
		_, err = s.subs.Update(ctx, key, data, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // saved by someone else meanwhile: apply on top
		}
		if err != nil {
			return Subscription{}, fmt.Errorf("update subscription %s: %w", key, err)
		}
		return rec.Subscription, nil
	}
	return Subscription{}, fmt.Errorf("update subscription %s: too many concurrent saves", id)
}

// Delete removes a subscription and its delivery history. It returns
// ErrNotFound when the subscription does not exist.
func (s *Store) Delete(ctx context.Context, sc store.Scope, id string) error {
	if _, _, err := s.load(ctx, sc, id); err != nil {
		return err
	}
	key, _ := subKey(sc, id)
	if err := s.subs.Purge(ctx, key); err != nil {
		return fmt.Errorf("delete subscription %s: %w", key, err)
	}
	if err := s.deliveries.Purge(ctx, key); err != nil &&
		!errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete deliveries of %s: %w", key, err)
	}
	return nil
}

// check normalizes the spec and asks the guard about its target.
func (s *Store) check(ctx context.Context, spec Spec) (Spec, filter.Filter, error) {
	spec, m, err := normalize(spec)
	if err != nil {
		return spec, m, err
	}
	if spec.Channel.Type == ChannelWebhook || spec.Channel.Type == ChannelSlack {
		if err := s.guard.CheckURL(ctx, spec.Channel.URL); err != nil {
			return spec, m, err
		}
	}
	return spec, m, nil
}

// decodeRecord reads a stored subscription and compiles its match.
func decodeRecord(b []byte) (*record, error) {
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, err
	}
	m, err := compile(rec.Match)
	if err != nil {
		return nil, err
	}
	rec.secret, rec.match = rec.Secret, m
	return &rec, nil
}
