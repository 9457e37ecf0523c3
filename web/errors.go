package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/guardwatch/observatory/internal/filter"
)

// errNotFound answers both "does not exist" and "not allowed": the two
// must be indistinguishable to the viewer.
var errNotFound = errors.New("not found")

// errSignIn asks the viewer to sign in first.
var errSignIn = errors.New("sign-in required")

// errBadToken answers a bearer token that does not verify (tampered,
// expired, unsigned, signed by another key, not a bearer token): the same
// 401 whatever the request names, so it tells nothing about what exists.
var errBadToken = errors.New("bearer token not valid")

// badTokenChallenge is the WWW-Authenticate header of errBadToken.
const badTokenChallenge = `Bearer error="invalid_token"`

// userError is a problem the viewer can fix; Msg is safe to show.
type userError struct {
	Status int
	Msg    string
	// Param names the request parameter at fault, if one is; Msg then
	// starts with it.
	Param string
	// RetryAfter, when set, is sent as Retry-After: when trying again may
	// succeed (a limit that frees up).
	RetryAfter time.Duration
}

func (e *userError) Error() string { return e.Msg }

// badParam is a 400 naming the query parameter at fault.
func badParam(param, format string, args ...any) error {
	return &userError{Status: http.StatusBadRequest, Param: param,
		Msg: param + ": " + fmt.Sprintf(format, args...)}
}

// appHandler is a handler that returns its error to the boundary.
type appHandler func(w http.ResponseWriter, r *http.Request) error

// handle is the one error boundary: it maps an error to a status and a
// message a viewer may see, logs only server faults and never shows an
// error's own text unless it is a user error.
func (s *server) handle(h appHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		s.fail(w, r, err)
	})
}

func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ue *userError
	var fe *filter.Error
	switch {
	case errors.Is(err, errSignIn):
		target := "/signin"
		if r.Method == http.MethodGet && r.URL.Path != "/" {
			target += "?next=" + url.QueryEscape(r.URL.RequestURI())
		}
		http.Redirect(w, r, target, http.StatusSeeOther)
	case errors.Is(err, errBadToken):
		w.Header().Set("WWW-Authenticate", badTokenChallenge)
		s.errorPage(w, r, http.StatusUnauthorized, "Unauthorized",
			"The token sent with this request is not valid or has expired.")
	case errors.Is(err, errNotFound):
		s.errorPage(w, r, http.StatusNotFound, "Not found",
			"There is nothing here, or you do not have access to it.")
	case errors.As(err, &fe):
		s.errorPage(w, r, http.StatusBadRequest, http.StatusText(http.StatusBadRequest),
			fe.Error())
	case errors.As(err, &ue):
		retryAfter(w, ue.RetryAfter)
		s.errorPage(w, r, ue.Status, http.StatusText(ue.Status), ue.Msg)
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The viewer went away; nobody is left to answer.
	default:
		s.log.ErrorContext(r.Context(), "request failed", "method", r.Method,
			"path", r.URL.Path, "err", err)
		s.errorPage(w, r, http.StatusInternalServerError, "Something went wrong",
			"The page could not be loaded. Try again in a moment.")
	}
}

// errorPage renders the error page. Its body depends only on the status
// and the message, never on the path or the viewer, so "forbidden", "not
// found" and "bad credentials" stay identical.
func (s *server) errorPage(w http.ResponseWriter, r *http.Request, status int,
	title, msg string) {
	v := ErrorView{Chrome: Chrome{Bare: true}, Status: status, Title: title, Message: msg}
	if r.Header.Get("Accept") == "text/event-stream" {
		http.Error(w, title, status)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := ErrorPage(v).Render(r.Context(), w); err != nil {
		s.log.WarnContext(r.Context(), "render error page", "err", err)
	}
}
