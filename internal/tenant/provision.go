package tenant

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/guardwatch/observatory/internal/events"
)

// Provisioned says what Provision did.
type Provisioned struct {
	Key          Key
	Tier         string
	Created      bool   // the project folder was new
	PreviousTier string // set when an existing project changed tier
	Dir          string // the project's policy folder
}

// projectJSON is what Provision writes; it keeps a region already there.
type projectJSON struct {
	Tier   string `json:"tier"`
	Region string `json:"region,omitempty"`
}

// Provision creates the policy folder of a project with its project.json,
// or changes the tier of an existing one. The tier must be listed in tiers.
// It is idempotent: provisioning a project again on the same tier changes
// nothing. The observatory and the ingester pick the project up at their
// next reload.
func Provision(policyRoot string, tiers *Tiers, account, project, tier string) (Provisioned,
	error) {
	k, err := NewKey(account, project)
	if err != nil {
		return Provisioned{}, err
	}
	if _, ok := tiers.Tiers[tier]; !ok {
		return Provisioned{}, fmt.Errorf("provision %s: unknown tier %q (tiers: %v)", k, tier,
			tiers.Names())
	}
	dir := projectDir(policyRoot, k)
	res := Provisioned{Key: k, Tier: tier, Dir: dir}
	file := filepath.Join(dir, projectFile)

	meta := projectJSON{Tier: tier}
	old, err := readProjectJSON(file)
	switch {
	case errors.Is(err, os.ErrNotExist):
		res.Created = true
	case err != nil:
		return res, fmt.Errorf("provision %s: %w", k, err)
	case old.Tier == tier:
		return res, nil
	default:
		res.PreviousTier = old.Tier
		meta.Region = old.Region
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, fmt.Errorf("provision %s: %w", k, err)
	}
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return res, fmt.Errorf("provision %s: %w", k, err)
	}
	if err := writeAtomic(file, append(b, '\n')); err != nil {
		return res, fmt.Errorf("provision %s: %w", k, err)
	}
	return res, nil
}

func projectDir(root string, k Key) string {
	return filepath.Join(root, projectsDir, k.Account, k.Project)
}

func readProjectJSON(file string) (projectJSON, error) {
	f, err := os.Open(file)
	if err != nil {
		return projectJSON{}, err
	}
	defer f.Close()
	var m projectJSON
	if err := json.NewDecoder(io.LimitReader(f, 1<<16)).Decode(&m); err != nil {
		return m, fmt.Errorf("%s: %w", file, err)
	}
	return m, nil
}

// writeAtomic replaces file by renaming a complete temporary file over it,
// so a reader (the policy watcher, the registry) never sees half a file.
func writeAtomic(file string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

// removePolicies deletes the policy folder of a project, or of a whole
// account when project is empty, and reports whether there was one.
func removePolicies(root, account, project string) (bool, error) {
	if err := events.CheckID("account", account); err != nil {
		return false, err
	}
	dir := filepath.Join(root, projectsDir, account)
	if project != "" {
		if err := events.CheckID("project", project); err != nil {
			return false, err
		}
		dir = filepath.Join(dir, project)
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return false, fmt.Errorf("remove policies %s: %w", dir, err)
	}
	if project != "" {
		// An account folder left empty is removed too: the account has no
		// project any more.
		acc := filepath.Join(root, projectsDir, account)
		if des, err := os.ReadDir(acc); err == nil && len(des) == 0 {
			_ = os.Remove(acc)
		}
	}
	return true, nil
}
