package tenant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/guardwatch/observatory/internal/events"
)

// Key names one project of one account. Project ids are unique only inside
// their account, so a project is always named by both.
type Key struct {
	Account string
	Project string
}

// NewKey checks both ids.
func NewKey(account, project string) (Key, error) {
	if err := events.CheckID("account", account); err != nil {
		return Key{}, err
	}
	if err := events.CheckID("project", project); err != nil {
		return Key{}, err
	}
	return Key{Account: account, Project: project}, nil
}

// String returns "account/project".
func (k Key) String() string { return k.Account + "/" + k.Project }

// Folder layout of the policy tree that the registry reads.
const (
	projectsDir = "projects"
	projectFile = "project.json"
)

// projectMeta is the part of project.json the registry reads. The policy
// loader reads the same file strictly; the registry does not, so a field
// added for the loader does not stop quotas and retention.
type projectMeta struct {
	Tier string `json:"tier"`
}

// Snapshot is one consistent view of tiers and projects. It is never
// changed after it is built; a reload builds a new one.
type Snapshot struct {
	Tiers    *Tiers
	Projects map[Key]string // project -> tier name
	Loaded   time.Time
}

// Tier returns the tier of a project, or the default tier and false when
// the project has no folder in the policy tree.
func (s *Snapshot) Tier(k Key) (*Tier, bool) {
	if name, ok := s.Projects[k]; ok {
		return s.Tiers.Tiers[name], true
	}
	return s.Tiers.Tiers[s.Tiers.Default], false
}

// Keys returns every provisioned project in order.
func (s *Snapshot) Keys() []Key {
	out := make([]Key, 0, len(s.Projects))
	for k := range s.Projects {
		out = append(out, k)
	}
	sortKeys(out)
	return out
}

// Accounts returns every account with a provisioned project, in order.
func (s *Snapshot) Accounts() []string {
	var out []string
	for _, k := range s.Keys() {
		if len(out) == 0 || out[len(out)-1] != k.Account {
			out = append(out, k.Account)
		}
	}
	return out
}

// AccountProjects returns the provisioned projects of one account in order.
func (s *Snapshot) AccountProjects(account string) []string {
	var out []string
	for k := range s.Projects {
		if k.Account == account {
			out = append(out, k.Project)
		}
	}
	sort.Strings(out)
	return out
}

func sortKeys(ks []Key) {
	sort.Slice(ks, func(i, j int) bool {
		if ks[i].Account != ks[j].Account {
			return ks[i].Account < ks[j].Account
		}
		return ks[i].Project < ks[j].Project
	})
}

// Registry keeps the current Snapshot of a tiers file and a policy folder
// and reloads it on request or on an interval. A reload that meets any
// error keeps the previous snapshot and returns (and logs) the error, as
// the policy loader does, so a half-written file never changes a quota.
type Registry struct {
	tiersFile  string
	policyRoot string
	log        *slog.Logger

	cur  atomic.Pointer[Snapshot]
	mu   sync.Mutex // serialises reloads and guards subs
	subs []func(old, cur *Snapshot)
}

// OpenRegistry loads the tiers file and the projects of the policy folder.
func OpenRegistry(tiersFile, policyRoot string, log *slog.Logger) (*Registry, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &Registry{tiersFile: tiersFile, policyRoot: policyRoot,
		log: log.With("component", "tenants")}
	s, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cur.Store(s)
	return r, nil
}

// PolicyRoot returns the policy folder the registry reads.
func (r *Registry) PolicyRoot() string { return r.policyRoot }

// Snapshot returns the current view; callers must not change it.
func (r *Registry) Snapshot() *Snapshot { return r.cur.Load() }

// OnChange registers f to run after every reload that changed a tier or
// the set of projects. f runs on the reloading goroutine.
func (r *Registry) OnChange(f func(old, cur *Snapshot)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.subs = append(r.subs, f)
}

// Reload reads both sources again. On error the previous snapshot stays.
func (r *Registry) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, err := r.load()
	if err != nil {
		r.log.Error("tenant reload failed; previous tiers stay in force", "err", err)
		return err
	}
	old := r.cur.Swap(s)
	if changes := diff(old, s); len(changes) > 0 {
		for _, c := range changes {
			r.log.Info("tenant change", "change", c)
		}
		for _, f := range r.subs {
			f(old, s)
		}
	}
	return nil
}

// Watch reloads every interval until ctx ends. Files are small, so a
// periodic read is cheaper than it sounds and also works on mounts that
// report no change events.
func (r *Registry) Watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = r.Reload() // logged by Reload
		}
	}
}

func (r *Registry) load() (*Snapshot, error) {
	tiers, err := LoadTiers(r.tiersFile)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, name := range tiers.Names() {
		dir := filepath.Join(r.policyRoot, filepath.FromSlash(tiers.Tiers[name].Baseline))
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			errs = append(errs, fmt.Errorf("tier %s: baseline folder %s is missing", name, dir))
		}
	}
	projects, err := readProjects(r.policyRoot)
	if err != nil {
		errs = append(errs, err)
	}
	for k, tier := range projects {
		if _, ok := tiers.Tiers[tier]; !ok {
			errs = append(errs, fmt.Errorf("project %s: tier %q is not in %s", k, tier,
				r.tiersFile))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &Snapshot{Tiers: tiers, Projects: projects, Loaded: time.Now()}, nil
}

// readProjects reads the tier of every projects/<account>/<project>/.
func readProjects(root string) (map[Key]string, error) {
	out := map[Key]string{}
	base := filepath.Join(root, projectsDir)
	accounts, err := os.ReadDir(base)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read projects: %w", err)
	}
	var errs []error
	for _, a := range accounts {
		if !a.IsDir() || strings.HasPrefix(a.Name(), ".") {
			continue
		}
		projects, err := os.ReadDir(filepath.Join(base, a.Name()))
		if err != nil {
			errs = append(errs, fmt.Errorf("read projects of %s: %w", a.Name(), err))
			continue
		}
		for _, p := range projects {
			if !p.IsDir() || strings.HasPrefix(p.Name(), ".") {
				continue
			}
			k, err := NewKey(a.Name(), p.Name())
			if err != nil {
				errs = append(errs, fmt.Errorf("%s/%s: %w", a.Name(), p.Name(), err))
				continue
			}
			tier, err := readTier(filepath.Join(base, a.Name(), p.Name(), projectFile))
			if err != nil {
				errs = append(errs, fmt.Errorf("project %s: %w", k, err))
				continue
			}
			out[k] = tier
		}
	}
	return out, errors.Join(errs...)
}

func readTier(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var m projectMeta
	if err := json.NewDecoder(io.LimitReader(f, 1<<16)).Decode(&m); err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	if !events.ValidID(m.Tier) {
		return "", fmt.Errorf("%s: tier must be 1-64 characters of A-Z a-z 0-9 _ -", file)
	}
	return m.Tier, nil
}

// diff describes what changed between two snapshots, for the log.
func diff(old, cur *Snapshot) []string {
	var out []string
	if old == nil {
		return []string{"loaded"}
	}
	for _, name := range cur.Tiers.Names() {
		o, ok := old.Tiers.Tiers[name]
		if !ok {
			out = append(out, "tier "+name+" added")
		} else if *o != *cur.Tiers.Tiers[name] {
			out = append(out, "tier "+name+" changed")
		}
	}
	for _, name := range old.Tiers.Names() {
		if _, ok := cur.Tiers.Tiers[name]; !ok {
			out = append(out, "tier "+name+" removed")
		}
	}
	if old.Tiers.Default != cur.Tiers.Default {
		out = append(out, "default tier "+old.Tiers.Default+" -> "+cur.Tiers.Default)
	}
	for _, k := range cur.Keys() {
		switch o, ok := old.Projects[k]; {
		case !ok:
			out = append(out, "project "+k.String()+" added on "+cur.Projects[k])
		case o != cur.Projects[k]:
			out = append(out, "project "+k.String()+" tier "+o+" -> "+cur.Projects[k])
		}
	}
	for _, k := range old.Keys() {
		if _, ok := cur.Projects[k]; !ok {
			out = append(out, "project "+k.String()+" removed")
		}
	}
	return out
}
