package store

import (
	"context"
	"fmt"

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

// facetPairs is an array of (facet, value) tuples per row: scalar columns
// give one pair, array columns one pair per element. Empty values are
// left out so that "no user" is not a user.
const facetPairs = `arrayFilter(p -> tupleElement(p, 2) != '', arrayConcat(
 [('outcome', toString(outcome)), ('decision', toString(decision)),
  ('mode', toString(mode)), ('severity', toString(highest_severity)),
  ('event_type', toString(event_type)), ('user', user_id), ('agent', agent_id),
  ('application', application_id)],
 arrayMap(v -> ('category', v), threat_categories),
 arrayMap(v -> ('policy', v), policy_ids),
 arrayMap(v -> ('detector', v), detectors)))`

// Facets counts, for every facet, the distinct decisions in the scope
// that match the filter, per value, in one pass over the project's range.
func (s *Store) Facets(ctx context.Context, sc Scope, f filter.Filter) (Facets, error) {
	if err := sc.check(); err != nil {
		return nil, err
	}
	cond, args := where(sc, f)
	// Redelivered copies are dropped once, in the subquery, so the groups
	// count rows instead of each keeping a set of event ids.
	q := `SELECT tupleElement(p, 1) AS facet, tupleElement(p, 2) AS value, count() AS n
 FROM (SELECT outcome, decision, mode, highest_severity, event_type, user_id, agent_id,
   application_id, threat_categories, policy_ids, detectors
  FROM ` + s.table() + ` WHERE ` + cond + ` LIMIT 1 BY event_id)
 ARRAY JOIN ` + facetPairs + ` AS p
 GROUP BY facet, value
 ORDER BY facet, n DESC, value
 LIMIT ` + fmt.Sprint(MaxFacetValues) + ` BY facet`

	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("count facets: %w", err)
	}
	defer rows.Close()

	out := Facets{}
	for rows.Next() {
		var name string
		var v FacetValue
		if err := rows.Scan(&name, &v.Value, &v.Count); err != nil {
			return nil, fmt.Errorf("count facets: %w", err)
		}
		out[name] = append(out[name], v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count facets: %w", err)
	}
	return out, nil
}
