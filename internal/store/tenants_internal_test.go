package store

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParsePartition(t *testing.T) {
	for in, want := range map[string]struct {
		a, p  string
		month int
		ok    bool
	}{
		"('acme','proj_prod',202401)":    {"acme", "proj_prod", 202401, true},
		"('a-b','c_d',209912)":           {"a-b", "c_d", 209912, true},
		"('acme','proj_prod')":           {ok: false},
		"('acme','pro,j',202401)":        {ok: false},
		"('ac\\'me','proj_prod',202401)": {ok: false},
		"(acme,'proj_prod',202401)":      {ok: false},
		"('acme','proj_prod',x)":         {ok: false},
		"202401":                         {ok: false},
	} {
		a, p, m, ok := parsePartition(in)
		require.Equal(t, want.ok, ok, in)
		if ok {
			require.Equal(t, []any{want.a, want.p, want.month}, []any{a, p, m}, in)
		}
	}
}

func TestKeyElements(t *testing.T) {
	require.Equal(t, []string{"account_id", "project_id", "toYYYYMM(occurred_at)"},
		keyElements("(account_id, project_id, toYYYYMM(occurred_at))"))
	require.Equal(t, []string{"toYYYYMM(deleted_at)"}, keyElements("toYYYYMM(deleted_at)"))
	require.Equal(t, []string{"cityHash64(account_id, project_id) % 16"},
		keyElements("cityHash64(account_id, project_id) % 16"))
	require.Empty(t, keyElements(""))
}
