package store

import (
	"context"
	"fmt"
	"strings"

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

// facetKeys lists, per row, one key per facet value: a letter naming the
// facet followed by the value. Scalar columns give one key, array columns
// one per element. A single String key groups faster on 18.16 than a
// (facet, value) tuple, which costs a tuple per value to build.
var facetKeys = func() string {
	cols := []struct{ code, expr string }{
		{"a", "toString(outcome)"}, {"b", "toString(decision)"}, {"c", "toString(mode)"},
		{"d", "toString(highest_severity)"}, {"e", "toString(event_type)"},
		{"f", "user_id"}, {"g", "agent_id"}, {"h", "application_id"},
	}
	scalars := make([]string, len(cols))
	for i, c := range cols {
		scalars[i] = "concat('" + c.code + "', " + c.expr + ")"
	}
	return "arrayConcat([" + strings.Join(scalars, ", ") + "]," +
		" arrayMap(v -> concat('i', v), threat_categories)," +
		" arrayMap(v -> concat('j', v), policy_ids)," +
		" arrayMap(v -> concat('k', v), detectors))"
}()

// facetCodes maps a facet key's first letter to the facet's name.
var facetCodes = map[string]string{
	"a": FacetOutcome, "b": FacetDecision, "c": FacetMode, "d": FacetSeverity,
	"e": FacetEventType, "f": FacetUser, "g": FacetAgent, "h": FacetApplication,
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
	// count rows instead of each keeping a set of event ids.
	q := `SELECT substring(k, 1, 1) AS facet, substring(k, 2) AS value, n
 FROM (SELECT k, count() AS n
  FROM (SELECT outcome, decision, mode, highest_severity, event_type, user_id, agent_id,
    application_id, threat_categories, policy_ids, detectors
   FROM ` + s.table() + ` WHERE ` + cond + ` LIMIT 1 BY event_id)
  ARRAY JOIN ` + facetKeys + ` AS k
  GROUP BY k)
 WHERE value != ''
 ORDER BY facet, n DESC, value
 LIMIT ` + fmt.Sprint(MaxFacetValues) + ` BY facet`

	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("count facets: %w", err)
	}
	defer rows.Close()

	out := Facets{}
	for rows.Next() {
		var code string
		var v FacetValue
		if err := rows.Scan(&code, &v.Value, &v.Count); err != nil {
			return nil, fmt.Errorf("count facets: %w", err)
		}
		name := facetCodes[code]
		out[name] = append(out[name], v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count facets: %w", err)
	}
	return out, nil
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
