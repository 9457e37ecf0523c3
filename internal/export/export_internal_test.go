package export

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/gen"
)

func TestNeutralise(t *testing.T) {
	cases := map[string]string{
		"":          "",
		"plain":     "plain",
		"=1+1":      "'=1+1",
		"+1":        "'+1",
		"-1":        "'-1",
		"@SUM(A1)":  "'@SUM(A1)",
		"\tx":       "'\tx",
		"\rx":       "'\rx",
		"'already":  "''already",
		"a=b":       "a=b",
		" =spaced":  " =spaced",
		"1.5;-2":    "1.5;-2",
		"\u00a0=nb": "\u00a0=nb",
	}
	for in, want := range cases {
		require.Equal(t, want, neutralise(in), "%q", in)
	}
}

// Cells are written as encoding/csv writes the neutralised value, with
// CR and LF inside values kept, so that any CSV reader reads them back.
func TestCSVFieldsAreWrittenAsEncodingCSVWritesThem(t *testing.T) {
	cells := []string{"", "plain", "=1+1", "'q", "a,b", `say "hi"`, "x\r\ny", "\ny", " lead",
		"\u00a0nb", "\u2003em", `\.`, `\x`, "\t=", "\r", "-", "é,", "\xff\xfe", "\v", "a\"",
		"@,\"", "trail "}
	// And random strings over the bytes that matter: a start that may
	// need the guard or quotes, then plain text with at most one byte
	// that needs quotes anywhere.
	rng := rand.New(rand.NewPCG(3, 4))
	const starts, specials = " ,\"'=+-@\t\r\n\\.ax\xc2\xa0", ",\"\r\n"
	for range 3000 {
		b := []byte{starts[rng.IntN(len(starts))]}
		for range rng.IntN(24) {
			b = append(b, "ab. '=\\"[rng.IntN(7)])
		}
		if rng.IntN(2) == 0 {
			b[rng.IntN(len(b))] = specials[rng.IntN(len(specials))]
		}
		cells = append(cells, string(b))
	}
	for _, cell := range cells {
		var want bytes.Buffer
		w := csv.NewWriter(&want)
		require.NoError(t, w.Write([]string{neutralise(cell), "end"}))
		w.Flush()
		got := appendCSVField(nil, []byte(cell))
		require.Equal(t, want.String(), string(got)+",end\n", "%q", cell)
		if plainCell([]byte(cell)) {
			require.Equal(t, cell, string(got), "a plain cell is written as it is")
		}
	}
}

// The CSV time layout is timeLayout's, for every millisecond.
func TestAppendTimeFollowsTheLayout(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, d := range []time.Duration{0, 7 * time.Millisecond, 999*time.Millisecond + 999,
		-400 * 24 * time.Hour, 1 << 62, -1 << 62, 12345678901 * time.Millisecond} {
		tm := base.Add(d).In(time.FixedZone("x", 3600))
		require.Equal(t, formatTime(tm), string(appendTime(nil, tm)), "%v", tm)
	}
	require.Equal(t, "0999-01-01T00:00:00.000Z",
		string(appendTime(nil, time.Date(999, 1, 1, 0, 0, 0, 0, time.UTC))))
}

func TestAppendEscaped(t *testing.T) {
	require.Equal(t, `a\;b\\c,d`, string(appendEscaped(nil, `a;b\c,d`, 0)))
	require.Equal(t, `a\;b\\c\,d`, string(appendEscaped(nil, `a;b\c,d`, ',')))
	require.Equal(t, `k\=v`, string(appendEscaped(nil, `k=v`, '=')))
	require.Equal(t, "plain", string(appendEscaped(nil, "plain", '=')))
}

func TestValidUTF8(t *testing.T) {
	require.Equal(t, "ok é", validUTF8("ok é"))
	require.Equal(t, "a\uFFFDb", validUTF8("a\xffb"))
	require.Equal(t, "\uFFFD\uFFFD", validUTF8("\xc3\x28"[:1]+"\xff"))
	require.Equal(t, "\uFFFD(", validUTF8("\xc3\x28"), "each bad byte, nothing more")
}

func TestCompactJSON(t *testing.T) {
	require.True(t, compactJSON(`{"a":"b c","d":[1,2]}`))
	require.True(t, compactJSON(`{"a":"q\" x"}`))
	require.False(t, compactJSON(`{"a": 1}`))
	require.False(t, compactJSON("{\"a\":1}\n"))
	require.False(t, compactJSON("{\"a\":\"x\ny\"}"), "a raw newline in a string")
	require.False(t, compactJSON(`{"a":"open`))

	b, err := appendLine(nil, `{ "a" : [1, 2] }`, true)
	require.NoError(t, err)
	require.Equal(t, "{\"a\":[1,2]}\n", string(b))
	_, err = appendLine(nil, `{"a": `, true)
	require.Error(t, err)
}

// The fast compactness check agrees with a byte-by-byte scan of the
// same rule on stored events with spaces, quotes and control bytes put
// anywhere.
func TestCompactJSONAgreesWithByteScan(t *testing.T) {
	tn := gen.Tenant{Account: "acme", Project: "p"}
	g := gen.New(3, []gen.Tenant{tn}, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		raw, err := json.Marshal(g.NextFor(tn))
		require.NoError(t, err)
		require.True(t, compactJSON(string(raw)))
		for range 20 {
			b := slices.Clone(raw)
			for range rng.IntN(3) + 1 {
				i := rng.IntN(len(b) + 1)
				c := " \"\t\x01a"[rng.IntN(5)]
				b = slices.Insert(b, i, c)
			}
			s := string(b)
			require.Equal(t, compactEscaped(s), compactJSON(s), "%q", s)
		}
	}
}

// The CSV columns and the Parquet schema are one list: the n-th CSV
// column is the n-th field of flatRow, named with "_" for ".".
func TestCSVColumnsFollowTheParquetSchema(t *testing.T) {
	rt := reflect.TypeFor[flatRow]()
	exported := 0
	for i := range rt.NumField() {
		if rt.Field(i).IsExported() {
			exported++
		}
	}
	require.Equal(t, exported, len(csvColumns))
	for i, c := range csvColumns {
		tag := strings.Split(rt.Field(i).Tag.Get("parquet"), ",")[0]
		require.Equal(t, strings.ReplaceAll(c.name, ".", "_"), tag, "column %d", i)
	}
}

func TestFlattenIgnoresUnknownMembersAndDerivesOutcome(t *testing.T) {
	var fl flattener
	var r flatRow
	raw := `{"event_id":"e1","occurred_at":"2026-01-02T03:04:05.678Z","mode":"monitor",` +
		`"decision":"allow","actual_decision":"deny","future":{"x":[1]},` +
		`"identity":null,"conversation_turn":null,"metadata":null,` +
		`"signals":[{"id":"s","detector":"d","score":1e2},{"id":"t","detector":"d"}]}`
	require.NoError(t, fl.flatten(raw, &r))
	require.Equal(t, "e1", r.EventID)
	require.Equal(t, "monitored", r.Outcome)
	require.Equal(t, "100;", r.SignalScores)
	require.Equal(t, 100.0, *r.SignalMaxScore)
	require.Equal(t, 678, r.OccurredAt.Nanosecond()/1e6)
	require.Nil(t, r.IdentityDelegationDepth, "a null object is an absent one")
	require.Nil(t, r.ConversationTurn)
	require.Error(t, fl.flatten(`{"occurred_at":"yesterday"}`, &r))
	require.Error(t, fl.flatten(`[1]`, &r))
}

func TestParquetRowGroupsEndAtTheirBound(t *testing.T) {
	defer func(rows int) { rowGroupRows = rows }(rowGroupRows)
	rowGroupRows = 100
	var buf bytes.Buffer
	enc := newParquetEncoder(&buf, true, nil)
	var ws workerState
	for n := 0; n < 1000; n += chunkRows {
		c := &chunk{}
		for i := n; i < min(n+chunkRows, 1000); i++ {
			c.ids = append(c.ids, fmt.Sprint(i))
			c.raws = append(c.raws, fmt.Sprintf(
				`{"event_id":"e%04d","occurred_at":"2026-01-02T03:04:05Z","reason":"r"}`, i))
		}
		require.NoError(t, enc.encode(c, &ws))
		require.NoError(t, enc.write(c))
	}
	require.NoError(t, enc.close())

	rows, err := parquet.Read[flatRow](bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	require.NoError(t, err)
	require.Len(t, rows, 1000)
	for i, r := range rows {
		require.Equal(t, fmt.Sprintf("e%04d", i), r.EventID)
	}
	f, err := parquet.OpenFile(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	require.NoError(t, err)
	// Groups end at chunk boundaries once they reach 100 rows.
	require.Len(t, f.RowGroups(), 4)
}

// A number written as it is must be one ParseFloat reads as finite and
// without exponent, and the escape check must see every separator.
func TestNumberAndEscapeChecks(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 20000 {
		b := make([]byte, rng.IntN(6))
		for i := range b {
			b[i] = "0129+-.eE;\\,a"[rng.IntN(13)]
		}
		s := string(b)
		if plainDecimal(s) {
			f, err := strconv.ParseFloat(s, 64)
			require.NoError(t, err, "%q", s)
			require.False(t, math.IsInf(f, 0) || strings.ContainsAny(s, "eE"), "%q", s)
		}
		for _, extra := range []byte{0, ','} {
			want := strings.ContainsAny(s, `\;`) || (extra != 0 && strings.IndexByte(s, extra) >= 0)
			require.Equal(t, want, needsEscape(s, extra), "%q %q", s, extra)
			long := strings.Repeat("x", rng.IntN(20)) + s + strings.Repeat("y", rng.IntN(20))
			require.Equal(t, want, needsEscape(long, extra), "%q %q", long, extra)
		}
	}
	require.True(t, plainDecimal(strings.Repeat("9", 308)+".5"))
	require.False(t, plainDecimal(strings.Repeat("9", 309)), "may overflow")
}
