package export

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/gen"
)

// respell writes the same JSON value differently: every string with
// \u escapes (surrogate pairs beyond the BMP), space around every token,
// and members in reverse order.
func respell(b *strings.Builder, v any, rng *rand.Rand) {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		b.WriteString("{ ")
		for i := len(keys) - 1; i >= 0; i-- {
			respell(b, keys[i], rng)
			b.WriteString(" :\t")
			respell(b, x[keys[i]], rng)
			if i > 0 {
				b.WriteString(" ,\n")
			}
		}
		b.WriteString(" }")
	case []any:
		b.WriteString("[ ")
		for i, e := range x {
			if i > 0 {
				b.WriteString(" , ")
			}
			respell(b, e, rng)
		}
		b.WriteString(" ]")
	case string:
		b.WriteByte('"')
		for _, r := range x {
			switch {
			case r == '"' || r == '\\' || r < 0x20 || rng.IntN(3) == 0:
				for _, u := range utf16.Encode([]rune{r}) {
					fmt.Fprintf(b, `\u%04X`, u)
				}
			default:
				b.WriteRune(r)
			}
		}
		b.WriteByte('"')
	default:
		out, _ := json.Marshal(x)
		b.Write(out)
	}
}

// A stored event flattens to the same row however its JSON is spelled.
func TestScannerReadsEverySpelling(t *testing.T) {
	g := gen.New(8, nil, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	var fl, fl2 flattener
	fl.previews, fl2.previews = true, true
	for i := range 300 {
		ev := g.Next()
		ev.Reason = fmt.Sprintf("naïve \"quote\" \\ back 😀 tab\t%d", i)
		ev.Metadata = map[string]string{"ключ": "значение 😀", "k;=": "v\\;="}
		raw, err := json.Marshal(ev)
		require.NoError(t, err)
		var v any
		require.NoError(t, json.Unmarshal(raw, &v))
		var b strings.Builder
		respell(&b, v, rng)

		var want, got flatRow
		require.NoError(t, fl.flatten(string(raw), &want))
		require.NoError(t, fl2.flatten(b.String(), &got), b.String())
		require.Equal(t, want, got)
		require.Contains(t, got.Reason, "😀")
		require.Contains(t, got.Metadata, `k\;\==v\\\;\=`)
	}
}

func TestScannerEscapes(t *testing.T) {
	var fl flattener
	var r flatRow
	cases := map[string]string{
		`"plain"`:            "plain",
		`"a\nb\t\"c\"\\\/"`:  "a\nb\t\"c\"\\/",
		`"\u00e9\u20AC"`:     "é€",
		`"\ud83d\ude00"`:     "😀",
		`"lone \ud800 high"`: "lone \uFFFD high",
		`"lone \udc00 low"`:  "lone \uFFFD low",
		`"\ud800\u0041"`:     "\uFFFDA",
		`"trailing \ud83d"`:  "trailing \uFFFD",
	}
	for in, want := range cases {
		require.NoError(t, fl.flatten(`{"reason":`+in+`}`, &r), in)
		require.Equal(t, want, r.Reason, in)
	}
	for _, bad := range []string{`{"reason":"open}`, `{"reason":"\x"}`, `{"reason":"\u12"}`,
		`{"reason" "x"}`, `{"reason":"x",}`, `{"reason":"x"} {}`, `{"latency":{"total_ms":1e}}`,
		`{"signals":[{"score":--1}]}`, `{"x":[1,2}`, ``} {
		require.Error(t, fl.flatten(bad, &r), bad)
	}
}
