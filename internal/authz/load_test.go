package authz_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/authz"
)

func TestLoadRejectsBrokenTrees(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
		want  []string
	}{{
		name: "syntax error names file and line",
		files: map[string]string{"projects/acme/proj_prod/bad.cedar": "// ok\n\n" +
			"permit (principal, action, resource)\nwhen { principal.roles.contains( };\n"},
		want: []string{"projects/acme/proj_prod/bad.cedar:4"},
	}, {
		name: "misspelt attribute fails validation",
		files: map[string]string{"projects/acme/proj_prod/typo.cedar": "\n" +
			"permit (principal, action, resource) when { principal.rols.contains(\"x\") };\n"},
		want: []string{"projects/acme/proj_prod/typo.cedar:2", "rols"},
	}, {
		name: "unknown action fails validation",
		files: map[string]string{"roles/extra.cedar": "permit (principal, " +
			"action == Observatory::Action::\"veiw_trace\", resource);\n"},
		want: []string{"roles/extra.cedar:1", "veiw_trace"},
	}, {
		name: "label read without has fails validation",
		files: map[string]string{"projects/acme/proj_prod/eu.cedar": "permit (principal, " +
			"action, resource) when { context.labels.region == \"eu\" };\n"},
		want: []string{"projects/acme/proj_prod/eu.cedar:1"},
	}, {
		name: "project may not replace a global invariant",
		files: map[string]string{"projects/acme/proj_prod/evil.cedar": "" +
			"@id(\"global.account_mismatch\")\npermit (principal, action, resource);\n"},
		want: []string{"projects/acme/proj_prod/evil.cedar", "global.account_mismatch",
			"already used in global/invariants.cedar"},
	}, {
		name:  "unknown tier",
		files: map[string]string{"projects/acme/proj_x/project.json": `{"tier": "gold"}`},
		want:  []string{"projects/acme/proj_x/project.json", `unknown tier "gold"`},
	}, {
		name:  "unknown field in project.json",
		files: map[string]string{"projects/acme/proj_x/project.json": `{"tier": "free", "teir": 1}`},
		want:  []string{"projects/acme/proj_x/project.json", "teir"},
	}, {
		name:  "missing project.json",
		files: map[string]string{"projects/acme/proj_x/a.cedar": ""},
		want:  []string{"projects/acme/proj_x/project.json"},
	}, {
		name:  "project folder with a dot",
		files: map[string]string{"projects/acme/proj.x/project.json": `{"tier": "free"}`},
		want:  []string{"projects/acme/proj.x: project id"},
	}, {
		name:  "account folder with a space",
		files: map[string]string{"projects/ac me/p/project.json": `{"tier": "free"}`},
		want:  []string{"projects/ac me: account id"},
	}, {
		name:  "bad @id",
		files: map[string]string{"roles/x.cedar": "@id(\"a b\")\npermit (principal, action, resource);"},
		want:  []string{"roles/x.cedar:1: @id"},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyTree(t, c.files)
			_, err := authz.Load(dir, nil)
			require.Error(t, err)
			for _, w := range c.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}

	t.Run("global invariants are required", func(t *testing.T) {
		dir := copyTree(t, nil)
		require.NoError(t, os.Remove(filepath.Join(dir, "global", "invariants.cedar")))
		_, err := authz.Load(dir, nil)
		require.ErrorContains(t, err, "global invariants are required")
	})
	t.Run("every broken file is reported", func(t *testing.T) {
		dir := copyTree(t, map[string]string{
			"projects/acme/proj_prod/a.cedar":   "permit (",
			"projects/globex/proj_prod/b.cedar": "forbid (",
		})
		_, err := authz.Load(dir, nil)
		require.ErrorContains(t, err, "acme/proj_prod/a.cedar:1")
		require.ErrorContains(t, err, "globex/proj_prod/b.cedar:1")
	})
}

func TestLoadIgnoresHiddenAndOtherFiles(t *testing.T) {
	dir := copyTree(t, map[string]string{
		"projects/acme/proj_prod/.open.cedar.swp": "garbage",
		"projects/acme/proj_prod/notes.md":        "garbage",
		"projects/.hidden/p/project.json":         "garbage",
	})
	_, err := authz.Load(dir, nil)
	require.NoError(t, err)
}

// A reload that meets a broken file keeps the previous set in force.
func TestReloadKeepsPreviousSetOnError(t *testing.T) {
	dir := copyTree(t, nil)
	e, buf := mustLoad(t, dir)
	viewer := user("acme", map[string][]string{"proj_staging": {authz.RoleViewer}})
	require.True(t, allowed(t, e, viewer, authz.ViewTrace, trace("proj_staging")))

	writeFiles(t, dir, map[string]string{
		"projects/acme/proj_staging/lock.cedar": "forbid (principal, action, resource);",
		"projects/acme/proj_staging/broken.cedar": "permit (principal, action, resource)" +
			" when { true ",
	})
	err := e.Reload()
	require.ErrorContains(t, err, "projects/acme/proj_staging/broken.cedar:1")
	_, lastErr := e.LastReload()
	require.Error(t, lastErr)
	require.True(t, allowed(t, e, viewer, authz.ViewTrace, trace("proj_staging")))
	require.Contains(t, buf.String(), "policy reload failed")

	require.NoError(t, os.Remove(filepath.Join(dir, "projects/acme/proj_staging/broken.cedar")))
	require.NoError(t, e.Reload())
	_, lastErr = e.LastReload()
	require.NoError(t, lastErr)
	require.False(t, allowed(t, e, viewer, authz.ViewTrace, trace("proj_staging")))
}

func TestWatchReloadsOnChange(t *testing.T) {
	dir := copyTree(t, nil)
	e, _ := mustLoad(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, e.Watch(ctx))

	viewer := user("acme", map[string][]string{"proj_staging": {authz.RoleViewer}})
	content := trace("proj_staging")
	require.False(t, allowed(t, e, viewer, authz.ViewContent, content))

	writeFiles(t, dir, map[string]string{
		"projects/acme/proj_staging/content.cedar": "@id(\"staging.content\")\n" +
			"permit (principal, action == Observatory::Action::\"view_content\", resource)" +
			" when { principal.roles.contains(\"viewer\") };\n",
	})
	require.Eventually(t, func() bool {
		return allowed(t, e, viewer, authz.ViewContent, content)
	}, 5*time.Second, 20*time.Millisecond)

	// A new project folder is picked up, and watched for later edits.
	writeFiles(t, dir, map[string]string{
		"projects/acme/proj_new/project.json": `{"tier": "pro"}`,
	})
	require.Eventually(t, func() bool {
		_, ok := e.Tier("acme", "proj_new")
		return ok
	}, 5*time.Second, 20*time.Millisecond)

	// A broken edit is reported and the previous policies stay.
	loadedAt, _ := e.LastReload()
	writeFiles(t, dir, map[string]string{
		"projects/acme/proj_staging/content.cedar": "permit (principal, action, resource) when {",
	})
	require.Eventually(t, func() bool {
		_, err := e.LastReload()
		return err != nil
	}, 5*time.Second, 20*time.Millisecond)
	at, _ := e.LastReload()
	require.Equal(t, loadedAt, at)
	require.True(t, allowed(t, e, viewer, authz.ViewContent, content))
	_, ok := e.Tier("acme", "proj_new")
	require.True(t, ok)
}
