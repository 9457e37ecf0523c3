package authz_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/authz"
)

func TestShippedTreeLoads(t *testing.T) {
	e, _ := mustLoad(t, shipped)
	for _, c := range []struct{ account, project, tier string }{
		{"acme", "proj_prod", authz.TierEnterprise},
		{"acme", "proj_staging", authz.TierFree},
		{"globex", "proj_prod", authz.TierPro},
		{"globex", "support-bot", authz.TierPro},
		{"initech", "proj_prod", authz.TierFree},
	} {
		tier, ok := e.Tier(c.account, c.project)
		require.True(t, ok, "%s/%s", c.account, c.project)
		require.Equal(t, c.tier, tier, "%s/%s", c.account, c.project)
	}
	_, ok := e.Tier("initech", "support-bot")
	require.False(t, ok)

	p := user("acme", map[string][]string{
		"proj_prod": {"viewer"}, "proj_staging": {"viewer"}, "ghost": {"admin"},
	})
	require.Equal(t, []string{"proj_prod", "proj_staging"}, e.Projects(p))
}

// Each role gets exactly its actions, in a tier that restricts nothing.
func TestRolesGetExactlyTheirActions(t *testing.T) {
	e, _ := mustLoad(t, shipped)
	want := map[string][]authz.Action{
		authz.RoleViewer:  {authz.ListTraces, authz.ViewTrace},
		authz.RoleAnalyst: {authz.ListTraces, authz.ViewTrace, authz.ViewContent, authz.ViewSession},
		authz.RoleAuditor: {authz.ListTraces, authz.ViewTrace, authz.ViewContent,
			authz.ViewSession, authz.ExportAudit},
		authz.RoleAdmin: authz.Actions,
		"":              nil,
		"owner":         nil,
	}
	for role, actions := range want {
		t.Run("role "+role, func(t *testing.T) {
			roles := []string{}
			if role != "" {
				roles = append(roles, role)
			}
			p := user("globex", map[string][]string{"proj_prod": roles})
			for _, a := range authz.Actions {
				for _, res := range []authz.Resource{
					{Project: "proj_prod"},
					{Kind: authz.KindTrace, ID: "t-1", Project: "proj_prod"},
					{Kind: authz.KindSession, ID: "sess 1/2", Project: "proj_prod"},
				} {
					got := allowed(t, e, p, a, res)
					require.Equal(t, slices.Contains(actions, a), got, "%s %s %+v", role, a, res)
				}
			}
		})
	}
}

func TestTierBaseline(t *testing.T) {
	e, _ := mustLoad(t, shipped)
	p := user("acme", map[string][]string{
		"proj_prod":    {authz.RoleAdmin},
		"proj_staging": {authz.RoleAdmin},
	})
	export := authz.Resource{Kind: authz.KindExport, ID: "exp-1", Project: "proj_prod"}
	require.True(t, allowed(t, e, p, authz.ExportAudit, export))
	require.True(t, allowed(t, e, p, authz.ManageAlerts, authz.Resource{Project: "proj_prod"}))

	export.Project = "proj_staging"
	_, d, err := e.Authorize(context.Background(), p, authz.ExportAudit, export)
	require.ErrorIs(t, err, authz.ErrDenied)
	require.Equal(t, []string{"tier.free.no_export"}, d.Policies)
	require.Equal(t, authz.TierFree, d.Tier)
	require.False(t, allowed(t, e, p, authz.ViewAlerts, authz.Resource{Project: "proj_staging"}))
	require.True(t, allowed(t, e, p, authz.ViewContent, trace("proj_staging")))
}

// A policy of one project that permits everything never decides a request
// about another project, nor about the same project id in another account.
func TestProjectPoliciesAreIsolated(t *testing.T) {
	permitAll := `permit (principal, action, resource);`
	dir := copyTree(t, map[string]string{
		"projects/acme/proj_prod/open.cedar": permitAll,
	})
	e, _ := mustLoad(t, dir)

	noRoles := user("acme", map[string][]string{"proj_prod": {}, "proj_staging": {}})
	require.True(t, allowed(t, e, noRoles, authz.ExportAudit, authz.Resource{Project: "proj_prod"}))
	for _, a := range authz.Actions {
		require.False(t, allowed(t, e, noRoles, a, trace("proj_staging")), a)
	}

	globex := user("globex", map[string][]string{"proj_prod": {}})
	for _, a := range authz.Actions {
		require.False(t, allowed(t, e, globex, a, trace("proj_prod")), a)
	}

	// A token of acme without proj_prod cannot use proj_prod's permit.
	stagingOnly := user("acme", map[string][]string{"proj_staging": {authz.RoleAdmin}})
	_, d, err := e.Authorize(context.Background(), stagingOnly, authz.ViewTrace, trace("proj_prod"))
	require.ErrorIs(t, err, authz.ErrDenied)
	require.Equal(t, []string{"global.project_not_granted"}, d.Policies)
}

// An account mismatch is denied even when the project's own policy permits.
func TestAccountMismatchAlwaysDenied(t *testing.T) {
	dir := copyTree(t, map[string]string{
		"projects/acme/proj_prod/open.cedar":   `permit (principal, action, resource);`,
		"projects/globex/proj_prod/open.cedar": `permit (principal, action, resource);`,
	})
	e, _ := mustLoad(t, dir)
	p := user("acme", map[string][]string{"proj_prod": {authz.RoleAdmin}})
	for _, a := range authz.Actions {
		res := trace("proj_prod")
		res.Account = "globex"
		_, d, err := e.Authorize(context.Background(), p, a, res)
		require.ErrorIs(t, err, authz.ErrDenied)
		require.Contains(t, d.Policies, "global.account_mismatch")
	}
}

func TestUnknownProjectDeniedLikeForbidden(t *testing.T) {
	e, _ := mustLoad(t, shipped)
	p := user("acme", map[string][]string{"nope": {authz.RoleAdmin}})
	scope, d, err := e.Authorize(context.Background(), p, authz.ListTraces,
		authz.Resource{Project: "nope"})
	require.ErrorIs(t, err, authz.ErrDenied)
	require.Equal(t, "unknown project", d.Reason)
	require.Empty(t, scope.Account())

	// initech has proj_prod but not support-bot; globex's project is not
	// found through an initech token.
	p = user("initech", map[string][]string{"support-bot": {authz.RoleAdmin}})
	_, _, err = e.Authorize(context.Background(), p, authz.ListTraces,
		authz.Resource{Project: "support-bot"})
	require.ErrorIs(t, err, authz.ErrDenied)
}

func TestAllowReturnsScope(t *testing.T) {
	e, buf := mustLoad(t, shipped)
	p := user("globex", map[string][]string{"support-bot": {authz.RoleViewer}})
	scope, d, err := e.Authorize(context.Background(), p, authz.ViewTrace, trace("support-bot"))
	require.NoError(t, err)
	require.Equal(t, "globex", scope.Account())
	require.Equal(t, "support-bot", scope.Project())
	require.Equal(t, []string{"role.viewer"}, d.Policies)
	require.Contains(t, buf.String(), `"msg":"authz decision"`)
	require.Contains(t, buf.String(), `"policies":["role.viewer"]`)
	require.Contains(t, buf.String(), `"allowed":true`)
}

func TestLabelPolicies(t *testing.T) {
	e, _ := mustLoad(t, shipped)

	// acme/proj_prod lets viewers of the trust-safety team see content.
	viewer := user("acme", map[string][]string{"proj_prod": {authz.RoleViewer}})
	require.False(t, allowed(t, e, viewer, authz.ViewContent, trace("proj_prod")))
	viewer.Labels = map[string]string{"team": "trust-safety"}
	require.True(t, allowed(t, e, viewer, authz.ViewContent, trace("proj_prod")))
	viewer.Labels = map[string]string{"team": "sales"}
	require.False(t, allowed(t, e, viewer, authz.ViewContent, trace("proj_prod")))

	// globex/support-bot keeps content to viewers labelled with its region.
	analyst := user("globex", map[string][]string{"support-bot": {authz.RoleAnalyst}})
	require.False(t, allowed(t, e, analyst, authz.ViewContent, trace("support-bot")))
	analyst.Labels = map[string]string{"region": "us"}
	require.False(t, allowed(t, e, analyst, authz.ViewContent, trace("support-bot")))
	analyst.Labels = map[string]string{"region": "eu"}
	require.True(t, allowed(t, e, analyst, authz.ViewContent, trace("support-bot")))
	require.True(t, allowed(t, e, analyst, authz.ViewSession,
		authz.Resource{Kind: authz.KindSession, ID: "s1", Project: "support-bot"}))
}

func TestInvalidIDsDenied(t *testing.T) {
	e, _ := mustLoad(t, shipped)
	bad := []string{"a.b", "*", ">", "a/b", "..", "proj prod", "", "proj\x00", "proj\n",
		strings.Repeat("a", 65), "acme.>", "proj_prod "}
	for _, id := range bad {
		p := user("acme", map[string][]string{id: {authz.RoleAdmin}, "proj_prod": {authz.RoleAdmin}})
		_, d, err := e.Authorize(context.Background(), p, authz.ListTraces, authz.Resource{Project: id})
		require.ErrorIs(t, err, authz.ErrDenied, "project %q", id)
		require.NotEqual(t, "permitted", d.Reason)

		p = user(id, map[string][]string{"proj_prod": {authz.RoleAdmin}})
		_, _, err = e.Authorize(context.Background(), p, authz.ListTraces,
			authz.Resource{Project: "proj_prod"})
		require.ErrorIs(t, err, authz.ErrDenied, "account %q", id)

		p = user("acme", map[string][]string{"proj_prod": {authz.RoleAdmin}})
		_, _, err = e.Authorize(context.Background(), p, authz.ListTraces,
			authz.Resource{Project: "proj_prod", Account: id + "x"})
		require.ErrorIs(t, err, authz.ErrDenied, "resource account %q", id)
	}

	admin := user("acme", map[string][]string{"proj_prod": {authz.RoleAdmin}})
	for _, res := range []authz.Resource{
		{Kind: authz.KindTrace, Project: "proj_prod"},
		{Kind: authz.KindTrace, ID: "bad\x07id", Project: "proj_prod"},
		{Kind: authz.KindTrace, ID: strings.Repeat("x", 257), Project: "proj_prod"},
		{Kind: "Account", ID: "acme", Project: "proj_prod"},
		{Kind: authz.KindProject, ID: "proj_staging", Project: "proj_prod"},
	} {
		require.False(t, allowed(t, e, admin, authz.ViewTrace, res), "%+v", res)
	}
	require.False(t, allowed(t, e, admin, authz.Action("delete_everything"),
		authz.Resource{Project: "proj_prod"}))
	require.False(t, allowed(t, e, nil, authz.ListTraces, authz.Resource{Project: "proj_prod"}))
	noSubject := user("acme", map[string][]string{"proj_prod": {authz.RoleAdmin}})
	noSubject.Subject = ""
	require.False(t, allowed(t, e, noSubject, authz.ListTraces, authz.Resource{Project: "proj_prod"}))
}

// An evaluation error anywhere in the set denies, even when a permit applies.
func TestEvaluationErrorDenies(t *testing.T) {
	// The validator cannot see a Long overflow that depends on the request.
	dir := copyTree(t, map[string]string{
		"projects/acme/proj_prod/overflow.cedar": `@id("overflow")
permit (principal, action, resource)
when { 9223372036854775807 + (if context.tier == "enterprise" then 1 else 0) > 0 };`,
	})
	e, buf := mustLoad(t, dir)
	p := user("acme", map[string][]string{"proj_prod": {authz.RoleAdmin}})
	_, d, err := e.Authorize(context.Background(), p, authz.ListTraces,
		authz.Resource{Project: "proj_prod"})
	require.ErrorIs(t, err, authz.ErrDenied)
	require.Equal(t, "policy evaluation error", d.Reason)
	require.NotEmpty(t, d.Errors)
	require.Contains(t, buf.String(), "authz evaluation error")
}

func TestExplain(t *testing.T) {
	e, _ := mustLoad(t, shipped)
	p := user("acme", map[string][]string{"proj_staging": {authz.RoleAuditor}})
	out := e.Explain(context.Background(), p, authz.ExportAudit,
		authz.Resource{Kind: authz.KindExport, ID: "e1", Project: "proj_staging"})
	for _, want := range []string{
		"decision: DENY", "forbidden by policy", "tier.free.no_export (forbid)",
		"tiers/free/baseline.cedar:3", "tier:     free", "roles in project: auditor",
	} {
		require.Contains(t, out, want)
	}
}
