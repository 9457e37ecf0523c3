package tenant

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/guardwatch/observatory/internal/events"
)

// InboxPrefix is the reply-subject prefix a producer of account must
// connect with (nats.CustomInboxPrefix). Producers may subscribe only
// below it, so no producer can read another's publish acknowledgements,
// which carry stream sequence numbers and so reveal traffic volume.
func InboxPrefix(account string) string { return "_INBOX_" + account }

// Producer is the NATS user of one account's guards.
type Producer struct {
	Account string
	// NKey is the user's public nkey ("U..."). When empty, User and
	// Password are used.
	NKey string
	// User and Password name a password user; Password is written as is,
	// so it can be a $VARIABLE reference or a bcrypt hash.
	User, Password string
	// Projects are the account's provisioned projects, the only subjects
	// the user may publish to.
	Projects []string
}

// PublishSubjects lists the literal subjects the producer may publish to:
// the decision subject of each of its projects.
//
// The list names every project instead of allowing guard.v1.<account>.>:
// a server not in pedantic mode accepts a publish to a subject with
// wildcard tokens, and guard.v1.<account>.> would allow
// "guard.v1.<account>.*.decision", which the stream stores. A literal
// allow list matches a '*' token only literally, so that publish is
// refused with a permissions violation.
func (p Producer) PublishSubjects() ([]string, error) {
	out := make([]string, 0, len(p.Projects))
	for _, proj := range p.Projects {
		s, err := events.Subject(p.Account, proj, events.KindDecision)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Block renders the user as an element of a nats-server users list.
func (p Producer) Block() (string, error) {
	if err := events.CheckID("account", p.Account); err != nil {
		return "", err
	}
	subjects, err := p.PublishSubjects()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Producer of account %s: publishes decisions of its own projects only.\n",
		p.Account)
	fmt.Fprintf(&b, "# Connect with nats.CustomInboxPrefix(%q).\n", InboxPrefix(p.Account))
	b.WriteString("{\n")
	switch {
	case p.NKey != "":
		if !nkeys.IsValidPublicUserKey(p.NKey) {
			return "", fmt.Errorf("producer %s: %q is not a public user nkey", p.Account, p.NKey)
		}
		fmt.Fprintf(&b, "  nkey: %s\n", p.NKey)
	case p.User != "" && p.Password != "":
		fmt.Fprintf(&b, "  user: %s, password: %s\n", strconv.Quote(p.User), p.Password)
	default:
		return "", fmt.Errorf("producer %s: neither nkey nor user and password", p.Account)
	}
	b.WriteString("  permissions: {\n")
	if len(subjects) == 0 {
		// An empty allow list would allow everything.
		b.WriteString("    # no provisioned project: nothing may be published\n")
		b.WriteString("    publish: { deny: [\">\"] }\n")
	} else {
		b.WriteString("    publish: { allow: [")
		for i, s := range subjects {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(strconv.Quote(s))
		}
		b.WriteString("] }\n")
	}
	fmt.Fprintf(&b, "    subscribe: { allow: [%q] }\n", InboxPrefix(p.Account)+".>")
	b.WriteString("  }\n}\n")
	return b.String(), nil
}

// seedFile is where the producer seed of an account is kept.
func seedFile(dir, account string) string { return filepath.Join(dir, account+".nk") }

// ProducerKey returns the public nkey of account's producer, creating the
// key pair when dir has none. The seed is written to <dir>/<account>.nk
// with mode 0600; it is the producer's secret (nats.NkeyOptionFromSeed).
func ProducerKey(dir, account string) (pub string, created bool, err error) {
	if err := events.CheckID("account", account); err != nil {
		return "", false, err
	}
	file := seedFile(dir, account)
	seed, err := os.ReadFile(file)
	if err == nil {
		kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
		if err != nil {
			return "", false, fmt.Errorf("read producer seed %s: %w", file, err)
		}
		pub, err = kp.PublicKey()
		return pub, false, err
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", false, fmt.Errorf("read producer seed: %w", err)
	}

	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", false, fmt.Errorf("create producer key: %w", err)
	}
	if seed, err = kp.Seed(); err != nil {
		return "", false, fmt.Errorf("create producer key: %w", err)
	}
	if pub, err = kp.PublicKey(); err != nil {
		return "", false, fmt.Errorf("create producer key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, fmt.Errorf("write producer seed: %w", err)
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", false, fmt.Errorf("write producer seed: %w", err)
	}
	if _, err := f.Write(append(seed, '\n')); err != nil {
		f.Close()
		return "", false, fmt.Errorf("write producer seed %s: %w", file, err)
	}
	if err := f.Close(); err != nil {
		return "", false, fmt.Errorf("write producer seed %s: %w", file, err)
	}
	return pub, true, nil
}

// RemoveProducerKey deletes the seed of account's producer, if any, and
// reports whether there was one.
func RemoveProducerKey(dir, account string) (bool, error) {
	if err := events.CheckID("account", account); err != nil {
		return false, err
	}
	err := os.Remove(seedFile(dir, account))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("remove producer seed: %w", err)
	}
	return true, nil
}

// ProducersConfig renders the users of every account that has a producer
// key in dir, for a users list of the stream's NATS account. Regenerate it
// after provisioning or offboarding and reload the server
// (nats-server --signal reload).
func ProducersConfig(s *Snapshot, dir string) (string, error) {
	var b strings.Builder
	for _, account := range s.Accounts() {
		if _, err := os.Stat(seedFile(dir, account)); err != nil {
			continue
		}
		pub, _, err := ProducerKey(dir, account)
		if err != nil {
			return "", err
		}
		block, err := Producer{Account: account, NKey: pub,
			Projects: s.AccountProjects(account)}.Block()
		if err != nil {
			return "", err
		}
		b.WriteString(block)
	}
	return b.String(), nil
}
