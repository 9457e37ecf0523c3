package export

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// scanner reads one JSON text in a single pass, without building a tree:
// the flattener asks for the members it wants and skips the rest. It
// accepts what encoding/json accepts for valid UTF-8 input; a lone
// surrogate escape becomes U+FFFD, as encoding/json makes it.
type scanner struct {
	s string
	i int
}

var errSyntax = errors.New("invalid JSON")

func (sc *scanner) fail(what string) error {
	return fmt.Errorf("%w: %s at offset %d", errSyntax, what, sc.i)
}

func (sc *scanner) ws() {
	for sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case ' ', '\t', '\n', '\r':
			sc.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, or 0 at the end.
func (sc *scanner) peek() byte {
	if sc.i < len(sc.s) && sc.s[sc.i] > ' ' {
		return sc.s[sc.i] // stored events are compact: most tokens follow at once
	}
	sc.ws()
	if sc.i < len(sc.s) {
		return sc.s[sc.i]
	}
	return 0
}

func (sc *scanner) expect(c byte) error {
	if sc.peek() != c {
		return sc.fail("expected " + strconv.QuoteRune(rune(c)))
	}
	sc.i++
	return nil
}

// next advances to the next member of an object or element of an array
// whose opening bracket has been consumed: first says whether none has
// been read yet, close is '}' or ']'. It reports false at the end.
func (sc *scanner) next(first bool, close byte) (bool, error) {
	c := sc.peek()
	switch {
	case c == close:
		sc.i++
		return false, nil
	case first:
		return true, nil
	case c == ',':
		sc.i++
		return true, nil
	}
	return false, sc.fail("expected , or " + string(close))
}

// name reads a member name and its colon. A name without escapes is
// returned as a substring of the input; one with escapes is unescaped
// into buf.
func (sc *scanner) name(buf *[]byte) (string, error) {
	s, ok, err := sc.plain()
	if err != nil {
		return "", err
	}
	if !ok {
		if *buf, err = sc.appendString((*buf)[:0]); err != nil {
			return "", err
		}
		s = string(*buf)
	}
	if sc.i < len(sc.s) && sc.s[sc.i] == ':' {
		sc.i++
		return s, nil
	}
	return s, sc.expect(':')
}

// key reads a member name and its colon, appending the unescaped name to
// dst.
func (sc *scanner) key(dst []byte) ([]byte, error) {
	if sc.peek() != '"' {
		return dst, sc.fail("expected a member name")
	}
	dst, err := sc.appendString(dst)
	if err != nil {
		return dst, err
	}
	return dst, sc.expect(':')
}

// null consumes a null and reports whether there was one.
func (sc *scanner) null() bool {
	if sc.peek() == 'n' && strings.HasPrefix(sc.s[sc.i:], "null") {
		sc.i += 4
		return true
	}
	return false
}

// plain consumes a string without escapes and returns its text, a
// substring of the input. For a string with escapes it consumes nothing
// and reports false.
func (sc *scanner) plain() (string, bool, error) {
	s, i := sc.s, sc.i
	if i >= len(s) || s[i] != '"' {
		if sc.peek() != '"' {
			return "", false, sc.fail("expected a string")
		}
		i = sc.i
	}
	i++
	e := stringEnd(s, i)
	if e < 0 {
		return "", false, sc.fail("unterminated string")
	}
	if s[e] != '"' {
		return "", false, nil
	}
	sc.i = e + 1
	return s[i:e], true, nil
}

// stringEnd returns the index of the first '"' or '\' of s at or after
// i, or -1. It tests eight bytes at a time.
func stringEnd(s string, i int) int {
	for ; i+8 <= len(s); i += 8 {
		x := load64(s[i : i+8])
		if m := zeroBytes(x^('"'*ones)) | zeroBytes(x^('\\'*ones)); m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			return i
		}
	}
	return -1
}

const ones, highs = 0x0101010101010101, 0x8080808080808080

// zeroBytes has the high bit of the first zero byte of x set, and maybe
// of some after it, but of none before it.
func zeroBytes(x uint64) uint64 { return (x - ones) &^ x & highs }

// load64 reads eight bytes, little-endian.
func load64(b string) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// appendString consumes a string and appends its unescaped text to dst.
// Control characters are not checked for: the stored text was validated
// when it arrived.
func (sc *scanner) appendString(dst []byte) ([]byte, error) {
	if sc.peek() != '"' {
		return dst, sc.fail("expected a string")
	}
	sc.i++
	for {
		e := stringEnd(sc.s, sc.i)
		if e < 0 {
			return dst, sc.fail("unterminated string")
		}
		dst = append(dst, sc.s[sc.i:e]...)
		sc.i = e
		if sc.s[e] == '"' {
			sc.i++
			return dst, nil
		}
		var err error
		if dst, err = sc.escape(dst); err != nil {
			return dst, err
		}
	}
}

// escape consumes one escape sequence, the scanner at its backslash.
func (sc *scanner) escape(dst []byte) ([]byte, error) {
	if sc.i+1 >= len(sc.s) {
		return dst, sc.fail("unterminated escape")
	}
	c := sc.s[sc.i+1]
	sc.i += 2
	switch c {
	case '"', '\\', '/':
		return append(dst, c), nil
	case 'b':
		return append(dst, '\b'), nil
	case 'f':
		return append(dst, '\f'), nil
	case 'n':
		return append(dst, '\n'), nil
	case 'r':
		return append(dst, '\r'), nil
	case 't':
		return append(dst, '\t'), nil
	case 'u':
		r, ok := sc.hex4()
		if !ok {
			return dst, sc.fail("bad \\u escape")
		}
		if utf16.IsSurrogate(r) {
			r2 := utf8.RuneError
			if sc.i+1 < len(sc.s) && sc.s[sc.i] == '\\' && sc.s[sc.i+1] == 'u' {
				save := sc.i
				sc.i += 2
				if lo, ok := sc.hex4(); ok && utf16.DecodeRune(r, lo) != utf8.RuneError {
					r2 = utf16.DecodeRune(r, lo)
				} else {
					sc.i = save
				}
			}
			r = r2
		}
		return utf8.AppendRune(dst, r), nil
	}
	return dst, sc.fail("bad escape")
}

func (sc *scanner) hex4() (rune, bool) {
	if sc.i+4 > len(sc.s) {
		return 0, false
	}
	v, err := strconv.ParseUint(sc.s[sc.i:sc.i+4], 16, 16)
	if err != nil {
		return 0, false
	}
	sc.i += 4
	return rune(v), true
}

// number consumes a number and returns its text, unchecked: callers
// convert it.
func (sc *scanner) number() (string, error) {
	sc.ws()
	start := sc.i
	for sc.i < len(sc.s) && numberByte(sc.s[sc.i]) {
		sc.i++
	}
	if sc.i == start {
		return "", sc.fail("expected a number")
	}
	return sc.s[start:sc.i], nil
}

func numberByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

func (sc *scanner) float() (float64, error) {
	text, err := sc.number()
	if err != nil {
		return 0, err
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return 0, sc.fail("bad number " + strconv.Quote(text))
	}
	return f, nil
}

func (sc *scanner) int() (int64, error) {
	text, err := sc.number()
	if err != nil {
		return 0, err
	}
	if n, err := strconv.ParseInt(text, 10, 64); err == nil {
		return n, nil
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return 0, sc.fail("bad number " + strconv.Quote(text))
	}
	return int64(f), nil
}

// skip consumes any value. Inside objects and arrays it only matches
// brackets and strings: the stored text was validated when it arrived.
func (sc *scanner) skip() error {
	switch c := sc.peek(); c {
	case '"':
		return sc.skipString()
	case '{', '[':
		depth := 0
		for sc.i < len(sc.s) {
			switch sc.s[sc.i] {
			case '"':
				if err := sc.skipString(); err != nil {
					return err
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			sc.i++
			if depth == 0 {
				return nil
			}
		}
		return sc.fail("unterminated value")
	case 't', 'f', 'n':
		for _, lit := range []string{"true", "false", "null"} {
			if strings.HasPrefix(sc.s[sc.i:], lit) {
				sc.i += len(lit)
				return nil
			}
		}
		return sc.fail("bad literal")
	default:
		_, err := sc.number()
		return err
	}
}

// skipString consumes a string without reading its text.
func (sc *scanner) skipString() error {
	sc.i++
	for sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case '"':
			sc.i++
			return nil
		case '\\':
			sc.i += 2
		default:
			sc.i++
		}
	}
	return sc.fail("unterminated string")
}

// end checks that only space follows the value.
func (sc *scanner) end() error {
	if sc.peek() != 0 {
		return sc.fail("data after the value")
	}
	return nil
}
