package web

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/guardwatch/observatory/internal/alert"
	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/store"
)

// AlertDeps are what the alert pages and the alert API need. Without them
// the observatory serves neither, and hides the navigation link.
type AlertDeps struct {
	// Store keeps subscriptions and deliveries; required.
	Store *alert.Store
	// Sender sends test notifications; nil hides the test button.
	Sender *alert.Sender
}

// maxAlertBody bounds a subscription form or JSON body.
const maxAlertBody = 64 << 10

// alertRoutes registers the alert pages and the JSON API, when the
// server has alert dependencies.
func (s *server) alertRoutes() {
	if s.Alerts == nil || s.Alerts.Store == nil {
		return
	}
	m := s.mux
	m.Handle("GET /p/{project}/alerts", s.viewer(s.alertsPage))
	m.Handle("POST /p/{project}/alerts", s.viewer(s.alertCreate))
	m.Handle("GET /p/{project}/alerts/{id}", s.viewer(s.alertPage))
	m.Handle("POST /p/{project}/alerts/{id}", s.viewer(s.alertUpdate))
	m.Handle("POST /p/{project}/alerts/{id}/delete", s.viewer(s.alertDelete))
	m.Handle("POST /p/{project}/alerts/{id}/test", s.viewer(s.alertTestSend))

	m.Handle("GET /api/p/{project}/alerts", s.api(s.apiAlertList))
	m.Handle("POST /api/p/{project}/alerts", s.api(s.apiAlertCreate))
	m.Handle("GET /api/p/{project}/alerts/{id}", s.api(s.apiAlertGet))
	m.Handle("PUT /api/p/{project}/alerts/{id}", s.api(s.apiAlertUpdate))
	m.Handle("DELETE /api/p/{project}/alerts/{id}", s.api(s.apiAlertDelete))
	m.Handle("POST /api/p/{project}/alerts/{id}/test", s.api(s.apiAlertTest))
	m.Handle("GET /api/p/{project}/alerts/{id}/deliveries", s.api(s.apiAlertDeliveries))
	m.Handle("/api/", s.api(func(http.ResponseWriter, *http.Request) error {
		return errNotFound
	}))
}

// subScope authorizes an action on the subscription named in the URL and
// returns its scope. An id that cannot name a subscription, a denial and
// a subscription that does not exist all answer errNotFound.
func (s *server) subScope(r *http.Request, action authz.Action) (store.Scope, string,
	error) {
	id := r.PathValue("id")
	sc, err := s.authorize(r.Context(), action, authz.KindAlertSubscription,
		r.PathValue("project"), id)
	return sc, id, err
}

// alertErr maps the alert store's errors onto the web's: a subscription
// that is not there is not found, a spec problem is the author's to fix.
func alertErr(err error) error {
	var se *alert.SpecError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, alert.ErrNotFound):
		return errNotFound
	case errors.As(err, &se):
		return &userError{Status: http.StatusBadRequest, Msg: se.Error()}
	default:
		return err
	}
}

// canManage reports whether the viewer may change the project's alerts.
func (s *server) canManage(ctx context.Context, project string) (bool, error) {
	return s.allowed(ctx, authz.ManageAlerts, authz.KindProject, project, "")
}

// checkCSRFOf checks the token of a state-changing request made with the
// session cookie: got is the form's csrf field or the X-CSRF-Token header.
// A request with a bearer token carries no ambient credential and needs
// none.
func (s *server) checkCSRFOf(r *http.Request, got string) error {
	if v, ok := r.Context().Value(viewerKey{}).(viewerCtx); ok && v.bearer {
		return nil
	}
	if !checkCSRF(got, s.csrfToken(r)) {
		msg := "The form expired. Reload the page and try again."
		if strings.HasPrefix(r.URL.Path, "/api/") {
			msg = "A request made with the session cookie needs the X-CSRF-Token header."
		}
		return &userError{Status: http.StatusForbidden, Msg: msg}
	}
	return nil
}

// testSend sends a sample alert and records the delivery.
func (s *server) testSend(ctx context.Context, sc store.Scope, id string) (alert.Delivery,
	error) {
	if s.Alerts.Sender == nil {
		return alert.Delivery{}, &userError{Status: http.StatusConflict,
			Msg: "Test sends are not available on this server."}
	}
	d, err := s.Alerts.Store.TestSend(ctx, s.Alerts.Sender, sc, id)
	return d, alertErr(err)
}
