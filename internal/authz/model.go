// Package authz decides every read and change of tenant data with Cedar,
// against the policy set of the one project the request touches, and hands
// out the store scope only for an allowed decision.
package authz

import (
	"errors"
	"sort"
)

// ErrDenied is returned for a forbidden request. Callers answer it exactly
// as they answer a resource that does not exist.
var ErrDenied = errors.New("authz: denied")

// Action is a Cedar action of the Observatory namespace.
type Action string

// Actions.
const (
	ListTraces   Action = "list_traces"
	ViewTrace    Action = "view_trace"
	ViewContent  Action = "view_content"
	ViewSession  Action = "view_session"
	ExportAudit  Action = "export_audit"
	ViewAlerts   Action = "view_alerts"
	ManageAlerts Action = "manage_alerts"
	// ExplainAccess shows how the engine decides a request, with the
	// determining policies' sources; admins only.
	ExplainAccess Action = "explain_access"
)

// Actions lists every action.
var Actions = []Action{
	ListTraces, ViewTrace, ViewContent, ViewSession, ExportAudit, ViewAlerts, ManageAlerts,
	ExplainAccess,
}

// Principal is a verified viewer, built only from a verified token.
type Principal struct {
	Subject string // token "sub"
	Account string // the one account the token is for
	// Roles maps each project the token grants to the roles it holds
	// there (viewer, analyst, auditor, admin).
	Roles  map[string][]string
	Labels map[string]string // token labels, passed to Cedar as context
}

// Projects returns the projects the token names, sorted.
func (p *Principal) Projects() []string {
	out := make([]string, 0, len(p.Roles))
	for proj := range p.Roles {
		out = append(out, proj)
	}
	sort.Strings(out)
	return out
}

// ResourceKind is the Cedar entity type of a resource.
type ResourceKind string

// Resource kinds.
const (
	KindProject           ResourceKind = "Project"
	KindTrace             ResourceKind = "Trace"
	KindSession           ResourceKind = "Session"
	KindExport            ResourceKind = "Export"
	KindAlertSubscription ResourceKind = "AlertSubscription"
)

// Resource is what a request touches: a kind and id inside one account's
// project. For KindProject the ID is the project id.
type Resource struct {
	Kind    ResourceKind
	ID      string
	Account string
	Project string
}

// Role names a token may grant in a project. The role templates under
// policies/roles give each its actions; project policies may test other
// role names too, since roles reach Cedar as plain strings.
const (
	RoleViewer  = "viewer"
	RoleAnalyst = "analyst"
	RoleAuditor = "auditor"
	RoleAdmin   = "admin"
)

// Roles lists the built-in roles from least to most privileged.
var Roles = []string{RoleViewer, RoleAnalyst, RoleAuditor, RoleAdmin}

// Tiers of a project. The policy tree holds one baseline folder per tier.
const (
	TierFree       = "free"
	TierPro        = "pro"
	TierEnterprise = "enterprise"
)
