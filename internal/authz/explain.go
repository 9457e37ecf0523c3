package authz

import (
	"context"
	"fmt"
	"slices"
	"strings"

	cedar "github.com/cedar-policy/cedar-go"
)

// Explain decides a request like Authorize and returns a text for people:
// the decision, why, each determining policy with its file, line and source,
// and any evaluation error. Operators use it to debug a policy tree.
func (e *Engine) Explain(ctx context.Context, p *Principal, action Action, res Resource) string {
	_, d, _ := e.Authorize(ctx, p, action, res)
	var b strings.Builder
	verdict := "DENY"
	if d.Allowed {
		verdict = "ALLOW"
	}
	fmt.Fprintf(&b, "decision: %s\n", verdict)
	fmt.Fprintf(&b, "reason:   %s\n", d.Reason)
	if p != nil {
		fmt.Fprintf(&b, "principal: %s (account %s)\n", p.Subject, p.Account)
		if res.Account == "" || res.Account == p.Account {
			fmt.Fprintf(&b, "roles in project: %s\n", listOrNone(p.Roles[res.Project]))
		}
		fmt.Fprintf(&b, "labels: %s\n", labelsText(p.Labels))
	}
	fmt.Fprintf(&b, "action:   %s\n", ActionUID(action))
	fmt.Fprintf(&b, "resource: %s\n", resourceText(p, res))
	if d.Tier != "" {
		fmt.Fprintf(&b, "tier:     %s\n", d.Tier)
	}

	b.WriteString("determining policies:")
	if len(d.Policies) == 0 {
		b.WriteString(" none\n")
	} else {
		b.WriteString("\n")
	}
	set := e.policySet(p, res)
	for _, id := range d.Policies {
		var pol *cedar.Policy
		if set != nil {
			pol = set.Get(cedar.PolicyID(id))
		}
		if pol == nil {
			fmt.Fprintf(&b, "  - %s\n", id)
			continue
		}
		pos := pol.Position()
		fmt.Fprintf(&b, "  - %s (%s) %s:%d\n", id, effectText(pol), pos.Filename, pos.Line)
		for _, line := range strings.Split(strings.TrimSpace(string(pol.MarshalCedar())), "\n") {
			fmt.Fprintf(&b, "      %s\n", line)
		}
	}
	b.WriteString("errors:")
	if len(d.Errors) == 0 {
		b.WriteString(" none\n")
	} else {
		b.WriteString("\n")
		for _, msg := range d.Errors {
			fmt.Fprintf(&b, "  - %s\n", msg)
		}
	}
	return b.String()
}

// policySet returns the set a request about res is decided by, if any.
func (e *Engine) policySet(p *Principal, res Resource) *cedar.PolicySet {
	if p == nil {
		return nil
	}
	pp, ok := e.cur.Load().projects[tenantKey{account: p.Account, project: res.Project}]
	if !ok {
		return nil
	}
	return pp.set
}

func effectText(p *cedar.Policy) string {
	if p.Effect() == cedar.Forbid {
		return "forbid"
	}
	return "permit"
}

func resourceText(p *Principal, res Resource) string {
	acc := res.Account
	if acc == "" && p != nil {
		acc = p.Account
	}
	kind := res.Kind
	if kind == "" {
		kind = KindProject
	}
	if kind == KindProject {
		return fmt.Sprintf("%s::Project %q", Namespace, acc+"/"+res.Project)
	}
	return fmt.Sprintf("%s::%s %q in project %q", Namespace, kind, res.ID, acc+"/"+res.Project)
}

func listOrNone(xs []string) string {
	if len(xs) == 0 {
		return "none"
	}
	return strings.Join(xs, ", ")
}

func labelsText(m map[string]string) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ", ")
}
