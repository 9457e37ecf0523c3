package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/filter"
)

// Facet names returned by Facets, in display order.
const (
	FacetOutcome     = "outcome"
	FacetDecision    = "decision"
	FacetMode        = "mode"
	FacetSeverity    = "severity"
	FacetEventType   = "event_type"
	FacetCategory    = "category"
	FacetPolicy      = "policy"
	FacetDetector    = "detector"
	FacetUser        = "user"
	FacetAgent       = "agent"
	FacetApplication = "application"
)

// FacetNames lists the facets in display order.
var FacetNames = []string{
	FacetOutcome, FacetDecision, FacetMode, FacetSeverity, FacetEventType, FacetCategory,
	FacetPolicy, FacetDetector, FacetUser, FacetAgent, FacetApplication,
}

// FacetValue is one value of a facet and how many distinct decisions
// matching the filter carry it.
type FacetValue struct {
	Value string
	Count uint64
}

// Facets maps a facet name to its most frequent values, most first.
type Facets map[string][]FacetValue

// MaxFacetValues bounds the values returned per facet.
const MaxFacetValues = 10

// enumFacets are the facets of the Enum8 columns, in the order their
// numbers are packed into one key per row. Each column numbers its values
// from 1 in the order of the events list (see enum8), and none has 100.
var enumFacets = []struct {
	name, column string
	values       []string
}{
	{FacetOutcome, "outcome", events.Outcomes}, {FacetDecision, "decision", events.Decisions},
	{FacetMode, "mode", events.Modes}, {FacetSeverity, "highest_severity", events.Severities},
	{FacetEventType, "event_type", events.EventTypes},
}

// facetKeys lists, per row, one key per facet value: a letter naming the
// facet followed by the value. Array columns give one key per element.
// The enum columns give a single key, "z" and their numbers two decimal
// digits each, decoded after grouping: on 18.16, turning five enums into
// strings on every row cost more than grouping all other keys. A String
// key also groups faster than a (facet, value) tuple, which costs a tuple
// per value to build.
var facetKeys = func() string {
	packed := make([]string, len(enumFacets))
	for i, e := range enumFacets {
		packed[i] = fmt.Sprintf("toInt8(%s) * %d", e.column, pow100(len(enumFacets)-1-i))
	}
	return "arrayConcat([concat('z', toString(" + strings.Join(packed, " + ") + "))," +
		" concat('f', user_id), concat('g', agent_id), concat('h', application_id)]," +
		" arrayMap(v -> concat('i', v), threat_categories)," +
		" arrayMap(v -> concat('j', v), policy_ids)," +
		" arrayMap(v -> concat('k', v), detectors))"
}()

func pow100(n int) uint64 {
	p := uint64(1)
	for range n {
		p *= 100
	}
	return p
}

// enumsCode is the facet letter of the packed enum key.
const enumsCode = "z"

// facetCodes maps a facet key's first letter to the facet's name.
var facetCodes = map[string]string{
	"f": FacetUser, "g": FacetAgent, "h": FacetApplication,
	"i": FacetCategory, "j": FacetPolicy, "k": FacetDetector,
}

// Facets counts, for every facet, the distinct decisions in the scope
// that match the filter, per value, in one pass over the project's range.
// Empty values are left out so that "no user" is not a user.
func (s *Store) Facets(ctx context.Context, sc Scope, f filter.Filter) (Facets, error) {
	if err := sc.check(); err != nil {
		return nil, err
	}
	cond, args := where(sc, f)
	// Redelivered copies are dropped once, in the subquery, so the groups
	// count rows instead of each keeping a set of event ids. Every packed
	// enum key is kept (each is its own LIMIT BY group); the other facets
	// keep their most frequent values.
	q := `SELECT substring(k, 1, 1) AS facet, substring(k, 2) AS value, n
 FROM (SELECT k, count() AS n
  FROM (SELECT outcome, decision, mode, highest_severity, event_type, user_id, agent_id,
    application_id, threat_categories, policy_ids, detectors
   FROM ` + s.table() + ` WHERE ` + cond + ` LIMIT 1 BY event_id)
  ARRAY JOIN ` + facetKeys + ` AS k
  GROUP BY k)
 WHERE value != ''
 ORDER BY facet, n DESC, value
 LIMIT ` + fmt.Sprint(MaxFacetValues) + ` BY facet, if(facet = '` + enumsCode + `', value, '')`

	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("count facets: %w", err)
	}
	defer rows.Close()

	out := Facets{}
	enums := make([]map[string]uint64, len(enumFacets))
	for i := range enums {
		enums[i] = map[string]uint64{}
	}
	for rows.Next() {
		var code string
		var v FacetValue
		if err := rows.Scan(&code, &v.Value, &v.Count); err != nil {
			return nil, fmt.Errorf("count facets: %w", err)
		}
		if code != enumsCode {
			name := facetCodes[code]
			out[name] = append(out[name], v)
			continue
		}
		if err := unpackEnums(v, enums); err != nil {
			return nil, fmt.Errorf("count facets: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count facets: %w", err)
	}
	for i, e := range enumFacets {
		if vs := topValues(enums[i]); len(vs) > 0 {
			out[e.name] = vs
		}
	}
	return out, nil
}

// unpackEnums adds the count of one packed enum key to each enum facet's
// value.
func unpackEnums(v FacetValue, enums []map[string]uint64) error {
	packed, err := strconv.ParseUint(v.Value, 10, 64)
	if err != nil {
		return fmt.Errorf("packed enum key %q: %w", v.Value, err)
	}
	for i := len(enumFacets) - 1; i >= 0; i-- {
		n := packed % 100
		packed /= 100
		e := enumFacets[i]
		if n < 1 || n > uint64(len(e.values)) {
			return fmt.Errorf("%s number %d outside the %d known values", e.column, n,
				len(e.values))
		}
		enums[i][e.values[n-1]] += v.Count
	}
	return nil
}

// topValues orders a facet's counts as the query orders the others: most
// first, then by value, at most MaxFacetValues.
func topValues(counts map[string]uint64) []FacetValue {
	vs := make([]FacetValue, 0, len(counts))
	for v, n := range counts {
		vs = append(vs, FacetValue{Value: v, Count: n})
	}
	slices.SortFunc(vs, func(a, b FacetValue) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return strings.Compare(a.Value, b.Value)
	})
	return vs[:min(len(vs), MaxFacetValues)]
}

// Total is the number of distinct decisions the facets were counted over,
// as Count returns it: every decision has exactly one outcome, and there
// are fewer outcomes than MaxFacetValues, so the outcome counts add up to
// it. A page that shows facets needs no count query of its own.
func (f Facets) Total() uint64 {
	var n uint64
	for _, v := range f[FacetOutcome] {
		n += v.Count
	}
	return n
}
