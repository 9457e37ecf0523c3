package export_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/events"
	"github.com/guardwatch/observatory/internal/export"
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/gen"
	"github.com/guardwatch/observatory/internal/store"
)

var (
	acme    = gen.Tenant{Account: "acme", Project: "proj_prod"}
	staging = gen.Tenant{Account: "acme", Project: "proj_staging"}
	globex  = gen.Tenant{Account: "globex", Project: "proj_prod"}
)

// crafted are events of acme/proj_prod whose text tests the CSV rules.
func crafted(base time.Time) []*events.Event {
	g := gen.New(99, []gen.Tenant{acme}, nil)
	texts := []string{"=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "\tTab", "\rCR",
		"'quoted", "semi;colon", `back\slash`, "a,b", "new\nline", `"q"`}
	var out []*events.Event
	for i, s := range texts {
		ev := g.NextFor(acme)
		ev.EventID = fmt.Sprintf("crafted-%02d", i)
		ev.OccurredAt = base.Add(time.Duration(i) * time.Second)
		ev.Reason = s
		ev.ThreatCategories = []string{s, "pii"}
		ev.Metadata = map[string]string{"k=" + s: s + "=v", "a": "1"}
		ev.DeterminingPolicies = []events.Policy{
			{PolicyID: "p;1", Tags: []string{"x,y", s}},
			{PolicyID: s, RejectMessage: s},
		}
		out = append(out, ev)
	}
	// An event with every optional part missing.
	bare := g.NextFor(acme)
	bare.EventID, bare.OccurredAt = "crafted-bare", base.Add(20*time.Second)
	bare.Identity, bare.Model, bare.Tool, bare.Content = nil, nil, nil, nil
	bare.Signals, bare.Detectors, bare.DeterminingPolicies = nil, nil, nil
	bare.ThreatCategories, bare.Metadata, bare.Labels, bare.ConversationTurn = nil, nil, nil, nil
	return append(out, bare)
}

// expected reads the scope's rows between from and to (whole seconds)
// straight from ClickHouse, oldest first, each event id once.
func expected(t testing.TB, st *store.Store, sc store.Scope, from, to time.Time,
	extra string, args ...any) []stored {
	t.Helper()
	q := "SELECT event_id, raw FROM " + st.Database() + ".decisions" +
		" WHERE account_id = ? AND project_id = ? AND occurred_at >= ? AND occurred_at < ? " +
		extra + " ORDER BY occurred_at, occurred_ms, event_id LIMIT 1 BY event_id"
	rows, err := st.Conn().Query(t.Context(), q,
		append([]any{sc.Account(), sc.Project(), from, to}, args...)...)
	require.NoError(t, err)
	defer rows.Close()
	var out []stored
	for rows.Next() {
		var s stored
		require.NoError(t, rows.Scan(&s.ID, &s.Raw))
		out = append(out, s)
	}
	require.NoError(t, rows.Err())
	return out
}

func rangeFilter(from, to time.Time) filter.Filter {
	return filter.Filter{From: from, To: to}
}

func TestFilesMatchClickHouse(t *testing.T) {
	st := openStore(t)
	seed(t, st, 300, acme, staging, globex)
	base := time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Second)
	require.NoError(t, st.Insert(t.Context(), crafted(base)))
	e := newExporter(t, st, nil)
	sc := mustScope(t, "acme", "proj_prod")
	from := time.Now().UTC().Add(-4 * time.Hour).Truncate(time.Second)
	to := time.Now().UTC().Add(time.Hour).Truncate(time.Second)

	text := func(s string) filter.Filter {
		f := rangeFilter(from, to)
		f.Text = s
		return f
	}
	const textSQL = "AND (positionCaseInsensitiveUTF8(reason, ?) > 0 OR " +
		"positionCaseInsensitiveUTF8(content_preview, ?) > 0)"
	cases := []struct {
		name     string
		filter   filter.Filter
		sql      string
		args     []any
		previews bool
	}{
		{"all", rangeFilter(from, to), "", nil, true},
		{"blocked", func() filter.Filter {
			f := rangeFilter(from, to)
			f.Outcomes = []string{"blocked"}
			return f
		}(), "AND outcome = 'blocked'", nil, true},
		{"without previews", rangeFilter(from, to), "", nil, false},
		// Filter values are written into the export's queries as literals.
		{"text with a backslash", text(`BACK\slash`), textSQL,
			[]any{`BACK\slash`, `BACK\slash`}, true},
		{"text with a quote", text("'quoted"), textSQL, []any{"'quoted", "'quoted"}, true},
		{"score and severity", func() filter.Filter {
			f := rangeFilter(from, to)
			f.MinScore, f.MinSeverity = 40.5, "medium"
			return f
		}(), "AND max_score >= ? AND toInt8(highest_severity) >= ?",
			[]any{float32(40.5), int8(events.SeverityRank("medium") + 1)}, true},
	}
	for _, c := range cases {
		want := expected(t, st, sc, from, to, c.sql, c.args...)
		require.NotEmpty(t, want)
		for _, format := range export.Formats {
			for _, gz := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%s/gzip=%v", c.name, format, gz), func(t *testing.T) {
					b, res := run(t, e, export.Request{Scope: sc, Filter: c.filter,
						Format: format, Gzip: gz, ContentPreviews: c.previews})
					require.EqualValues(t, len(want), res.Manifest.Rows)
					checkFile(t, format, plain(t, b, gz), want, c.previews)
				})
			}
		}
	}
}

// checkFile compares a file with the rows ClickHouse holds, in order.
func checkFile(t *testing.T, format export.Format, b []byte, want []stored, previews bool) {
	t.Helper()
	switch format {
	case export.NDJSON:
		got := readNDJSON(t, b)
		require.Len(t, got, len(want))
		for i, w := range want {
			var m map[string]any
			require.NoError(t, json.Unmarshal([]byte(w.Raw), &m))
			if c, ok := m["content"].(map[string]any); ok && !previews {
				delete(c, "redacted_preview")
			}
			require.Equal(t, m, got[i], "row %d (%s)", i, w.ID)
		}
	case export.CSV, export.Parquet:
		var got []map[string]string
		if format == export.CSV {
			got = readCSV(t, b)
		} else {
			got = readParquet(t, b)
		}
		require.Len(t, got, len(want))
		for i, w := range want {
			require.Equal(t, wantCells(w.event(t), previews), got[i], "row %d (%s)", i, w.ID)
		}
	}
}

func TestSmallWindowsGiveTheSameFile(t *testing.T) {
	st := openStore(t)
	seed(t, st, 400, acme)
	sc := mustScope(t, "acme", "proj_prod")
	f := parseFilter(t, "range=24h")
	whole, _ := run(t, newExporter(t, st, nil), export.Request{Scope: sc, Filter: f,
		Format: export.NDJSON})
	// Three rows per window: hours and minutes are split, and a second
	// holding four rows is read whole.
	small, _ := run(t, newExporter(t, st, func(c *export.Config) { c.WindowRows = 3 }),
		export.Request{Scope: sc, Filter: f, Format: export.NDJSON})
	require.Len(t, readNDJSON(t, whole), 400)
	require.Equal(t, string(whole), string(small))
}

func TestRangeIsHalfOpen(t *testing.T) {
	st := openStore(t)
	g := gen.New(3, []gen.Tenant{acme}, nil)
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	var evs []*events.Event
	for i, d := range []time.Duration{-time.Millisecond, 0, 999 * time.Millisecond,
		time.Second, time.Second + time.Millisecond} {
		ev := g.NextFor(acme)
		ev.EventID, ev.OccurredAt = fmt.Sprintf("edge-%d", i), at.Add(d)
		evs = append(evs, ev)
	}
	require.NoError(t, st.Insert(t.Context(), evs))
	b, res := run(t, newExporter(t, st, nil), export.Request{
		Scope:  mustScope(t, "acme", "proj_prod"),
		Filter: rangeFilter(at, at.Add(time.Second)), Format: export.NDJSON})
	var ids []string
	for _, m := range readNDJSON(t, b) {
		ids = append(ids, m["event_id"].(string))
	}
	require.Equal(t, []string{"edge-1", "edge-2"}, ids, "from inclusive, to exclusive")
	require.Equal(t, export.RangeNote, res.Manifest.Range.Note)
	require.Equal(t, at.Format("2006-01-02T15:04:05.000Z"), res.Manifest.Range.From)
}

func TestOtherTenantsNeverLeak(t *testing.T) {
	st := openStore(t)
	// The same project id and the same event ids in another account, and
	// another project of the same account.
	seed(t, st, 200, acme, globex, staging)
	e := newExporter(t, st, nil)
	// A range that spans every tenant's rows, and filters naming another
	// tenant's values: the scope alone decides.
	f := parseFilter(t, "range=90d&q=&account_id=globex&project_id=proj_staging")
	for _, format := range export.Formats {
		b, res := run(t, e, export.Request{Scope: mustScope(t, "acme", "proj_prod"),
			Filter: f, Format: format})
		require.EqualValues(t, 200, res.Manifest.Rows)
		var rows []map[string]string
		switch format {
		case export.CSV:
			rows = readCSV(t, b)
		case export.Parquet:
			rows = readParquet(t, b)
		default:
			for _, m := range readNDJSON(t, b) {
				rows = append(rows, map[string]string{"account_id": m["account_id"].(string),
					"project_id": m["project_id"].(string)})
			}
		}
		for _, r := range rows {
			require.Equal(t, "acme", r["account_id"])
			require.Equal(t, "proj_prod", r["project_id"])
		}
		require.NotContains(t, string(plain(t, b, false)), "globex")
		require.NotContains(t, string(plain(t, b, false)), "proj_staging")
	}
}

func TestInvalidUTF8IsReplacedVisibly(t *testing.T) {
	st := openStore(t)
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	ev := gen.New(5, []gen.Tenant{acme}, nil).NextFor(acme)
	ev.EventID, ev.OccurredAt, ev.Reason = "bad-utf8", at, "MARK"
	raw, err := json.Marshal(ev)
	require.NoError(t, err)
	// Stored text that ingest would have refused: bytes that are not UTF-8.
	bad := strings.Replace(string(raw), `"reason":"MARK"`, "\"reason\":\"a\xffb\xc3\"", 1)
	require.NotEqual(t, string(raw), bad)
	insertRaw(t, st, ev, bad)

	want := "a\uFFFDb\uFFFD"
	sc := mustScope(t, "acme", "proj_prod")
	for _, format := range export.Formats {
		b, _ := run(t, newExporter(t, st, nil), export.Request{Scope: sc,
			Filter: rangeFilter(at, at.Add(time.Second)), Format: format})
		switch format {
		case export.NDJSON:
			rows := readNDJSON(t, b)
			require.Len(t, rows, 1)
			require.Equal(t, want, rows[0]["reason"])
		case export.CSV:
			rows := readCSV(t, b)
			require.Len(t, rows, 1)
			require.Equal(t, want, rows[0]["reason"])
		case export.Parquet:
			rows := readParquet(t, b)
			require.Len(t, rows, 1)
			require.Equal(t, want, rows[0]["reason"])
		}
	}
}

// insertRaw stores ev with raw as its stored JSON, as a direct insert
// would, bypassing validation.
func insertRaw(t testing.TB, st *store.Store, ev *events.Event, raw string) {
	t.Helper()
	b, err := st.Conn().PrepareBatch(t.Context(), "INSERT INTO "+st.Database()+
		".decisions (account_id, project_id, occurred_at, occurred_ms, event_id, reason,"+
		" raw, ingested_at)")
	require.NoError(t, err)
	at := ev.OccurredAt.UTC()
	require.NoError(t, b.Append(ev.AccountID, ev.ProjectID, at.Truncate(time.Second),
		uint16(at.Nanosecond()/1e6), ev.EventID, ev.Reason, raw,
		uint64(time.Now().UnixMilli())))
	require.NoError(t, b.Send())
}

func TestExportLog(t *testing.T) {
	st := openStore(t)
	seed(t, st, 20, acme)
	e := newExporter(t, st, nil)
	sc := mustScope(t, "acme", "proj_prod")
	f := parseFilter(t, "range=24h&outcome=blocked,allowed")
	_, res := run(t, e, export.Request{Scope: sc, Filter: f, Format: export.CSV, Gzip: true,
		Actor: "auditor@acme"})

	// A reader that goes away part-way.
	j, err := e.NewJob(export.Request{Scope: sc, Filter: f, Format: export.NDJSON,
		Actor: "quitter@acme"})
	require.NoError(t, err)
	_, err = e.Run(t.Context(), j, failingWriter{})
	require.Error(t, err)

	recs, err := st.ListExports(t.Context(), sc, "", 10)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	byID := map[string]store.ExportRecord{}
	for _, r := range recs {
		byID[r.ExportID] = r
	}
	ok := byID[res.Manifest.ExportID]
	require.Equal(t, store.ExportComplete, ok.Status)
	require.Equal(t, "auditor@acme", ok.Actor)
	require.Equal(t, "csv", ok.Format)
	require.True(t, ok.Gzip)
	require.Equal(t, "outcome=blocked%2Callowed", ok.Filter)
	require.Equal(t, res.Manifest.SHA256, ok.SHA256)
	require.EqualValues(t, res.Manifest.Rows, ok.Rows)
	require.Equal(t, string(res.Signed), ok.Manifest)
	failed := byID[j.ID]
	require.Equal(t, store.ExportFailed, failed.Status)
	require.Empty(t, failed.Manifest)

	mine, err := st.ListExports(t.Context(), sc, "quitter@acme", 10)
	require.NoError(t, err)
	require.Len(t, mine, 1)
	other, err := st.ListExports(t.Context(), mustScope(t, "globex", "proj_prod"), "", 10)
	require.NoError(t, err)
	require.Empty(t, other)
	_, err = st.GetExport(t.Context(), mustScope(t, "globex", "proj_prod"), j.ID)
	require.ErrorIs(t, err, store.ErrNotFound)
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, fmt.Errorf("connection reset") }

func TestTooManyExportsAreRefused(t *testing.T) {
	st := openStore(t)
	seed(t, st, 600, acme)
	e := newExporter(t, st, func(c *export.Config) { c.MaxPerAccount = 1 })
	sc := mustScope(t, "acme", "proj_prod")
	req := export.Request{Scope: sc, Filter: parseFilter(t, "range=24h"), Format: export.CSV,
		Actor: "a"}
	block := make(chan struct{})
	started := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		j, _ := e.NewJob(req)
		_, err := e.Run(t.Context(), j, blockingWriter{started, block})
		done <- err
	}()
	<-started
	j, err := e.NewJob(req)
	require.NoError(t, err)
	_, err = e.Run(t.Context(), j, &bytes.Buffer{})
	require.ErrorIs(t, err, export.ErrBusy)
	close(block)
	require.NoError(t, <-done)
	_, err = e.Run(t.Context(), j, &bytes.Buffer{})
	require.NoError(t, err, "the slot is free again")
}

type blockingWriter struct {
	started chan<- struct{}
	block   <-chan struct{}
}

func (w blockingWriter) Write(p []byte) (int, error) {
	select {
	case w.started <- struct{}{}:
	default:
	}
	<-w.block
	return len(p), nil
}

func TestRequestsAreChecked(t *testing.T) {
	st := openStore(t)
	e := newExporter(t, st, nil)
	sc := mustScope(t, "acme", "proj_prod")
	now := time.Now()
	bad := []export.Request{
		{Filter: rangeFilter(now.Add(-time.Hour), now), Format: export.CSV, Actor: "a"},
		{Scope: sc, Format: export.CSV, Actor: "a"},
		{Scope: sc, Filter: rangeFilter(now, now.Add(-time.Hour)), Format: export.CSV, Actor: "a"},
		{Scope: sc, Filter: rangeFilter(now.Add(-time.Hour), now), Format: "xlsx", Actor: "a"},
		{Scope: sc, Filter: rangeFilter(now.Add(-time.Hour), now), Format: export.CSV},
	}
	for i, r := range bad {
		_, err := e.NewJob(r)
		require.ErrorIs(t, err, export.ErrRequest, "case %d", i)
	}
	_, err := export.ParseFormat("PARQUET")
	require.NoError(t, err)
	_, err = export.ParseFormat("xlsx")
	require.ErrorIs(t, err, export.ErrRequest)
}
