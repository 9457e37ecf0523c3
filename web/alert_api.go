package web

import (
	"context"
	"errors"
	"mime"
	"net/http"
	"strings"

	"github.com/go-json-experiment/json"

	"github.com/guardwatch/observatory/internal/alert"
	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/filter"
)

// The JSON API of alert subscriptions:
//
//	GET    /api/p/{project}/alerts                     view_alerts
//	POST   /api/p/{project}/alerts                     manage_alerts; 201 with the secret
//	GET    /api/p/{project}/alerts/{id}                view_alerts; with recent deliveries
//	PUT    /api/p/{project}/alerts/{id}                manage_alerts
//	DELETE /api/p/{project}/alerts/{id}                manage_alerts; 204
//	POST   /api/p/{project}/alerts/{id}/test           manage_alerts; sends a sample
//	GET    /api/p/{project}/alerts/{id}/deliveries     view_alerts
//
// Credentials are the UI's: "Authorization: Bearer <token>", or the
// session cookie, in which case a state change must carry the CSRF token
// of the UI's forms in X-CSRF-Token. Bodies are JSON objects of alert.Spec
// (unknown fields are refused) with Content-Type application/json.
// Forbidden and not found answer alike: 404 {"error": "not found"}.

// apiError is the body of every API error.
type apiError struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

// api wraps an API handler: it authenticates like the UI but answers
// every error as JSON.
func (s *server) api(h appHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r, err := s.apiViewer(w, r)
		if err == nil {
			err = h(w, r)
		}
		if err != nil {
			s.apiFail(w, r, err)
		}
	})
}

// apiViewer authenticates as viewer does: a bearer token, else the
// session cookie. A token that does not verify gets 401 whatever the path;
// a session cookie that no longer verifies is not found.
func (s *server) apiViewer(w http.ResponseWriter, r *http.Request) (*http.Request, error) {
	if auth := r.Header.Get("Authorization"); auth != "" {
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || len(token) > maxTokenBytes {
			return r, errBadToken
		}
		token = strings.TrimSpace(token)
		p, err := s.Verifier.Verify(r.Context(), token)
		if err != nil || p == nil {
			return r, errBadToken
		}
		v := viewerCtx{p: p, token: token, bearer: true}
		return r.WithContext(context.WithValue(r.Context(), viewerKey{}, v)), nil
	}
	if _, err := r.Cookie(sessionCookie); err != nil {
		return r, errSignIn
	}
	r = s.loadViewer(w, r)
	if principal(r.Context()) == nil {
		s.clearSession(w)
		return r, errNotFound
	}
	return r, nil
}

// apiFail maps an error to a status and a JSON body, logging only server
// faults; an error's own text is shown only when it is the caller's to fix.
func (s *server) apiFail(w http.ResponseWriter, r *http.Request, err error) {
	var ue *userError
	var se *alert.SpecError
	var fe *filter.Error
	switch {
	case errors.Is(err, errSignIn):
		s.writeJSON(w, http.StatusUnauthorized,
			apiError{Error: "sign in, or send Authorization: Bearer <token>"})
	case errors.Is(err, errBadToken):
		w.Header().Set("WWW-Authenticate", badTokenChallenge)
		s.writeJSON(w, http.StatusUnauthorized,
			apiError{Error: "the bearer token is not valid or has expired"})
	case errors.Is(err, errNotFound), errors.Is(err, alert.ErrNotFound):
		s.writeJSON(w, http.StatusNotFound, apiError{Error: "not found"})
	case errors.As(err, &se):
		s.writeJSON(w, http.StatusBadRequest, apiError{Error: se.Msg, Field: se.Field})
	case errors.As(err, &fe):
		s.writeJSON(w, http.StatusBadRequest, apiError{Error: fe.Msg, Field: fe.Param})
	case errors.As(err, &ue):
		retryAfter(w, ue.RetryAfter)
		s.writeJSON(w, ue.Status, apiError{Error: strings.TrimPrefix(ue.Msg, ue.Param+": "),
			Field: ue.Param})
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
	default:
		s.log.ErrorContext(r.Context(), "api request failed", "method", r.Method,
			"path", r.URL.Path, "err", err)
		s.writeJSON(w, http.StatusInternalServerError, apiError{Error: "internal error"})
	}
}

func (s *server) writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.log.Error("encode api response", "err", err)
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// readSpec checks a state change's CSRF token (cookie sessions only) and
// reads its JSON body.
func (s *server) readSpec(w http.ResponseWriter, r *http.Request) (alert.Spec, error) {
	var spec alert.Spec
	if err := s.checkCSRFOf(r, r.Header.Get("X-CSRF-Token")); err != nil {
		return spec, err
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		return spec, &userError{Status: http.StatusUnsupportedMediaType,
			Msg: "send the subscription as Content-Type: application/json"}
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxAlertBody)
	if err := json.UnmarshalRead(r.Body, &spec, json.RejectUnknownMembers(true)); err != nil {
		return spec, &userError{Status: http.StatusBadRequest,
			Msg: "the body must be one JSON object of subscription fields: " + jsonProblem(err)}
	}
	return spec, nil
}

// jsonProblem names what is wrong with a body without echoing it.
func jsonProblem(err error) string {
	var se *json.SemanticError
	if errors.As(err, &se) && se.JSONPointer != "" {
		return "field " + string(se.JSONPointer) + " is unknown or has the wrong type"
	}
	return "malformed JSON"
}

func (s *server) apiAlertList(w http.ResponseWriter, r *http.Request) error {
	sc, err := s.projectScope(r, authz.ViewAlerts)
	if err != nil {
		return err
	}
	subs, err := s.Alerts.Store.List(r.Context(), sc)
	if err != nil {
		return err
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"subscriptions": subs})
	return nil
}

func (s *server) apiAlertCreate(w http.ResponseWriter, r *http.Request) error {
	sc, err := s.projectScope(r, authz.ManageAlerts)
	if err != nil {
		return err
	}
	spec, err := s.readSpec(w, r)
	if err != nil {
		return err
	}
	sub, secret, err := s.Alerts.Store.Create(r.Context(), sc, spec,
		principal(r.Context()).Subject)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api"+projectPath(sc.Project(), "alerts", sub.ID))
	s.writeJSON(w, http.StatusCreated, map[string]any{"subscription": sub, "secret": secret})
	return nil
}

func (s *server) apiAlertGet(w http.ResponseWriter, r *http.Request) error {
	sc, id, err := s.subScope(r, authz.ViewAlerts)
	if err != nil {
		return err
	}
	sub, err := s.Alerts.Store.Get(r.Context(), sc, id)
	if err != nil {
		return err
	}
	ds, err := s.Alerts.Store.Deliveries(r.Context(), sc, id)
	if err != nil {
		return err
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"subscription": sub, "deliveries": ds})
	return nil
}

func (s *server) apiAlertUpdate(w http.ResponseWriter, r *http.Request) error {
	sc, id, err := s.subScope(r, authz.ManageAlerts)
	if err != nil {
		return err
	}
	spec, err := s.readSpec(w, r)
	if err != nil {
		return err
	}
	sub, err := s.Alerts.Store.Update(r.Context(), sc, id, spec)
	if err != nil {
		return err
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"subscription": sub})
	return nil
}

func (s *server) apiAlertDelete(w http.ResponseWriter, r *http.Request) error {
	sc, id, err := s.subScope(r, authz.ManageAlerts)
	if err != nil {
		return err
	}
	if err := s.checkCSRFOf(r, r.Header.Get("X-CSRF-Token")); err != nil {
		return err
	}
	if err := s.Alerts.Store.Delete(r.Context(), sc, id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) apiAlertTest(w http.ResponseWriter, r *http.Request) error {
	sc, id, err := s.subScope(r, authz.ManageAlerts)
	if err != nil {
		return err
	}
	if err := s.checkCSRFOf(r, r.Header.Get("X-CSRF-Token")); err != nil {
		return err
	}
	d, err := s.testSend(r.Context(), sc, id)
	if err != nil {
		return err
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"delivery": d})
	return nil
}

func (s *server) apiAlertDeliveries(w http.ResponseWriter, r *http.Request) error {
	sc, id, err := s.subScope(r, authz.ViewAlerts)
	if err != nil {
		return err
	}
	ds, err := s.Alerts.Store.Deliveries(r.Context(), sc, id)
	if err != nil {
		return err
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"deliveries": ds})
	return nil
}
