package web

import (
	"context"
	"net/http"

	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/store"
)

// The JSON API of decisions:
//
//	GET /api/p/{project}/traces    list_traces
//
// It takes the traces page's filter parameters (range or from/to,
// outcome, severity, q, ...), "limit" (rows per page: default 50, at most
// the project's tier's rows_per_page) and "after" (the "next" of the
// previous page). Rows are newest first. Credentials and errors are those
// of the alert API; the tier's limits answer 400 (limit, range) and 429
// with Retry-After (concurrent queries).

// apiDecisionPage is one page of the decisions API.
type apiDecisionPage struct {
	Rows  []apiDecision `json:"rows"`
	Limit int           `json:"limit"`
	// Next is the "after" of the next page; absent on the last page.
	Next string `json:"next,omitempty"`
}

// apiDecision is one decision of a list, in the event's field names.
type apiDecision struct {
	EventID          string   `json:"event_id"`
	OccurredAt       string   `json:"occurred_at"`
	Source           string   `json:"source"`
	EventType        string   `json:"event_type"`
	Action           string   `json:"action,omitempty"`
	Mode             string   `json:"mode"`
	Decision         string   `json:"decision"`
	Outcome          string   `json:"outcome"`
	HighestSeverity  string   `json:"highest_severity"`
	Reason           string   `json:"reason,omitempty"`
	ApplicationID    string   `json:"application_id,omitempty"`
	TraceID          string   `json:"trace_id,omitempty"`
	SessionID        string   `json:"session_id,omitempty"`
	UserID           string   `json:"user_id,omitempty"`
	AgentID          string   `json:"agent_id,omitempty"`
	ThreatCategories []string `json:"threat_categories"`
	PolicyIDs        []string `json:"policy_ids"`
	Detectors        []string `json:"detectors"`
	MaxScore         *float32 `json:"max_score,omitempty"`
	LatencyMS        float32  `json:"latency_ms"`
}

func (s *server) apiTraces(w http.ResponseWriter, r *http.Request) error {
	sc, f, _, _, err := s.listRequest(r, authz.ListTraces)
	if err != nil {
		return err
	}
	size, err := s.pageSize(r, sc, PageSize, store.MaxPageSize)
	if err != nil {
		return err
	}
	after, err := decodeCursor("after", r.URL.Query().Get("after"))
	if err != nil {
		return err
	}
	done, err := s.beginQuery(sc)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(r.Context(), s.QueryTimeout)
	defer cancel()
	page, err := s.Store.List(ctx, sc, f, after, size)
	if err != nil {
		return err
	}
	done()

	out := apiDecisionPage{Rows: make([]apiDecision, 0, len(page.Rows)), Limit: size}
	for _, d := range page.Rows {
		out.Rows = append(out.Rows, apiDecision{EventID: d.EventID,
			OccurredAt: d.OccurredAt.UTC().Format("2006-01-02T15:04:05.000Z"),
			Source:     d.Source, EventType: d.EventType, Action: d.Action, Mode: d.Mode,
			Decision: d.Decision, Outcome: d.Outcome, HighestSeverity: d.HighestSeverity,
			Reason: d.Reason, ApplicationID: d.ApplicationID, TraceID: d.TraceID,
			SessionID: d.SessionID, UserID: d.UserID, AgentID: d.AgentID,
			ThreatCategories: nonNil(d.ThreatCategories), PolicyIDs: nonNil(d.PolicyIDs),
			Detectors: nonNil(d.Detectors), MaxScore: d.MaxScore, LatencyMS: d.LatencyMS})
	}
	if page.More && len(page.Rows) > 0 {
		last := page.Rows[len(page.Rows)-1]
		out.Next = encodeCursor(store.Cursor{At: last.OccurredAt, EventID: last.EventID})
	}
	s.writeJSON(w, http.StatusOK, out)
	return nil
}

func nonNil(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}
