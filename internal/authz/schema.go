package authz

import (
	_ "embed"
	"fmt"

	cedar "github.com/cedar-policy/cedar-go"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"
)

// schemaText is the Cedar schema of the entities the engine builds. It lives
// with the code rather than in the policy tree because the code decides what
// the entities look like.
//
//go:embed schema.cedarschema
var schemaText []byte

// Namespace is the Cedar namespace of every entity type and action.
const Namespace = "Observatory"

// newValidator parses the embedded schema and returns a strict validator.
func newValidator() (*validate.Validator, error) {
	var s schema.Schema
	s.SetFilename("schema.cedarschema")
	if err := s.UnmarshalCedar(schemaText); err != nil {
		return nil, fmt.Errorf("parse cedar schema: %w", err)
	}
	r, err := s.Resolve()
	if err != nil {
		return nil, fmt.Errorf("resolve cedar schema: %w", err)
	}
	return validate.New(r, validate.WithStrict()), nil
}

// validatePolicy type-checks one policy against the schema.
func validatePolicy(v *validate.Validator, id cedar.PolicyID, p *cedar.Policy) error {
	return v.Policy(string(id), (*xast.Policy)(p.AST()))
}
