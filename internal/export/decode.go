package export

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/guardwatch/observatory/internal/events"
)

// lenient reads stored JSON whose strings may hold invalid UTF-8 or lone
// surrogate escapes; each becomes U+FFFD instead of failing the export.
var lenient = json.JoinOptions(jsontext.AllowInvalidUTF8(true))

// validUTF8 returns s with every byte that is not part of a valid UTF-8
// sequence replaced by U+FFFD, so a damaged string stays visibly damaged
// and keeps its length in characters instead of losing bytes.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// decodeEvent reads a stored event. Invalid UTF-8 in its strings becomes
// U+FFFD.
func decodeEvent(raw string, ev *events.Event) error {
	*ev = events.Event{}
	if err := json.Unmarshal([]byte(validUTF8(raw)), ev, lenient); err != nil {
		return fmt.Errorf("decode stored event: %w", err)
	}
	return nil
}

// appendLine appends the stored event as one compact JSON line. Without
// previews, the content preview is taken out first.
func appendLine(dst []byte, raw string, previews bool) ([]byte, error) {
	raw = validUTF8(raw)
	if !previews && strings.Contains(raw, `"redacted_preview"`) {
		var ev events.Event
		if err := decodeEvent(raw, &ev); err != nil {
			return dst, err
		}
		if ev.Content != nil {
			ev.Content.RedactedPreview = ""
		}
		b, err := json.Marshal(&ev, json.Deterministic(true))
		if err != nil {
			return dst, fmt.Errorf("encode event without preview: %w", err)
		}
		raw = string(b)
	}
	if compactJSON(raw) {
		return append(append(dst, raw...), '\n'), nil
	}
	n := len(dst)
	dst, err := jsontext.AppendFormat(dst, raw, lenient)
	if err != nil {
		return dst[:n], fmt.Errorf("compact stored event: %w", err)
	}
	return append(dst, '\n'), nil
}

// compactJSON reports whether s, as it stands, is one compact line: no
// whitespace outside strings and no control characters anywhere. Stored
// events are compact already, so most lines are copied as they are.
func compactJSON(s string) bool {
	if hasControl(s) {
		return false
	}
	if strings.IndexByte(s, '\\') >= 0 {
		return compactEscaped(s)
	}
	// Without escapes every quote opens or closes a string, so a space is
	// inside one exactly when an odd number of quotes precede it.
	in := false
	for {
		sp := strings.IndexByte(s, ' ')
		if sp < 0 {
			return in == (strings.Count(s, `"`)%2 == 1)
		}
		if strings.Count(s[:sp], `"`)%2 == 1 {
			in = !in
		}
		if !in {
			return false
		}
		s = s[sp+1:]
	}
}

// hasControl reports whether s holds a byte below 0x20, eight bytes at a
// time.
func hasControl(s string) bool {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		// A byte below 0x20 borrows into its high bit; one of 0x80 or
		// more is masked off by ^x.
		if x := load64(s[i : i+8]); (x-0x20*ones)&^x&highs != 0 {
			return true
		}
	}
	for ; i < len(s); i++ {
		if s[i] < 0x20 {
			return true
		}
	}
	return false
}

// compactEscaped is compactJSON for text with escapes, byte by byte.
func compactEscaped(s string) bool {
	in, esc := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c < 0x20:
			return false
		case esc:
			esc = false
		case in && c == '\\':
			esc = true
		case c == '"':
			in = !in
		case !in && c == ' ':
			return false
		}
	}
	return !in
}
