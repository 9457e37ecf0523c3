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
	BoundNote  string
	ExportsURL string
	TracesURL  string
	// Disabled explains why exports cannot run here; the form is hidden.
	Disabled string
}

// Hidden is a hidden form field.
type Hidden struct{ Name, Value string }

// exportHref is the traces page's link to the export page for the
// filter, or "" when the viewer may not export or exports are off.
func (s *server) exportHref(ctx context.Context, project string, f filter.Filter) string {
	if s.Exports == nil {
		return ""
	}
	if ok, _ := s.allowed(ctx, authz.ExportAudit, authz.KindProject, project, ""); !ok {
		return ""
	}
	return href(projectPath(project, "export"), f.Values())
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
		From:      f.From.UTC().Format("2006-01-02T15:04:05.000Z"),
		To:        f.To.UTC().Format("2006-01-02T15:04:05.000Z"),
		FromLocal: f.From.In(loc).Format(local), ToLocal: f.To.In(loc).Format(local),
		Zone: loc.String(), Previews: content,
		ExportsURL: projectPath(project, "exports"),
		TracesURL:  href(projectPath(project, "traces"), f.Values()),
	}
	v.Section = "traces"
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
	} else {
		v.BoundNote = fmt.Sprintf("rows stored up to %s before the download starts are "+
			"in the file; rows stored later are left out even if they fall in the range. "+
			"The manifest states the exact time.", s.Exports.Settle())
		ctx, cancel := context.WithTimeout(r.Context(), s.QueryTimeout)
		defer cancel()
		n, err := s.Store.Count(ctx, sc, f)
		if err != nil {
			return err
		}
		v.Total = count(n)
	}
	slices.SortFunc(v.Hidden, func(a, b Hidden) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Value, b.Value))
	})
	slices.SortFunc(v.Filters, func(a, b Chip) int { return strings.Compare(a.Label, b.Label) })
	return s.render(w, r, http.StatusOK, ExportPage(v))
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
