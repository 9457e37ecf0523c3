package events

import (
	"errors"
	"fmt"
	"strings"
)

// Subject layout: guard.v1.<account_id>.<project_id>.<kind>.
const (
	subjectPrefix = "guard.v1."

	// KindDecision carries decision events.
	KindDecision = "decision"
	// KindDeadLetter carries rejected payloads with their reason.
	KindDeadLetter = "deadletter"
	// KindAlert carries fired alerts.
	KindAlert = "alert"

	// StreamSubjects is the filter of the stream that holds every kind.
	StreamSubjects = "guard.v1.*.*.>"
	// DecisionFilter matches the decisions of every tenant.
	DecisionFilter = "guard.v1.*.*.decision"
	// DeadLetterFilter matches the dead letters of every tenant.
	DeadLetterFilter = "guard.v1.*.*.deadletter"

	maxIDLen = 64
)

// ErrInvalidID reports an account or project id outside the id rules.
var ErrInvalidID = errors.New("invalid id")

// ValidID reports whether s is 1–64 characters of [A-Za-z0-9_-]. Nothing
// else may reach a subject, a query or a file name: '.', '*', '>' and
// whitespace are special to NATS.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '_' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

// CheckID returns an error naming the field when id breaks the id rules.
func CheckID(field, id string) error {
	if !ValidID(id) {
		return fmt.Errorf("%w: %s must be 1-%d characters of A-Z a-z 0-9 _ -",
			ErrInvalidID, field, maxIDLen)
	}
	return nil
}

// Subject builds guard.v1.<account>.<project>.<kind> after checking both ids.
func Subject(account, project, kind string) (string, error) {
	if err := CheckID("account_id", account); err != nil {
		return "", err
	}
	if err := CheckID("project_id", project); err != nil {
		return "", err
	}
	return subjectPrefix + account + "." + project + "." + kind, nil
}

// ParseSubject splits a subject of the layout into its account, project and
// kind, rejecting anything that does not follow the id rules.
func ParseSubject(subject string) (account, project, kind string, err error) {
	rest, ok := strings.CutPrefix(subject, subjectPrefix)
	if !ok {
		return "", "", "", fmt.Errorf("subject %q: not under %s", subject, subjectPrefix)
	}

	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return "", "", "", fmt.Errorf("subject %q: want %s<account>.<project>.<kind>",
			subject, subjectPrefix)
	}
	if !ValidID(parts[0]) || !ValidID(parts[1]) || !ValidID(parts[2]) {
		return "", "", "", fmt.Errorf("subject %q: %w", subject, ErrInvalidID)
	}
	return parts[0], parts[1], parts[2], nil
}
