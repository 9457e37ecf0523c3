package alert

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"sort"
	"strconv"
	"time"
)

// seenCap is how many stream sequences a window remembers, so that a
// decision redelivered after a crash (between the window's write and the
// ack) is not counted twice. A redelivery comes after the ack wait; it is
// recognised unless the same group matched more than seenCap decisions
// in between.
const seenCap = 256

// window is the state of one subscription and group, shared by every
// evaluator replica through the state bucket and changed only by
// compare-and-set: the matches inside the window not yet spent on an
// alert, the cooldown, and the latest alert, kept so that a redelivered
// decision can republish it.
type window struct {
	Version    int64    `json:"v"`           // subscription version it counts for
	HitAt      []int64  `json:"h,omitempty"` // unix ms of unspent matches, ascending
	Sample     []string `json:"e,omitempty"` // newest event ids, at most sampleSize
	Seen       []uint64 `json:"s,omitempty"` // recent stream sequences, oldest first
	QuietFrom  int64    `json:"f,omitempty"` // unix ms; the latest alert's firing time
	QuietUntil int64    `json:"q,omitempty"` // unix ms; end of its cooldown
	Suppressed int64    `json:"x,omitempty"` // matches during the cooldown
	Fired      int64    `json:"n,omitempty"` // alerts fired so far
	Last       *fired   `json:"l,omitempty"`
}

// fired is the latest alert of a window and the decision that fired it.
type fired struct {
	Seq   uint64 `json:"s"`
	Alert *Alert `json:"a"`
}

// hit is one matching decision for one group.
type hit struct {
	Seq     uint64    // stream sequence: unique, the same on redelivery
	At      time.Time // stream arrival time
	Group   string
	Trigger EventSummary
}

// step is what applying a hit did.
type step int

const (
	stepCounted    step = iota // added to the window
	stepFired                  // added, and the window fired an alert
	stepSuppressed             // inside the cooldown: counted as suppressed
	stepDuplicate              // already applied; the state did not change
)

// clone returns a deep copy that apply may change.
func (w *window) clone() *window {
	c := *w
	c.HitAt = slices.Clone(w.HitAt)
	c.Sample = slices.Clone(w.Sample)
	c.Seen = slices.Clone(w.Seen)
	return &c
}

// apply adds a hit. On stepFired it returns the new alert; on
// stepDuplicate it returns the alert that this very decision fired before,
// if any, so that the caller can make sure it was handed on.
func (w *window) apply(sub *Subscription, h hit) (step, *Alert) {
	if w.Version != sub.Version {
		*w = window{Version: sub.Version}
	}
	if slices.Contains(w.Seen, h.Seq) {
		if w.Last != nil && w.Last.Seq == h.Seq {
			return stepDuplicate, w.Last.Alert
		}
		return stepDuplicate, nil
	}
	w.Seen = append(w.Seen, h.Seq)
	if len(w.Seen) > seenCap {
		w.Seen = w.Seen[len(w.Seen)-seenCap:]
	}

	// A match from before the latest alert that arrives after it (another
	// replica was slower) is not inside the cooldown: it counts.
	at := h.At.UnixMilli()
	if at >= w.QuietFrom && at < w.QuietUntil {
		w.Suppressed++
		return stepSuppressed, nil
	}
	i := sort.Search(len(w.HitAt), func(i int) bool { return w.HitAt[i] > at })
	w.HitAt = slices.Insert(w.HitAt, i, at)
	newest := w.HitAt[len(w.HitAt)-1]
	cut := newest - sub.Window.Std().Milliseconds()
	j := sort.Search(len(w.HitAt), func(i int) bool { return w.HitAt[i] > cut })
	w.HitAt = w.HitAt[j:]
	if n := len(w.HitAt); n > sub.Threshold {
		w.HitAt = w.HitAt[n-sub.Threshold:]
	}
	w.Sample = append(w.Sample, h.Trigger.EventID)
	if keep := min(len(w.HitAt), sampleSize); len(w.Sample) > keep {
		w.Sample = w.Sample[len(w.Sample)-keep:]
	}
	if len(w.HitAt) < sub.Threshold {
		return stepCounted, nil
	}

	a := &Alert{
		Type: AlertType, ID: alertID(sub, h), AccountID: sub.AccountID,
		ProjectID: sub.ProjectID, Subscription: SubRef{ID: sub.ID, Name: sub.Name},
		GroupBy: sub.GroupBy, Group: h.Group, Count: len(w.HitAt),
		Threshold: sub.Threshold, Window: sub.Window,
		FirstAt: time.UnixMilli(w.HitAt[0]).UTC(), LastAt: time.UnixMilli(newest).UTC(),
		FiredAt: h.At.UTC(), Suppressed: w.Suppressed, EventIDs: w.Sample,
		Trigger: h.Trigger,
	}
	w.HitAt, w.Sample, w.Suppressed = nil, nil, 0
	w.QuietFrom, w.QuietUntil = at, at+sub.Cooldown.Std().Milliseconds()
	w.Fired++
	w.Last = &fired{Seq: h.Seq, Alert: a}
	return stepFired, a
}

// alertID derives the idempotency key of the alert a decision fires for a
// group: the same decision always names the same alert.
func alertID(sub *Subscription, h hit) string {
	m := sha256.New()
	for _, s := range []string{sub.AccountID, sub.ProjectID, sub.ID,
		strconv.FormatInt(sub.Version, 10), h.Group, strconv.FormatUint(h.Seq, 10),
		strconv.FormatInt(h.At.UnixNano(), 10)} {
		m.Write([]byte(s))
		m.Write([]byte{0})
	}
	return "alr_" + hex.EncodeToString(m.Sum(nil)[:16])
}

// groupHash is the group's token in a state key: group values are free
// text, so they never reach a key as such.
func groupHash(group string) string {
	s := sha256.Sum256([]byte(group))
	return hex.EncodeToString(s[:12])
}
