package export

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/guardwatch/observatory/internal/events"
)

// flattener turns stored event JSON into flat rows. It reads the JSON in
// one pass with a scanner, without building a tree or an events.Event,
// and gathers the text of all string fields of a row into one allocation
// that the fields share: CSV and Parquet exports spend most of their time
// here. One per goroutine.
type flattener struct {
	sc       scanner
	previews bool
	arena    []byte // the text of the row's string fields that had escapes
	spans    []span
	key      []byte // an escaped member name, unescaped
	tmp      []byte
	cols     [][]byte // list columns being built by objectColumns
	pairs    []pair
	mapText  []byte // keys and values of the map being rendered
}

// span is one string field's text: in the arena, or in the input when it
// had no escapes.
type span struct {
	dst   *string
	a, b  int
	input bool
}

// pair is a map entry's key and value, as offsets into mapText.
type pair struct{ k0, k1, v0, v1 int }

// flatten fills r from one stored event whose text is valid UTF-8.
// Members it does not know are skipped; a null member is an absent one.
//
// No text is copied for r: its string fields are substrings of raw, or,
// for lists, maps and strings with escapes, of text appended to fl.arena,
// which the caller empties (arena[:0]) only once r is no longer used.
func (fl *flattener) flatten(raw string, r *flatRow) error {
	fl.sc = scanner{s: raw}
	*r = flatRow{}
	fl.spans = fl.spans[:0]
	if err := fl.members(r); err != nil {
		return fmt.Errorf("decode stored event: %w", err)
	}
	all := view(fl.arena)
	for _, s := range fl.spans {
		if s.input {
			*s.dst = raw[s.a:s.b]
		} else {
			*s.dst = all[s.a:s.b]
		}
	}
	if r.Outcome == "" {
		r.Outcome = events.DeriveOutcome(r.Mode, r.Decision, r.ActualDecision)
	}
	return nil
}

// members reads the top-level object into r.
func (fl *flattener) members(r *flatRow) error {
	sc := &fl.sc
	if err := sc.expect('{'); err != nil {
		return err
	}
	for first := true; ; first = false {
		more, err := sc.next(first, '}')
		if err != nil || !more {
			if err == nil {
				err = sc.end()
			}
			return err
		}
		k, err := sc.name(&fl.key)
		if err != nil {
			return err
		}
		if sc.null() {
			continue
		}
		if err := fl.member(k, r); err != nil {
			return err
		}
	}
}

// member reads the value of one top-level member into r.
func (fl *flattener) member(k string, r *flatRow) error {
	sc := &fl.sc
	switch k {
	case "occurred_at":
		text, ok, err := sc.plain()
		if err != nil {
			return err
		}
		if !ok {
			if fl.tmp, err = sc.appendString(fl.tmp[:0]); err != nil {
				return err
			}
			text = string(fl.tmp)
		}
		t, err := time.Parse(time.RFC3339Nano, text)
		r.OccurredAt = t.UTC()
		return err
	case "conversation_turn":
		var err error
		r.turn, err = sc.int()
		r.ConversationTurn = &r.turn
		return err
	case "threat_categories":
		return fl.stringList(&r.ThreatCategories)
	case "determining_policies":
		return fl.policies(r)
	case "signals":
		return fl.signals(r)
	case "detectors":
		return fl.detectors(r)
	case "latency":
		return fl.fields(r.latencyField)
	case "identity":
		r.IdentityDelegationDepth = &r.depth
		return fl.fields(r.identityField)
	case "model":
		r.ModelTokensUsed = &r.tokens
		return fl.fields(r.modelField)
	case "tool":
		return fl.fields(r.toolField)
	case "content":
		r.ContentLength = &r.length
		if fl.previews {
			return fl.fields(r.contentField)
		}
		return fl.fields(func(k string) any {
			if k == "redacted_preview" {
				return nil
			}
			return r.contentField(k)
		})
	case "metadata":
		return fl.joinMap(&r.Metadata)
	case "labels":
		return fl.joinMap(&r.Labels)
	}
	if dst := r.scalar(k); dst != nil {
		return fl.str(dst)
	}
	return sc.skip()
}

// list marks a field that holds a list of strings.
type list struct{ dst *string }

// fields reads an object whose members go to the destination field
// returns for their name: a *string, *float64, *int64 or *list; members
// without one are skipped.
func (fl *flattener) fields(field func(k string) any) error {
	sc := &fl.sc
	if err := sc.expect('{'); err != nil {
		return err
	}
	for first := true; ; first = false {
		more, err := sc.next(first, '}')
		if err != nil || !more {
			return err
		}
		k, err := sc.name(&fl.key)
		if err != nil {
			return err
		}
		if sc.null() {
			continue
		}
		switch d := field(k).(type) {
		case *string:
			err = fl.str(d)
		case *float64:
			*d, err = sc.float()
		case *int64:
			*d, err = sc.int()
		case *list:
			err = fl.stringList(d.dst)
		default:
			err = sc.skip()
		}
		if err != nil {
			return err
		}
	}
}

func (r *flatRow) latencyField(k string) any {
	switch k {
	case "total_ms":
		return &r.LatencyTotalMS
	case "eval_ms":
		return &r.LatencyEvalMS
	}
	return nil
}

func (r *flatRow) identityField(k string) any {
	switch k {
	case "user_id":
		return &r.IdentityUserID
	case "agent_id":
		return &r.IdentityAgentID
	case "subject":
		return &r.IdentitySubject
	case "act_sub":
		return &r.IdentityActSub
	case "identity_type":
		return &r.IdentityType
	case "trust_level":
		return &r.IdentityTrustLevel
	case "delegation_depth":
		return r.IdentityDelegationDepth
	case "scopes":
		return &list{&r.IdentityScopes}
	}
	return nil
}

func (r *flatRow) modelField(k string) any {
	switch k {
	case "provider":
		return &r.ModelProvider
	case "model":
		return &r.ModelModel
	case "tokens_used":
		return r.ModelTokensUsed
	}
	return nil
}

func (r *flatRow) toolField(k string) any {
	switch k {
	case "name":
		return &r.ToolName
	case "server_id":
		return &r.ToolServerID
	case "category":
		return &r.ToolCategory
	}
	return nil
}

func (r *flatRow) contentField(k string) any {
	switch k {
	case "sha256":
		return &r.ContentSHA256
	case "length":
		return r.ContentLength
	case "redacted_preview":
		return &r.ContentPreview
	}
	return nil
}

// scalar returns the field of a top-level string member.
func (r *flatRow) scalar(k string) *string {
	switch k {
	case "schema_version":
		return &r.SchemaVersion
	case "event_id":
		return &r.EventID
	case "account_id":
		return &r.AccountID
	case "project_id":
		return &r.ProjectID
	case "source":
		return &r.Source
	case "application_id":
		return &r.ApplicationID
	case "request_id":
		return &r.RequestID
	case "audit_id":
		return &r.AuditID
	case "trace_id":
		return &r.TraceID
	case "span_id":
		return &r.SpanID
	case "session_id":
		return &r.SessionID
	case "event_type":
		return &r.EventType
	case "action":
		return &r.Action
	case "mode":
		return &r.Mode
	case "decision":
		return &r.Decision
	case "actual_decision":
		return &r.ActualDecision
	case "outcome":
		return &r.Outcome
	case "reason":
		return &r.Reason
	case "highest_severity":
		return &r.HighestSeverity
	}
	return nil
}

// str reads a string as the text of dst: a substring of the input when
// it has no escapes, else unescaped into the arena.
func (fl *flattener) str(dst *string) error {
	text, ok, err := fl.sc.plain()
	if err != nil {
		return err
	}
	if ok {
		if text != "" {
			b := fl.sc.i - 1 // the closing quote
			fl.spans = append(fl.spans, span{dst: dst, a: b - len(text), b: b, input: true})
		}
		return nil
	}
	a := len(fl.arena)
	fl.arena, err = fl.sc.appendString(fl.arena)
	fl.mark(dst, a)
	return err
}

// mark makes the arena from a to its end the text of dst.
func (fl *flattener) mark(dst *string, a int) {
	if len(fl.arena) > a {
		fl.spans = append(fl.spans, span{dst: dst, a: a, b: len(fl.arena)})
	}
}

// set queues b as the text of dst.
func (fl *flattener) set(dst *string, b []byte) {
	a := len(fl.arena)
	fl.arena = append(fl.arena, b...)
	fl.mark(dst, a)
}

// stringList reads an array of strings as a list cell: each escaped,
// joined with ";".
func (fl *flattener) stringList(dst *string) error {
	a := len(fl.arena)
	var err error
	fl.arena, err = fl.strings(fl.arena, ';', 0)
	fl.mark(dst, a)
	return err
}

// strings appends an array of strings, each escaped with extra, joined
// with sep.
func (fl *flattener) strings(dst []byte, sep, extra byte) ([]byte, error) {
	if err := fl.sc.expect('['); err != nil {
		return dst, err
	}
	for i := 0; ; i++ {
		more, err := fl.sc.next(i == 0, ']')
		if err != nil || !more {
			return dst, err
		}
		if i > 0 {
			dst = append(dst, sep)
		}
		if dst, err = fl.element(dst, extra); err != nil {
			return dst, err
		}
	}
}

// element appends a string (nothing for null), escaped with extra.
func (fl *flattener) element(dst []byte, extra byte) ([]byte, error) {
	if fl.sc.null() {
		return dst, nil
	}
	text, ok, err := fl.sc.plain()
	if err != nil {
		return dst, err
	}
	if ok {
		return appendEscaped(dst, text, extra), nil
	}
	fl.tmp, err = fl.sc.appendString(fl.tmp[:0])
	return appendEscaped(dst, view(fl.tmp), extra), err
}

// numberText appends a number in plain decimal notation: as written when
// it has no exponent, else formatted from its value. The value is parsed
// only when it is needed or the text is not a plain decimal.
func (fl *flattener) numberText(dst []byte, value bool) ([]byte, float64, error) {
	text, err := fl.sc.number()
	if err != nil {
		return dst, 0, err
	}
	plain := plainDecimal(text)
	if plain && !value {
		return append(dst, text...), 0, nil
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return dst, 0, fl.sc.fail("bad number " + strconv.Quote(text))
	}
	if plain {
		return append(dst, text...), f, nil
	}
	return strconv.AppendFloat(dst, f, 'f', -1, 64), f, nil
}

// plainDecimal reports whether text is a number without exponent that
// strconv.ParseFloat reads as a finite value: a sign, digits and at most
// one point, with at least one digit and fewer than 309 before the point.
func plainDecimal(text string) bool {
	i := 0
	if i < len(text) && (text[i] == '+' || text[i] == '-') {
		i++
	}
	digits, whole, point := 0, 0, false
	for ; i < len(text); i++ {
		switch c := text[i]; {
		case c >= '0' && c <= '9':
			digits++
			if !point {
				whole++
			}
		case c == '.' && !point:
			point = true
		default:
			return false
		}
	}
	return digits > 0 && whole < 309
}

func (fl *flattener) policies(r *flatRow) error {
	return fl.objectColumns([]*string{&r.PolicyIDs, &r.PolicySeverities, &r.PolicyCategories,
		&r.PolicyTags, &r.PolicyMessages}, func(k string) int {
		switch k {
		case "policy_id":
			return 0
		case "severity":
			return 1
		case "category":
			return 2
		case "tags":
			return 3
		case "reject_message":
			return 4
		}
		return -1
	}, func(col int, dst []byte) ([]byte, error) {
		if col != 3 {
			return fl.element(dst, 0)
		}
		return fl.strings(dst, ',', ',')
	})
}

func (fl *flattener) signals(r *flatRow) error {
	return fl.objectColumns([]*string{&r.SignalIDs, &r.SignalDetectors, &r.SignalScores,
		&r.SignalSeverities}, func(k string) int {
		switch k {
		case "id":
			return 0
		case "detector":
			return 1
		case "score":
			return 2
		case "severity":
			return 3
		}
		return -1
	}, func(col int, dst []byte) ([]byte, error) {
		if col != 2 {
			return fl.element(dst, 0)
		}
		dst, f, err := fl.numberText(dst, true)
		switch {
		case err != nil:
		case r.SignalMaxScore == nil:
			r.maxScore = f
			r.SignalMaxScore = &r.maxScore
		case f > *r.SignalMaxScore:
			*r.SignalMaxScore = f
		}
		return dst, err
	})
}

func (fl *flattener) detectors(r *flatRow) error {
	return fl.objectColumns([]*string{&r.DetectorNames, &r.DetectorTiers,
		&r.DetectorLatencies, &r.DetectorStatuses}, func(k string) int {
		switch k {
		case "name":
			return 0
		case "tier":
			return 1
		case "latency_ms":
			return 2
		case "status":
			return 3
		}
		return -1
	}, func(col int, dst []byte) ([]byte, error) {
		if col != 2 {
			return fl.element(dst, 0)
		}
		dst, _, err := fl.numberText(dst, false)
		return dst, err
	})
}

// objectColumns reads an array of objects as one list column per field
// (dsts, in column order), visiting each object once: col maps a member
// name to its column or -1, add appends a member's text to its column. A
// member an object lacks is an empty element.
func (fl *flattener) objectColumns(dsts []*string, col func(k string) int,
	add func(col int, dst []byte) ([]byte, error)) error {
	for len(fl.cols) < len(dsts) {
		fl.cols = append(fl.cols, nil)
	}
	cols := fl.cols[:len(dsts)]
	for c := range cols {
		cols[c] = cols[c][:0]
	}
	err := fl.objects(cols, col, add)
	for c, dst := range dsts {
		fl.set(dst, cols[c])
	}
	return err
}

func (fl *flattener) objects(cols [][]byte, col func(k string) int,
	add func(col int, dst []byte) ([]byte, error)) error {
	sc := &fl.sc
	if err := sc.expect('['); err != nil {
		return err
	}
	for i := 0; ; i++ {
		more, err := sc.next(i == 0, ']')
		if err != nil || !more {
			return err
		}
		if i > 0 {
			for c := range cols {
				cols[c] = append(cols[c], ';')
			}
		}
		if sc.null() {
			continue
		}
		if err := sc.expect('{'); err != nil {
			return err
		}
		for first := true; ; first = false {
			more, err := sc.next(first, '}')
			if err != nil {
				return err
			}
			if !more {
				break
			}
			k, err := sc.name(&fl.key)
			if err != nil {
				return err
			}
			c := col(k)
			switch {
			case c < 0:
				err = sc.skip()
			case sc.null():
			default:
				cols[c], err = add(c, cols[c])
			}
			if err != nil {
				return err
			}
		}
	}
}

// joinMap reads an object of strings as "k=v" pairs sorted by key,
// joined with ";".
func (fl *flattener) joinMap(dst *string) error {
	if err := fl.readMap(); err != nil {
		return err
	}
	t := fl.mapText
	slices.SortFunc(fl.pairs, func(a, b pair) int {
		return bytes.Compare(t[a.k0:a.k1], t[b.k0:b.k1])
	})
	a := len(fl.arena)
	for i, p := range fl.pairs {
		if i > 0 {
			fl.arena = append(fl.arena, ';')
		}
		fl.arena = appendEscaped(fl.arena, view(t[p.k0:p.k1]), '=')
		fl.arena = append(fl.arena, '=')
		fl.arena = appendEscaped(fl.arena, view(t[p.v0:p.v1]), '=')
	}
	fl.mark(dst, a)
	return nil
}

// readMap reads an object of strings into pairs and mapText.
func (fl *flattener) readMap() error {
	sc := &fl.sc
	fl.pairs, fl.mapText = fl.pairs[:0], fl.mapText[:0]
	if err := sc.expect('{'); err != nil {
		return err
	}
	for first := true; ; first = false {
		more, err := sc.next(first, '}')
		if err != nil || !more {
			return err
		}
		p := pair{k0: len(fl.mapText)}
		if fl.mapText, err = sc.key(fl.mapText); err != nil {
			return err
		}
		p.k1, p.v0 = len(fl.mapText), len(fl.mapText)
		if !sc.null() {
			if fl.mapText, err = sc.appendString(fl.mapText); err != nil {
				return err
			}
		}
		p.v1 = len(fl.mapText)
		fl.pairs = append(fl.pairs, p)
	}
}

// needsEscape reports whether s holds a "\\", ";" or extra (0 for none),
// eight bytes at a time.
func needsEscape(s string, extra byte) bool {
	if len(s) < 8 {
		for i := 0; i < len(s); i++ {
			if c := s[i]; c == '\\' || c == ';' || (c == extra && extra != 0) {
				return true
			}
		}
		return false
	}
	x := uint64(extra) * ones
	if extra == 0 {
		x = ';' * ones
	}
	escaped := func(v uint64) bool {
		return zeroBytes(v^('\\'*ones))|zeroBytes(v^(';'*ones))|zeroBytes(v^x) != 0
	}
	for i := 0; i+8 < len(s); i += 8 {
		if escaped(load64(s[i : i+8])) {
			return true
		}
	}
	return escaped(load64(s[len(s)-8:])) // the last eight, overlapping
}

// appendEscaped appends s with a backslash before "\", ";" and extra
// (0 for none), so that the separators stay unambiguous.
func appendEscaped(dst []byte, s string, extra byte) []byte {
	if !needsEscape(s, extra) {
		return append(dst, s...)
	}
	for _, c := range []byte(s) {
		if c == '\\' || c == ';' || (extra != 0 && c == extra) {
			dst = append(dst, '\\')
		}
		dst = append(dst, c)
	}
	return dst
}
