package authz

import (
	"unicode"
	"unicode/utf8"

	cedar "github.com/cedar-policy/cedar-go"

	"github.com/guardwatch/observatory/internal/events"
)

// Cedar entity types of the Observatory namespace.
const (
	typeUser    cedar.EntityType = Namespace + "::User"
	typeAccount cedar.EntityType = Namespace + "::Account"
	typeAction  cedar.EntityType = Namespace + "::Action"
)

// resourceKinds lists the kinds a request may name.
var resourceKinds = []ResourceKind{
	KindProject, KindTrace, KindSession, KindExport, KindAlertSubscription,
}

const (
	maxSubjectLen    = 1024
	maxResourceIDLen = 256
)

// validSubject accepts any printable UTF-8 subject, such as a spiffe://
// URI. The subject is only ever an entity id, never a path or a subject.
func validSubject(s string) bool {
	return printable(s, maxSubjectLen)
}

// validResourceID accepts the free-form ids of traces, sessions, exports and
// alert subscriptions: they are producer-assigned and only reach Cedar as
// entity ids, built programmatically, so no character is special there.
func validResourceID(s string) bool {
	return printable(s, maxResourceIDLen)
}

func printable(s string, max int) bool {
	if s == "" || len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func accountUID(account string) cedar.EntityUID {
	return cedar.NewEntityUID(typeAccount, cedar.String(account))
}

// projectUID qualifies the project id with its account: project ids are
// unique only inside an account, and "/" cannot occur in an id.
func projectUID(account, project string) cedar.EntityUID {
	return cedar.NewEntityUID(Namespace+"::Project", cedar.String(account+"/"+project))
}

// ActionUID returns the Cedar entity of an action, e.g.
// Observatory::Action::"view_trace".
func ActionUID(a Action) cedar.EntityUID {
	return cedar.NewEntityUID(typeAction, cedar.String(a))
}

// buildRequest returns the entities and the Cedar request for one
// normalized request. The principal's account and projects come from its
// token; the resource's from the request.
func buildRequest(p *Principal, action Action, res Resource,
	pp *projectPolicies) (cedar.EntityMap, cedar.Request) {
	acc := accountUID(res.Account)
	proj := projectUID(res.Account, res.Project)
	entities := cedar.EntityMap{
		acc: {UID: acc},
		proj: {
			UID:     proj,
			Parents: cedar.NewEntityUIDSet(acc),
			Attributes: cedar.NewRecord(cedar.RecordMap{
				"account": acc,
				"project": proj,
				"tier":    cedar.String(pp.tier),
				"region":  cedar.String(pp.region),
			}),
		},
	}
	resource := proj
	if res.Kind != KindProject {
		resource = cedar.NewEntityUID(Namespace+"::"+cedar.EntityType(res.Kind),
			cedar.String(res.ID))
		entities[resource] = cedar.Entity{
			UID:     resource,
			Parents: cedar.NewEntityUIDSet(proj),
			Attributes: cedar.NewRecord(cedar.RecordMap{
				"account": acc, "project": proj,
			}),
		}
	}

	pacc := accountUID(p.Account)
	if _, ok := entities[pacc]; !ok {
		entities[pacc] = cedar.Entity{UID: pacc}
	}
	var projects []cedar.Value
	for _, id := range p.Projects() {
		if events.ValidID(id) {
			projects = append(projects, projectUID(p.Account, id))
		}
	}
	var roles []cedar.Value
	if res.Account == p.Account {
		for _, r := range p.Roles[res.Project] {
			roles = append(roles, cedar.String(r))
		}
	}
	user := cedar.NewEntityUID(typeUser, cedar.String(p.Subject))
	entities[user] = cedar.Entity{
		UID: user,
		Attributes: cedar.NewRecord(cedar.RecordMap{
			"account":  pacc,
			"projects": cedar.NewSet(projects...),
			"roles":    cedar.NewSet(roles...),
		}),
	}

	labels := cedar.RecordMap{}
	for k, v := range p.Labels {
		labels[cedar.String(k)] = cedar.String(v)
	}
	req := cedar.Request{
		Principal: user,
		Action:    ActionUID(action),
		Resource:  resource,
		Context: cedar.NewRecord(cedar.RecordMap{
			"tier":   cedar.String(pp.tier),
			"region": cedar.String(pp.region),
			"labels": cedar.NewRecord(labels),
		}),
	}
	return entities, req
}
