package store

import (
	"errors"

	"github.com/guardwatch/observatory/internal/events"
)

// ErrNoScope is returned by a read given the zero Scope.
var ErrNoScope = errors.New("store: query without a tenant scope")

// Scope is the one account and project a read may touch. Its fields are
// unexported so that every query is built from a checked value: the zero
// Scope is refused, and NewScope refuses ids outside the id rules.
type Scope struct {
	account string
	project string
}

// NewScope returns the scope of a project after checking both ids.
func NewScope(account, project string) (Scope, error) {
	if err := events.CheckID("account_id", account); err != nil {
		return Scope{}, err
	}
	if err := events.CheckID("project_id", project); err != nil {
		return Scope{}, err
	}
	return Scope{account: account, project: project}, nil
}

// Account returns the scope's account id.
func (s Scope) Account() string { return s.account }

// Project returns the scope's project id.
func (s Scope) Project() string { return s.project }

// Valid reports whether the scope names a project.
func (s Scope) Valid() bool { return s.account != "" && s.project != "" }

func (s Scope) check() error {
	if !s.Valid() {
		return ErrNoScope
	}
	return nil
}
