package web

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// clean makes a string from an event safe to show as text: invalid UTF-8
// becomes U+FFFD, control characters become visible pictures, bidi
// controls (which could make text read backwards) are shown as their code
// point, and the result is cut at max runes with an ellipsis (0 = no cut).
// HTML escaping is templ's job; clean only keeps the text honest.
func clean(s string, max int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	var b strings.Builder
	n := 0
	for _, r := range s {
		if max > 0 && n >= max {
			b.WriteString("…")
			break
		}
		n++
		switch {
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case r < 0x20:
			b.WriteRune(0x2400 + r)
		case r == 0x7f:
			b.WriteRune('\u2421')
		case isBidiControl(r):
			fmt.Fprintf(&b, "[U+%04X]", r)
		case unicode.Is(unicode.Cc, r):
			b.WriteRune('\uFFFD')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func isBidiControl(r rune) bool {
	return r == 0x061C || r == 0x200E || r == 0x200F || (r >= 0x202A && r <= 0x202E) ||
		(r >= 0x2066 && r <= 0x2069)
}

// cleanAll cleans each string of a list.
func cleanAll(xs []string, max int) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = clean(x, max)
	}
	return out
}

// TimeView is an instant shown in the viewer's zone, with the exact UTC
// value in the markup.
type TimeView struct {
	Local string // in the viewer's zone, e.g. 2024-05-01 14:03:07.123
	Short string // time of day only when today, else the local date and time
	UTC   string // RFC 3339 with milliseconds
}

func timeView(t time.Time, loc *time.Location, now time.Time) TimeView {
	l := t.In(loc)
	v := TimeView{Local: l.Format("2006-01-02 15:04:05.000"),
		UTC: t.UTC().Format("2006-01-02T15:04:05.000Z")}
	if n := now.In(loc); n.YearDay() == l.YearDay() && n.Year() == l.Year() {
		v.Short = l.Format("15:04:05.000")
	} else {
		v.Short = l.Format("Jan 02 15:04:05")
	}
	return v
}

func ms(v float64) string {
	switch {
	case v >= 1000:
		return strconv.FormatFloat(v/1000, 'f', 2, 64) + " s"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64) + " ms"
	default:
		return strconv.FormatFloat(v, 'f', 1, 64) + " ms"
	}
}

func count(n uint64) string {
	s := strconv.FormatUint(n, 10)
	if len(s) <= 3 {
		return s
	}
	var b strings.Builder
	pre := len(s) % 3
	if pre > 0 {
		b.WriteString(s[:pre])
	}
	for i := pre; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

func duration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm %ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd %dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}

// sevClass and outcomeClass name the CSS classes of the colour badges;
// unknown values get the neutral class.
func sevClass(s string) string {
	switch s {
	case "critical", "high", "medium", "low":
		return "sev sev-" + s
	}
	return "sev sev-none"
}

func outcomeClass(s string) string {
	switch s {
	case "blocked", "alerted", "monitored", "allowed":
		return "oc oc-" + s
	}
	return "oc"
}

// pct renders a 0..1 share as an SVG length.
func pct(share float64) string {
	return strconv.FormatFloat(max(0, min(share, 1))*100, 'f', 1, 64)
}
