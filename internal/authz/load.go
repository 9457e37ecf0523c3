package authz

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"unicode"

	cedar "github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"

	"github.com/guardwatch/observatory/internal/events"
)

// Folder and file names of a policy tree. See policies/README.md.
const (
	dirGlobal      = "global"
	dirRoles       = "roles"
	dirTiers       = "tiers"
	dirProjects    = "projects"
	projectFile    = "project.json"
	policyExt      = ".cedar"
	maxPolicyBytes = 1 << 20
	maxIDAnnot     = 128
)

// tenantKey names one project of one account.
type tenantKey struct{ account, project string }

// projectPolicies is the compiled policy set of one project. Each project
// has its own set, so no policy of one project can decide another's request.
type projectPolicies struct {
	tier   string
	region string
	set    *cedar.PolicySet
}

// tree is one loaded and validated policy folder. It is never changed after
// loading; a reload builds a new tree and swaps it in whole.
type tree struct {
	projects map[tenantKey]*projectPolicies
	files    int
}

// namedPolicy is a parsed policy with the id it gets in every set.
type namedPolicy struct {
	id     cedar.PolicyID
	policy *cedar.Policy
	file   string
}

// projectMeta is the content of a project's project.json.
type projectMeta struct {
	// Tier names a folder under tiers/ whose policies are the baseline.
	Tier string `json:"tier"`
	// Region is optional; it reaches Cedar as context.region.
	Region string `json:"region,omitempty"`
}

// loader collects every problem of a tree so one load reports them all.
type loader struct {
	root  string
	v     *validate.Validator
	errs  []error
	files int
}

func (l *loader) fail(format string, args ...any) {
	l.errs = append(l.errs, fmt.Errorf(format, args...))
}

// loadTree reads and validates the policy folder at root.
func loadTree(root string) (*tree, error) {
	v, err := newValidator()
	if err != nil {
		return nil, err
	}
	l := &loader{root: root, v: v}
	if _, err := os.Stat(root); err != nil {
		return nil, fmt.Errorf("open policy folder: %w", err)
	}

	global := l.readPolicyDir(dirGlobal, true)
	if len(global) == 0 && len(l.errs) == 0 {
		l.fail("%s: no policies; the global invariants are required", dirGlobal)
	}
	roles := l.readPolicyDir(dirRoles, false)
	tiers := l.readTiers()
	t := &tree{projects: map[tenantKey]*projectPolicies{}}

	bases := map[string][]namedPolicy{}
	for tier, tierPolicies := range tiers {
		base := append(append(append([]namedPolicy{}, global...), roles...), tierPolicies...)
		if l.checkUnique(base, nil) {
			bases[tier] = base
		}
	}
	for key, proj := range l.readProjects() {
		base, ok := bases[proj.meta.Tier]
		if _, known := tiers[proj.meta.Tier]; !known {
			l.fail("%s: unknown tier %q (no folder %s/%s)",
				proj.metaFile, proj.meta.Tier, dirTiers, proj.meta.Tier)
			continue
		}
		if !ok || !l.checkUnique(proj.policies, base) {
			continue
		}
		set := cedar.NewPolicySet()
		for _, np := range base {
			set.Add(np.id, np.policy)
		}
		for _, np := range proj.policies {
			set.Add(np.id, np.policy)
		}
		t.projects[key] = &projectPolicies{
			tier: proj.meta.Tier, region: proj.meta.Region, set: set,
		}
	}
	t.files = l.files
	if len(l.errs) > 0 {
		return nil, errors.Join(l.errs...)
	}
	return t, nil
}

// checkUnique reports ids of add that repeat within add or appear in base.
// PolicySet.Add replaces a policy of the same id, so a duplicate could let a
// project file silently replace a global invariant.
func (l *loader) checkUnique(add, base []namedPolicy) bool {
	seen := make(map[cedar.PolicyID]string, len(add)+len(base))
	for _, np := range base {
		seen[np.id] = np.file
	}
	ok := true
	for _, np := range add {
		if prev, dup := seen[np.id]; dup {
			l.fail("%s: policy id %q already used in %s", np.file, np.id, prev)
			ok = false
			continue
		}
		seen[np.id] = np.file
	}
	return ok
}

// readTiers returns the policies of each tier folder.
func (l *loader) readTiers() map[string][]namedPolicy {
	out := map[string][]namedPolicy{}
	entries, err := l.list(dirTiers, true)
	if err != nil {
		l.errs = append(l.errs, err)
		return out
	}
	for _, e := range entries {
		if !e.dir {
			continue
		}
		if !events.ValidID(e.name) {
			l.fail("%s/%s: tier name must be 1-64 characters of A-Z a-z 0-9 _ -",
				dirTiers, e.name)
			continue
		}
		out[e.name] = l.readPolicyDir(path.Join(dirTiers, e.name), true)
	}
	return out
}

// loadedProject is a project folder before it is compiled.
type loadedProject struct {
	meta     projectMeta
	metaFile string
	policies []namedPolicy
}

// readProjects reads projects/<account>/<project>/ folders.
func (l *loader) readProjects() map[tenantKey]loadedProject {
	out := map[tenantKey]loadedProject{}
	accounts, err := l.list(dirProjects, false)
	if err != nil {
		l.errs = append(l.errs, err)
		return out
	}
	for _, a := range accounts {
		if !a.dir {
			continue
		}
		accDir := path.Join(dirProjects, a.name)
		if !events.ValidID(a.name) {
			l.fail("%s: account id must be 1-64 characters of A-Z a-z 0-9 _ -", accDir)
			continue
		}
		projects, err := l.list(accDir, true)
		if err != nil {
			l.errs = append(l.errs, err)
			continue
		}
		for _, p := range projects {
			if !p.dir {
				continue
			}
			projDir := path.Join(accDir, p.name)
			if !events.ValidID(p.name) {
				l.fail("%s: project id must be 1-64 characters of A-Z a-z 0-9 _ -", projDir)
				continue
			}
			lp, ok := l.readProject(projDir)
			if ok {
				out[tenantKey{account: a.name, project: p.name}] = lp
			}
		}
	}
	return out
}

func (l *loader) readProject(dir string) (loadedProject, bool) {
	metaFile := path.Join(dir, projectFile)
	lp := loadedProject{metaFile: metaFile}
	b, err := l.read(metaFile)
	if err != nil {
		l.errs = append(l.errs, err)
		return lp, false
	}
	if err := decodeStrict(b, &lp.meta); err != nil {
		l.fail("%s: %w", metaFile, err)
		return lp, false
	}
	if lp.meta.Region != "" && !events.ValidID(lp.meta.Region) {
		l.fail("%s: region must be 1-64 characters of A-Z a-z 0-9 _ -", metaFile)
		return lp, false
	}
	n := len(l.errs)
	lp.policies = l.readPolicyDir(dir, true)
	return lp, len(l.errs) == n
}

// decodeStrict decodes one JSON object, refusing unknown fields and any
// trailing data, so a typo in a field name is an error rather than a default.
func decodeStrict(b []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("decode: trailing data after the object")
	}
	return nil
}

// readPolicyDir parses every .cedar file of one folder, in name order.
func (l *loader) readPolicyDir(dir string, required bool) []namedPolicy {
	entries, err := l.list(dir, required)
	if err != nil {
		l.errs = append(l.errs, err)
		return nil
	}
	var out []namedPolicy
	for _, e := range entries {
		if e.dir || !strings.HasSuffix(e.name, policyExt) {
			continue
		}
		out = append(out, l.readPolicyFile(path.Join(dir, e.name))...)
	}
	return out
}

// inputPos matches the position prefix of a cedar parse error, which names
// no file.
var inputPos = regexp.MustCompile(`<input>:(\d+):(\d+)`)

// readPolicyFile parses and validates one .cedar file. Policies are named by
// their @id annotation, else "<file>:<index>".
func (l *loader) readPolicyFile(rel string) []namedPolicy {
	b, err := l.read(rel)
	if err != nil {
		l.errs = append(l.errs, err)
		return nil
	}
	l.files++
	list, err := cedar.NewPolicyListFromBytes(rel, b)
	if err != nil {
		msg := err.Error()
		if m := inputPos.FindStringSubmatch(msg); m != nil {
			msg = inputPos.ReplaceAllString(msg, rel+":$1:$2")
			l.fail("%s:%s: %s", rel, m[1], msg)
		} else {
			l.fail("%s: %s", rel, msg)
		}
		return nil
	}
	out := make([]namedPolicy, 0, len(list))
	for i, p := range list {
		line := p.Position().Line
		id := cedar.PolicyID(fmt.Sprintf("%s:%d", rel, i))
		if v, ok := p.Annotations()["id"]; ok {
			if !validAnnotID(string(v)) {
				l.fail("%s:%d: @id must be 1-%d printable characters without spaces",
					rel, line, maxIDAnnot)
				continue
			}
			id = cedar.PolicyID(v)
		}
		if err := validatePolicy(l.v, id, p); err != nil {
			l.fail("%s:%d: policy %s does not match the schema: %s",
				rel, line, id, validationText(err))
			continue
		}
		out = append(out, namedPolicy{id: id, policy: p, file: rel})
	}
	return out
}

// Parts of validator messages that repeat what the load error already says.
var (
	forPolicy = regexp.MustCompile("for policy `[^`]*`, ")
	forAction = regexp.MustCompile(` for ` + Namespace + `::Action::"[^"]*"`)
)

// validationText shortens a validator error: the validator repeats one
// problem per action and names the policy the caller already names.
func validationText(err error) string {
	var out []string
	for _, line := range strings.Split(err.Error(), "\n") {
		line = forAction.ReplaceAllString(forPolicy.ReplaceAllString(line, ""), "")
		if line != "" && !slices.Contains(out, line) {
			out = append(out, line)
		}
	}
	msg := strings.Join(out, "; ")
	if strings.Contains(msg, "in context") {
		msg += " (token labels are optional: test them with `has` before reading them)"
	}
	return msg
}

func validAnnotID(s string) bool {
	if s == "" || len(s) > maxIDAnnot {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

// read returns a file of the tree, bounded in size.
func (l *loader) read(rel string) ([]byte, error) {
	f, err := os.Open(filepath.Join(l.root, filepath.FromSlash(rel)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPolicyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: read: %w", rel, err)
	}
	if len(b) > maxPolicyBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", rel, maxPolicyBytes)
	}
	return b, nil
}

// entry is a folder entry with symlinks resolved, so trees mounted from
// config maps (which link every name) load like plain folders.
type entry struct {
	name string
	dir  bool
}

// list returns the visible entries of a folder in name order. Names that
// start with a dot (editor swap files, config map internals) are skipped.
func (l *loader) list(rel string, required bool) ([]entry, error) {
	full := filepath.Join(l.root, filepath.FromSlash(rel))
	des, err := os.ReadDir(full)
	if errors.Is(err, os.ErrNotExist) && !required {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	out := make([]entry, 0, len(des))
	for _, de := range des {
		if strings.HasPrefix(de.Name(), ".") {
			continue
		}
		fi, err := os.Stat(filepath.Join(full, de.Name()))
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", rel, de.Name(), err)
		}
		out = append(out, entry{name: de.Name(), dir: fi.IsDir()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}
