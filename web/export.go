package web

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/export"
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/store"
)

// exportWriteWindow is how long one write of an export download may take;
// the server's own write timeout is lifted for downloads, so that a large
// export is bounded by its reader's pace rather than by a fixed total.
const exportWriteWindow = 2 * time.Minute

// ExportView is the page that states what an export will hold and offers
// the download.
type ExportView struct {
	Chrome
	Action     string // the download form's target
	Hidden     []Hidden
	From, To   string // UTC, milliseconds
	FromLocal  string // in the viewer's zone
	ToLocal    string
	Zone       string
	Filters    []Chip
	Total      string
	Previews   bool
	Formats    []Option
	Bound      *BoundView // nil when exports are not set up
	Limits     string     // the tier's export limits, when the server has tiers
	ExportsURL string
	TracesURL  string
	// Disabled explains why exports cannot run here; the form is hidden.
	Disabled string
}

// BoundView states the upper bound an export started now would get.
type BoundView struct {
	NowUTC   string // the moment the page was made, UTC
	BoundUTC string // that moment minus the settle delay, UTC
	Settle   string // the settle delay, e.g. "30s"
}

// Hidden is a hidden form field.
type Hidden struct{ Name, Value string }

// exportHref is the traces page's link to the export page for the
// filter, or "" when exports are off or the viewer may not export. off
// says why the project has no exports when its tier offers none.
func (s *server) exportHref(ctx context.Context, sc store.Scope,
	f filter.Filter) (link, off string) {
	if s.Exports == nil {
		return "", ""
	}
	if lim, ok := s.exportLimits(sc); ok && lim.MaxRows <= 0 {
		return "", fmt.Sprintf("This project's tier (%s) includes no exports.", lim.Tier)
	}
	project := sc.Project()
	if ok, _ := s.allowed(ctx, authz.ExportAudit, authz.KindProject, project, ""); !ok {
		return "", ""
	}
	return href(projectPath(project, "export"), f.Values()), ""
}

// exportRequest authorizes an export of the project in the URL and reads
// its filter from q, with the range fixed to absolute UTC times.
func (s *server) exportRequest(r *http.Request, q url.Values) (store.Scope, filter.Filter,
	bool, error) {
	sc, err := s.projectScope(r, authz.ExportAudit)
	if err != nil {
		return store.Scope{}, filter.Filter{}, false, err
	}
	f, err := filter.Parse(q, s.Now(), viewerZone(r))
	if err != nil {
		return store.Scope{}, filter.Filter{}, false, err
	}
	f.Preset = ""
	content, err := s.allowed(r.Context(), authz.ViewContent, authz.KindProject,
		sc.Project(), "")
	if err != nil {
		return store.Scope{}, filter.Filter{}, false, err
	}
	f.ReasonOnly = !content
	return sc, f, content, nil
}

// exportValues is the filter as form values with an exact range.
func exportValues(f filter.Filter) url.Values {
	q := f.Values()
	q.Del("range")
	q.Set("from", f.From.UTC().Format(time.RFC3339Nano))
	q.Set("to", f.To.UTC().Format(time.RFC3339Nano))
	return q
}

func (s *server) exportPage(w http.ResponseWriter, r *http.Request) error {
	sc, f, content, err := s.exportRequest(r, r.URL.Query())
	if err != nil {
		return err
	}
	project := sc.Project()
	loc := viewerZone(r)
	const local = "2006-01-02 15:04:05.000"
	v := ExportView{
		Chrome:    s.chrome(r, project),
		Action:    projectPath(project, "export"),
		From:      utcMS(f.From),
		To:        utcMS(f.To),
		FromLocal: f.From.In(loc).Format(local), ToLocal: f.To.In(loc).Format(local),
		Zone: loc.String(), Previews: content,
		ExportsURL: projectPath(project, "exports"),
		TracesURL:  href(projectPath(project, "traces"), f.Values()),
	}
	v.Section = "exports"
	for k, vals := range exportValues(f) {
		for _, val := range vals {
			v.Hidden = append(v.Hidden, Hidden{k, val})
		}
		if k != "from" && k != "to" {
			v.Filters = append(v.Filters, Chip{Label: paramLabel(k), Value: clean(vals[0], 60)})
		}
	}
	for i, fm := range export.Formats {
		v.Formats = append(v.Formats, Option{Value: string(fm), Label: formatLabel(fm),
			Selected: i == 0})
	}
	if s.Exports == nil {
		v.Disabled = "Exports are not set up on this server: it has no signing key."
	} else if err := s.exportPageFacts(r.Context(), sc, f, &v); err != nil {
		return err
	}
	slices.SortFunc(v.Hidden, func(a, b Hidden) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Value, b.Value))
	})
	slices.SortFunc(v.Filters, func(a, b Chip) int { return strings.Compare(a.Label, b.Label) })
	return s.render(w, r, http.StatusOK, ExportPage(v))
}

// exportPageFacts fills in what an export started now would hold: its
// upper bound, the decisions the filter selects, and the tier's limits,
// disabling the form ahead of a download the tier would refuse.
func (s *server) exportPageFacts(ctx context.Context, sc store.Scope, f filter.Filter,
	v *ExportView) error {
	now := s.Now().UTC()
	settle := s.Exports.Settle()
	v.Bound = &BoundView{NowUTC: now.Format("2006-01-02 15:04:05 UTC"),
		BoundUTC: now.Add(-settle).Format("2006-01-02 15:04:05 UTC"), Settle: settle.String()}
	lim, tiered := s.exportLimits(sc)
	if tiered {
		v.Limits = limitsText(lim)
		if lim.MaxRows <= 0 {
			v.Disabled = fmt.Sprintf("This project's tier (%s) includes no exports.", lim.Tier)
			return nil
		}
		if span := f.To.Sub(f.From); span > lim.MaxRange {
			v.Disabled = fmt.Sprintf("The range spans %s; this project's tier (%s) exports "+
				"at most %s at once. Narrow the range on the traces page.",
				duration(span), lim.Tier, filter.SpanText(lim.MaxRange))
			return nil
		}
	}
	done, err := s.beginQuery(sc)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(ctx, s.QueryTimeout)
	defer cancel()
	n, err := s.Store.Count(ctx, sc, f)
	if err != nil {
		return err
	}
	v.Total = count(n)
	if !tiered {
		return nil
	}
	if n > uint64(lim.MaxRows) {
		v.Disabled = fmt.Sprintf("The filter selects %s decisions; this project's tier (%s) "+
			"exports at most %s in one file. Narrow the range or add filters, and export "+
			"in parts.", count(n), lim.Tier, count(uint64(lim.MaxRows)))
		return nil
	}
	if lim.PerDay > 0 {
		day := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
		used, err := s.Store.CountExportsSince(ctx, sc, day)
		if err != nil {
			return err
		}
		v.Limits += fmt.Sprintf(" Started today (UTC): %d.", used)
		if used >= uint64(lim.PerDay) {
			v.Disabled = fmt.Sprintf("This project's tier (%s) allows %d exports per day "+
				"(UTC), and %d started today. Exports are possible again after 00:00 UTC.",
				lim.Tier, lim.PerDay, used)
		}
	}
	return nil
}

// limitsText states a tier's export limits in a sentence.
func limitsText(lim export.Limits) string {
	if lim.MaxRows <= 0 {
		return fmt.Sprintf("This project's tier (%s) includes no exports.", lim.Tier)
	}
	t := fmt.Sprintf("This project's tier (%s) exports at most %s decisions and %s per "+
		"file, %d at a time", lim.Tier, count(uint64(lim.MaxRows)),
		filter.SpanText(lim.MaxRange), lim.Concurrent)
	if lim.PerDay > 0 {
		t += fmt.Sprintf(", %d per day (UTC)", lim.PerDay)
	}
	return t + "."
}

func formatLabel(f export.Format) string {
	switch f {
	case export.CSV:
		return "CSV (spreadsheets)"
	case export.NDJSON:
		return "NDJSON (events as published)"
	default:
		return "Parquet (typed columns)"
	}
}

// exportDownload streams the export file. The download form posts the
// exact range the export page stated; forms need the CSRF token, bearer
// requests (scripts) do not. Once the first byte has left, a failure can
// no longer change the status: the connection is cut instead, so the
// reader never mistakes a partial file for a whole one.
func (s *server) exportDownload(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return badParam("form", "could not be read")
	}
	sc, f, content, err := s.exportRequest(r, r.PostForm)
	if err != nil {
		return err
	}
	if v, _ := r.Context().Value(viewerKey{}).(viewerCtx); !v.bearer &&
		!checkCSRF(r.PostForm.Get("csrf"), s.csrfToken(r)) {
		return &userError{Status: http.StatusForbidden,
			Msg: "The form expired. Reload the page and try again."}
	}
	if s.Exports == nil {
		return &userError{Status: http.StatusServiceUnavailable,
			Msg: "Exports are not set up on this server."}
	}
	format, err := export.ParseFormat(r.PostForm.Get("format"))
	if err != nil {
		return badParam("format", "must be csv, ndjson or parquet")
	}
	job, err := s.Exports.NewJob(export.Request{Scope: sc, Filter: f, Format: format,
		Gzip: r.PostForm.Get("gzip") != "", Actor: principal(r.Context()).Subject,
		ContentPreviews: content})
	if err != nil {
		return &userError{Status: http.StatusBadRequest, Msg: err.Error()}
	}
	release, err := s.admitExport(r.Context(), job)
	if err != nil {
		return err
	}
	defer release()

	h := w.Header()
	h.Set("Content-Type", format.ContentType(job.Gzip))
	h.Set("Content-Disposition", mime.FormatMediaType("attachment",
		map[string]string{"filename": job.FileName}))
	h.Set("X-Export-Id", job.ID)
	h.Set("X-Export-Stored-By", job.StoredBy.Format(time.RFC3339Nano))
	dw := &downloadWriter{w: w, rc: http.NewResponseController(w)}
	if err := dw.extend(); err != nil {
		return err
	}
	_, err = s.Exports.Run(r.Context(), job, dw)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, export.ErrBusy) && !dw.started:
		return &userError{Status: http.StatusTooManyRequests,
			Msg: "Too many exports are running. Try again in a minute."}
	case !dw.started:
		return err
	}
	if r.Context().Err() == nil {
		s.log.ErrorContext(r.Context(), "export failed part-way", "export_id", job.ID,
			"err", err)
	}
	panic(http.ErrAbortHandler)
}

// admitExport holds the job to its project's tier limits (exports
// offered, range, concurrent exports, exports per day, rows), counting
// before anything is streamed. release frees the project's export slot.
func (s *server) admitExport(ctx context.Context, j *export.Job) (release func(),
	err error) {
	lim, ok := s.exportLimits(j.Scope)
	if !ok {
		return func() {}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.QueryTimeout)
	defer cancel()
	release, err = s.exportGate.Admit(ctx, j, lim)
	var le *export.LimitError
	if !errors.As(err, &le) {
		return release, err
	}
	status := http.StatusBadRequest
	switch le.Reason {
	case export.RefusedDisabled:
		status = http.StatusForbidden
	case export.RefusedConcurrent, export.RefusedPerDay:
		status = http.StatusTooManyRequests
	}
	ue := &userError{Status: status, Msg: le.Msg, RetryAfter: le.RetryAfter}
	if le.Reason == export.RefusedRange {
		ue.Param = "from" // le.Msg starts with it
	}
	return nil, ue
}

// downloadWriter records whether the response has begun and keeps the
// connection's write deadline one window ahead of each write.
type downloadWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
	last    time.Time
}

func (d *downloadWriter) Write(p []byte) (int, error) {
	if time.Since(d.last) > time.Second {
		if err := d.extend(); err != nil {
			return 0, err
		}
	}
	d.started = true
	return d.w.Write(p)
}

// extend moves the write deadline one window ahead.
func (d *downloadWriter) extend() error {
	d.last = time.Now()
	err := d.rc.SetWriteDeadline(d.last.Add(exportWriteWindow))
	if err != nil && !errors.Is(err, http.ErrNotSupported) {
		return fmt.Errorf("extend write deadline: %w", err)
	}
	return nil
}

// exportRoutes registers the export pages.
func (s *server) exportRoutes(m *http.ServeMux) {
	m.Handle("GET /p/{project}/export", s.viewer(s.exportPage))
	m.Handle("POST /p/{project}/export", s.viewer(s.exportDownload))
	m.Handle("GET /p/{project}/exports", s.viewer(s.exportsPage))
	m.Handle("GET /p/{project}/exports/public-key", s.viewer(s.exportPublicKey))
	m.Handle("GET /p/{project}/exports/{export}/manifest", s.viewer(s.exportManifest))
}
