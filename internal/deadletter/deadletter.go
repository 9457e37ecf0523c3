// Package deadletter reads the dead letters of a tenant back from the
// stream and replays them: after a fix, the original bytes go again to the
// decision subject they were first published on, and the replay is
// recorded so that no dead letter is replayed twice.
package deadletter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/guardwatch/observatory/internal/bus"
	"github.com/guardwatch/observatory/internal/events"
)

// ErrNotDeadLetter reports a stream sequence that holds no dead letter, or
// one of another tenant than the one asked for.
var ErrNotDeadLetter = errors.New("not a dead letter of this tenant")

// Letter is one dead letter as the stream holds it.
type Letter struct {
	Seq             uint64    // stream sequence of the dead letter
	Time            time.Time // when the stream stored it
	Subject         string    // the dead-letter subject
	Reason          events.Reason
	Detail          string
	OriginalSubject string
	OriginalSeq     uint64 // stream sequence of the rejected message
	ReplayOf        uint64 // set when the rejected message was itself a replay
	Header          nats.Header
	Data            []byte // the rejected payload, byte for byte

	// ReplayedAs is the stream sequence of the decision this letter was
	// replayed as, 0 if it was not.
	ReplayedAs uint64
}

// Query selects dead letters of one tenant. Zero fields select all.
type Query struct {
	Account, Project string
	Reason           events.Reason
	Since            time.Time
	Seqs             []uint64
}

// Inspector reads and replays dead letters of a stream.
type Inspector struct {
	js     jetstream.JetStream
	stream string
}

// NewInspector returns an inspector of the named stream ("GUARD" if empty).
func NewInspector(js jetstream.JetStream, stream string) *Inspector {
	if stream == "" {
		stream = "GUARD"
	}
	return &Inspector{js: js, stream: stream}
}

// List returns the tenant's dead letters that match q, oldest first, each
// with the sequence it was replayed as, if it was.
func (in *Inspector) List(ctx context.Context, q Query) ([]Letter, error) {
	dlSubj, err := events.Subject(q.Account, q.Project, events.KindDeadLetter)
	if err != nil {
		return nil, err
	}
	msgs, err := in.read(ctx, dlSubj, q.Since)
	if err != nil {
		return nil, err
	}
	replayed, err := in.replays(ctx, q.Account, q.Project)
	if err != nil {
		return nil, err
	}
	var out []Letter
	for _, m := range msgs {
		l := toLetter(m)
		if l.Reason == "" {
			continue // not written by the ingester
		}
		if q.Reason != "" && l.Reason != q.Reason {
			continue
		}
		if len(q.Seqs) > 0 && !slices.Contains(q.Seqs, l.Seq) {
			continue
		}
		l.ReplayedAs = replayed[l.Seq]
		out = append(out, l)
	}
	return out, nil
}

// ListUnscoped returns the dead letters whose subject named no valid
// tenant. They cannot be replayed.
func (in *Inspector) ListUnscoped(ctx context.Context, since time.Time) ([]Letter, error) {
	msgs, err := in.read(ctx, bus.UnscopedDeadLetterSubject, since)
	if err != nil {
		return nil, err
	}
	out := make([]Letter, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, toLetter(m))
	}
	return out, nil
}

// Get returns the dead letter stored at seq. With a tenant it must be
// that tenant's; without one (empty account and project) any dead letter,
// unscoped ones included, is returned. It fails with ErrNotDeadLetter
// otherwise.
func (in *Inspector) Get(ctx context.Context, seq uint64, account, project string) (*Letter, error) {
	st, err := in.js.Stream(ctx, in.stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", in.stream, err)
	}
	raw, err := st.GetMsg(ctx, seq)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, fmt.Errorf("sequence %d: %w", seq, ErrNotDeadLetter)
		}
		return nil, fmt.Errorf("get message %d: %w", seq, err)
	}
	l := toLetter(stored{seq: raw.Sequence, time: raw.Time, subject: raw.Subject,
		header: raw.Header, data: raw.Data})
	scoped := account != "" || project != ""
	if raw.Subject == bus.UnscopedDeadLetterSubject && !scoped {
		return &l, nil
	}
	acct, proj, kind, err := events.ParseSubject(raw.Subject)
	if err != nil || kind != events.KindDeadLetter || l.Reason == "" ||
		scoped && (acct != account || proj != project) {
		return nil, fmt.Errorf("sequence %d: %w", seq, ErrNotDeadLetter)
	}
	replayed, err := in.replays(ctx, acct, proj)
	if err != nil {
		return nil, err
	}
	l.ReplayedAs = replayed[l.Seq]
	return &l, nil
}

// Outcome is what Replay did with one dead letter.
type Outcome struct {
	Letter  Letter
	NewSeq  uint64 // stream sequence of the republished decision
	Skipped string // why it was not replayed; empty when it was
}

// Replay republishes the original bytes of each dead letter that q selects
// to its original subject, and records the replay on the tenant's replay
// subject. A letter is skipped when it was replayed before or when its
// original subject is not exactly the tenant's decision subject: a replay
// never moves an event to another tenant or kind.
//
// The decision goes out before its record, so a replay cut off between
// the two may be repeated; the repeat is one row to every reader, because
// storage keys rows by event id.
func (in *Inspector) Replay(ctx context.Context, q Query, pub *bus.Publisher) ([]Outcome, error) {
	letters, err := in.List(ctx, q)
	if err != nil {
		return nil, err
	}
	want, _ := events.Subject(q.Account, q.Project, events.KindDecision)
	recordSubj, _ := bus.ReplaySubject(q.Account, q.Project)
	out := make([]Outcome, 0, len(letters))
	for _, l := range letters {
		o := Outcome{Letter: l}
		switch {
		case l.ReplayedAs != 0:
			o.Skipped = fmt.Sprintf("already replayed as %d", l.ReplayedAs)
		case l.OriginalSubject != want:
			o.Skipped = fmt.Sprintf("original subject %q is not %s", l.OriginalSubject, want)
		}
		if o.Skipped != "" {
			out = append(out, o)
			continue
		}

		m := nats.NewMsg(want)
		m.Data = l.Data
		m.Header.Set(bus.HeaderReplayOf, strconv.FormatUint(l.Seq, 10))
		ack, err := pub.PublishAck(ctx, m)
		if err != nil {
			return out, fmt.Errorf("replay dead letter %d: %w", l.Seq, err)
		}
		o.NewSeq = ack.Sequence

		rec := nats.NewMsg(recordSubj)
		rec.Header.Set(bus.HeaderReplayOf, strconv.FormatUint(l.Seq, 10))
		rec.Header.Set(bus.HeaderReplayedSeq, strconv.FormatUint(ack.Sequence, 10))
		if _, err := pub.PublishAck(ctx, rec); err != nil {
			return out, fmt.Errorf("record replay of dead letter %d as %d: %w",
				l.Seq, ack.Sequence, err)
		}
		out = append(out, o)
	}
	return out, nil
}

// replays maps each replayed dead letter of the tenant to the sequence of
// its republished decision.
func (in *Inspector) replays(ctx context.Context, account, project string) (map[uint64]uint64, error) {
	subj, err := bus.ReplaySubject(account, project)
	if err != nil {
		return nil, err
	}
	msgs, err := in.read(ctx, subj, time.Time{})
	if err != nil {
		return nil, err
	}
	out := make(map[uint64]uint64, len(msgs))
	for _, m := range msgs {
		of, err1 := strconv.ParseUint(m.header.Get(bus.HeaderReplayOf), 10, 64)
		as, err2 := strconv.ParseUint(m.header.Get(bus.HeaderReplayedSeq), 10, 64)
		if err1 == nil && err2 == nil {
			out[of] = as
		}
	}
	return out, nil
}

type stored struct {
	seq     uint64
	time    time.Time
	subject string
	header  nats.Header
	data    []byte
}

// read returns every message on subject stored so far (since a time, if
// not zero), in stream order.
func (in *Inspector) read(ctx context.Context, subject string, since time.Time) ([]stored, error) {
	st, err := in.js.Stream(ctx, in.stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", in.stream, err)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}
	if !since.IsZero() {
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &since
	}
	c, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", subject, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", subject, err)
	}
	total := info.NumPending
	out := make([]stored, 0, total)
	for uint64(len(out)) < total {
		n := len(out)
		if out, err = fetch(ctx, c, out, int(min(total-uint64(n), 1000))); err != nil {
			return nil, fmt.Errorf("read %s: %w", subject, err)
		}
		if len(out) == n {
			// Messages can age out of the stream while it is read.
			break
		}
	}
	return out, nil
}

// fetch appends up to n messages of c to out, waiting at most 5s.
func fetch(ctx context.Context, c jetstream.Consumer, out []stored, n int) ([]stored, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	batch, err := c.Fetch(n, jetstream.FetchContext(ctx))
	if err != nil {
		return out, err
	}
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			return out, err
		}
		out = append(out, stored{seq: md.Sequence.Stream, time: md.Timestamp,
			subject: m.Subject(), header: m.Headers(), data: m.Data()})
	}
	if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return out, err
	}
	return out, nil
}

func toLetter(m stored) Letter {
	h := m.header
	l := Letter{Seq: m.seq, Time: m.time, Subject: m.subject, Header: h, Data: m.data}
	if h == nil {
		return l
	}
	l.Reason = events.Reason(h.Get(bus.HeaderReason))
	l.Detail = h.Get(bus.HeaderDetail)
	l.OriginalSubject = h.Get(bus.HeaderOriginalSubject)
	l.OriginalSeq, _ = strconv.ParseUint(h.Get(bus.HeaderOriginalSeq), 10, 64)
	l.ReplayOf, _ = strconv.ParseUint(h.Get(bus.HeaderReplayOf), 10, 64)
	return l
}
