package export

import (
	"encoding/csv"
	"strings"
	"testing"
)

// FuzzCSVWriter sends a stored event of any shape through the CSV encoder
// and reads the bytes back with encoding/csv. An event it writes is one
// record as wide as the header, ending in CR LF; each cell is the
// flattened value with at most a leading "'" added; and no cell starts
// with a character that makes a spreadsheet evaluate it.
func FuzzCSVWriter(f *testing.F) {
	for _, seed := range []string{
		`{"schema_version":"1","event_id":"e1","occurred_at":"2026-12-03T11:59:58.123Z",` +
			`"account_id":"acme","project_id":"p","reason":"=HYPERLINK(\"http://x\")",` +
			`"content":{"redacted_preview":"line1\r\nline2\r\"q\""},` +
			`"metadata":{"-k":"+v","@":"\t="},"threat_categories":["a,b","c\"d"],` +
			`"signals":[{"id":"s","detector":"d","score":97.5}]}`,
		`{}`, `[]`, ``, `null`, `{"reason":"\u0000\u2028\r"}`, "{\"reason\":\"\xff\xfe\"}",
		`{"reason":"'=quoted"}`, `{"event_id":"\r"}`, `{"labels":{"a":"b\nc"}}`,
		`{"determining_policies":[{"policy_id":"=1","tags":["@x","-y"]}]}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		enc := &csvEncoder{previews: true}
		c := &chunk{ids: []string{"e"}, raws: []string{raw}}
		if err := enc.encode(c, &workerState{}); err != nil {
			return // a stored row the exporter cannot read is reported, not written
		}
		out := string(c.out)
		if !strings.HasSuffix(out, "\r\n") {
			t.Fatalf("record does not end in CR LF: %q", out)
		}
		r := csv.NewReader(strings.NewReader(out))
		r.FieldsPerRecord = len(csvColumns)
		recs, err := r.ReadAll()
		if err != nil {
			t.Fatalf("written record does not read back: %v\n%q", err, out)
		}
		if len(recs) != 1 {
			t.Fatalf("one event became %d records:\n%q", len(recs), out)
		}

		var fl flattener
		fl.previews = true
		var row flatRow
		if err := fl.flatten(validUTF8(raw), &row); err != nil {
			t.Fatalf("encoded an event that does not flatten: %v", err)
		}
		for i, col := range csvColumns {
			got := recs[0][i]
			// The reader turns CR LF inside a quoted value into LF.
			want := strings.ReplaceAll(neutralise(string(col.cell(nil, &row))), "\r\n", "\n")
			if got != want {
				t.Fatalf("column %s: read back %q, want %q", col.name, got, want)
			}
			if got != "" && strings.ContainsRune("=+-@\t\r", rune(got[0])) {
				t.Fatalf("column %s starts a formula: %q", col.name, got)
			}
		}
	})
}
