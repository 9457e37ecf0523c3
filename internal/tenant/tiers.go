// Package tenant holds what the pipeline knows about its tenants: the tiers
// and their limits (a YAML file), the projects and the tier each one is on
// (the policy folder), and the lifecycle operations on them: provisioning,
// producer credentials and offboarding.
package tenant

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/guardwatch/observatory/internal/events"
)

// Tier is one service level: how long decisions are kept, how fast a
// project may publish before its events go to the lower-priority lane, and
// what a viewer may ask for at once.
type Tier struct {
	// Name is the tier's key in the file; it is also the folder of its
	// Cedar baseline under policies/tiers/.
	Name string `yaml:"-"`
	// Retention is how long decisions are kept, counted from occurred_at.
	Retention Duration `yaml:"retention"`
	Ingest    Ingest   `yaml:"ingest"`
	Query     Query    `yaml:"query"`
	Export    Export   `yaml:"export"`
	// Baseline is the folder of the tier's Cedar baseline, relative to the
	// policy root; default "tiers/<name>". The observatory's policy loader
	// reads the baseline of a project from tiers/<tier>, so any other value
	// is refused.
	Baseline string `yaml:"baseline"`
}

// Ingest is a project's ingest quota: a token bucket. Events over it are
// still stored, after the events of projects within theirs, and counted.
type Ingest struct {
	EventsPerSecond float64 `yaml:"events_per_second"`
	Burst           int     `yaml:"burst"`
}

// Query bounds what one viewer request of the project may read.
type Query struct {
	RowsPerPage int      `yaml:"rows_per_page"`
	MaxRange    Duration `yaml:"max_range"`
	Concurrent  int      `yaml:"concurrent"`
}

// Export bounds audit exports of the project. MaxRows 0 means exports are
// not offered on the tier.
type Export struct {
	MaxRows    int64    `yaml:"max_rows"`
	MaxRange   Duration `yaml:"max_range"`
	Concurrent int      `yaml:"concurrent"`
	PerDay     int      `yaml:"per_day"`
}

// Tiers is the content of the tiers file.
type Tiers struct {
	// Default is the tier applied to data of projects that have no folder
	// in the policy tree (for retention and quotas); it must be listed.
	Default string           `yaml:"default"`
	Tiers   map[string]*Tier `yaml:"tiers"`
}

// maxTiersBytes bounds the tiers file.
const maxTiersBytes = 1 << 20

// LoadTiers reads and validates a tiers file.
func LoadTiers(file string) (*Tiers, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read tiers: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTiersBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read tiers %s: %w", file, err)
	}
	if len(b) > maxTiersBytes {
		return nil, fmt.Errorf("read tiers %s: larger than %d bytes", file, maxTiersBytes)
	}
	t, err := ParseTiers(b)
	if err != nil {
		return nil, fmt.Errorf("tiers %s: %w", file, err)
	}
	return t, nil
}

// ParseTiers decodes a tiers document, refusing unknown fields, and checks
// every tier.
func ParseTiers(b []byte) (*Tiers, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var t Tiers
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if err := t.validate(); err != nil {
		return nil, err
	}
	return &t, nil
}

func (t *Tiers) validate() error {
	if len(t.Tiers) == 0 {
		return errors.New("no tiers")
	}
	var errs []error
	for _, name := range t.Names() {
		tier := t.Tiers[name]
		if tier == nil {
			errs = append(errs, fmt.Errorf("tier %s: empty", name))
			continue
		}
		tier.Name = name
		if tier.Baseline == "" {
			tier.Baseline = "tiers/" + name
		}
		if err := tier.validate(); err != nil {
			errs = append(errs, fmt.Errorf("tier %s: %w", name, err))
		}
	}
	if _, ok := t.Tiers[t.Default]; !ok {
		errs = append(errs, fmt.Errorf("default tier %q is not listed", t.Default))
	}
	return errors.Join(errs...)
}

func (t *Tier) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(events.ValidID(t.Name), "name must be 1-64 characters of A-Z a-z 0-9 _ -")
	check(t.Retention.D() >= time.Hour, "retention must be at least 1h")
	check(t.Ingest.EventsPerSecond > 0, "ingest.events_per_second must be positive")
	check(t.Ingest.Burst >= 1, "ingest.burst must be at least 1")
	check(t.Query.RowsPerPage >= 1 && t.Query.RowsPerPage <= 10_000,
		"query.rows_per_page must be between 1 and 10000")
	check(t.Query.MaxRange.D() > 0, "query.max_range must be positive")
	check(t.Query.Concurrent >= 1, "query.concurrent must be at least 1")
	check(t.Export.MaxRows >= 0 && t.Export.Concurrent >= 0 && t.Export.PerDay >= 0 &&
		t.Export.MaxRange.D() >= 0, "export limits must not be negative")
	check(t.Export.MaxRows == 0 || t.Export.Concurrent >= 1 && t.Export.MaxRange.D() > 0,
		"export.concurrent and export.max_range must be set when exports are offered")
	check(path.Clean(t.Baseline) == "tiers/"+t.Name,
		"baseline must be tiers/%s: the policy loader reads a project's baseline there", t.Name)
	return errors.Join(errs...)
}

// Names returns the tier names in order.
func (t *Tiers) Names() []string {
	out := make([]string, 0, len(t.Tiers))
	for n := range t.Tiers {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Duration is a time.Duration written as Go writes one ("36h", "90m") or
// as a whole number of days ("30d"), which is how retention is said.
type Duration time.Duration

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// ParseDuration reads "30d" or any time.ParseDuration text.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 32)
		if err != nil || n > 100*366 {
			return 0, fmt.Errorf("duration %q: want whole days, like 30d", s)
		}
		return Duration(time.Duration(n) * 24 * time.Hour), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: want 30d, 12h or 90m", s)
	}
	return Duration(d), nil
}

// String writes whole days as "Nd" and anything else as Go does.
func (d Duration) String() string {
	if day := 24 * time.Hour; d > 0 && time.Duration(d)%day == 0 {
		return strconv.FormatInt(int64(time.Duration(d)/day), 10) + "d"
	}
	return time.Duration(d).String()
}

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = v
	return nil
}

// MarshalYAML writes the duration as its String.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }
