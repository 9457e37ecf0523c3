package web

import (
	"context"
	"crypto/ed25519"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/export"
	"github.com/guardwatch/observatory/internal/store"
)

// ExportsView is a project's export log.
type ExportsView struct {
	Chrome
	All          bool // every export of the project, for admins; else the viewer's own
	Rows         []ExportRow
	PublicKeyURL string // empty when exports are not set up
	KeyID        string
	Limits       string // the tier's export limits, when the server has tiers
}

// ExportRow is one export in the log.
type ExportRow struct {
	ID, Actor, Format, Filter, Status string
	Started                           TimeView
	From, To, StoredBy                string // UTC
	Rows, Bytes, SHA256               string
	ManifestURL                       string // empty unless complete
}

// exportLogAccess authorizes reading the project's export log: project
// admins (view_alerts, which only admins hold) read every export; a
// viewer who may export reads their own. It returns the actor to filter
// on, "" for all.
func (s *server) exportLogAccess(r *http.Request, kind authz.ResourceKind,
	id string) (store.Scope, string, error) {
	project := r.PathValue("project")
	if sc, err := s.authorize(r.Context(), authz.ViewAlerts, kind, project, id); err == nil {
		return sc, "", nil
	} else if !errors.Is(err, errNotFound) {
		return store.Scope{}, "", err
	}
	sc, err := s.authorize(r.Context(), authz.ExportAudit, kind, project, id)
	if err != nil {
		return store.Scope{}, "", err
	}
	return sc, principal(r.Context()).Subject, nil
}

func (s *server) exportsPage(w http.ResponseWriter, r *http.Request) error {
	sc, actor, err := s.exportLogAccess(r, authz.KindProject, "")
	if err != nil {
		return err
	}
	done, err := s.beginQuery(sc)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(r.Context(), s.QueryTimeout)
	defer cancel()
	recs, err := s.Store.ListExports(ctx, sc, actor, store.MaxExportRecords)
	if err != nil {
		return err
	}
	done()
	project := sc.Project()
	v := ExportsView{Chrome: s.chrome(r, project), All: actor == ""}
	v.Section = "exports"
	if lim, ok := s.exportLimits(sc); ok {
		v.Limits = limitsText(lim)
	}
	if s.Exports != nil {
		v.PublicKeyURL = projectPath(project, "exports", "public-key")
		v.KeyID = export.KeyID(s.Exports.PublicKey())
	}
	loc, now := viewerZone(r), s.Now()
	for _, e := range recs {
		row := ExportRow{ID: clean(e.ExportID, 64), Actor: clean(e.Actor, 80),
			Format: clean(e.Format, 16), Filter: clean(e.Filter, 200),
			Status: clean(e.Status, 16), Started: timeView(e.StartedAt, loc, now),
			From: utcMS(e.From), To: utcMS(e.To), StoredBy: utcMS(e.StoredBy),
			Rows: count(e.Rows), Bytes: byteSize(e.Bytes), SHA256: clean(e.SHA256, 64)}
		if e.Gzip {
			row.Format += ".gz"
		}
		if e.Status == store.ExportComplete && validRef(e.ExportID) {
			row.ManifestURL = projectPath(project, "exports", e.ExportID, "manifest")
		}
		v.Rows = append(v.Rows, row)
	}
	return s.render(w, r, http.StatusOK, ExportsPage(v))
}

// exportManifest serves the signed manifest of a finished export.
func (s *server) exportManifest(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("export")
	sc, actor, err := s.exportLogAccess(r, authz.KindExport, id)
	if err != nil {
		return err
	}
	done, err := s.beginQuery(sc)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(r.Context(), s.QueryTimeout)
	defer cancel()
	rec, err := s.Store.GetExport(ctx, sc, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errNotFound
	case err != nil:
		return err
	case (actor != "" && rec.Actor != actor) || rec.Status != store.ExportComplete:
		return errNotFound
	}
	m, err := export.ParseManifest([]byte(rec.Manifest), s.manifestKey())
	if err != nil {
		// Signed with an earlier key, or damaged: served as stored; the
		// verifier decides.
		s.log.WarnContext(r.Context(), "stored manifest does not verify with the current key",
			"export_id", id, "err", err)
	}
	name := id + ".manifest.json"
	if m != nil {
		name = m.FileName + ".manifest.json"
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment",
		map[string]string{"filename": name}))
	_, err = w.Write([]byte(rec.Manifest))
	return err
}

func (s *server) manifestKey() ed25519.PublicKey {
	if s.Exports == nil {
		return nil
	}
	return s.Exports.PublicKey()
}

// exportPublicKey serves the public key that verifies manifests.
func (s *server) exportPublicKey(w http.ResponseWriter, r *http.Request) error {
	if _, _, err := s.exportLogAccess(r, authz.KindProject, ""); err != nil {
		return err
	}
	if s.Exports == nil {
		return errNotFound
	}
	b, err := export.PublicKeyPEM(s.Exports.PublicKey())
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("Content-Disposition", `attachment; filename="`+export.PublicKeyFile+`"`)
	_, err = w.Write(b)
	return err
}

func utcMS(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

func byteSize(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + " B"
	}
	f, suffix := float64(n)/unit, "KiB"
	for _, next := range []string{"MiB", "GiB", "TiB"} {
		if f < unit {
			break
		}
		f, suffix = f/unit, next
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + " " + suffix
}
