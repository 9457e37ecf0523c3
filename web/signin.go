package web

import (
	"net/http"
	"net/url"
	"strings"
	"unicode"

	"github.com/guardwatch/observatory/internal/authz"
)

// signinPage shows the paste-a-token form, or, for a link that carries a
// token, asks the viewer to confirm who they are about to sign in as. The
// link never signs in by itself, so a crafted link cannot silently switch
// a viewer into someone else's session.
func (s *server) signinPage(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	v := SigninView{
		Chrome: s.chrome(s.loadViewer(w, r), ""),
		CSRF:   s.signinCSRF(w, r),
		Next:   safeNext(q.Get("next")),
	}
	if token := strings.TrimSpace(q.Get("token")); token != "" {
		p, err := s.verifyToken(r, token)
		if err != nil {
			v.Error = "This sign-in link is invalid or has expired. Paste a fresh token."
			return s.render(w, r, http.StatusUnauthorized, SigninPage(v))
		}
		v.Token = token
		v.Confirm = &SigninConfirm{Subject: clean(p.Subject, 200),
			Account: clean(p.Account, 64), Projects: s.Authz.Projects(p)}
	}
	return s.render(w, r, http.StatusOK, SigninPage(v))
}

func (s *server) signin(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, 2*maxTokenBytes)
	if err := r.ParseForm(); err != nil {
		return &userError{Status: http.StatusBadRequest, Msg: "The form could not be read."}
	}
	c, err := r.Cookie(csrfCookie)
	if err != nil || !checkCSRF(r.PostForm.Get("csrf"), c.Value) {
		return &userError{Status: http.StatusForbidden,
			Msg: "The sign-in form expired. Reload the page and try again."}
	}
	next := safeNext(r.PostForm.Get("next"))
	token := strings.TrimSpace(r.PostForm.Get("token"))
	if _, err := s.verifyToken(r, token); err != nil {
		v := SigninView{Chrome: s.chrome(r, ""), CSRF: c.Value, Next: next,
			Error: "That token could not be verified. Check that it is complete and current."}
		return s.render(w, r, http.StatusUnauthorized, SigninPage(v))
	}
	s.setSession(w, token)
	http.SetCookie(w, s.cookie(csrfCookie, "", -1))
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

func (s *server) verifyToken(r *http.Request, token string) (*authz.Principal, error) {
	if token == "" || len(token) > maxTokenBytes {
		return nil, errNotFound
	}
	p, err := s.Verifier.Verify(r.Context(), token)
	if err != nil {
		s.log.InfoContext(r.Context(), "sign-in token rejected", "err", err)
		return nil, err
	}
	return p, nil
}

func (s *server) signout(w http.ResponseWriter, r *http.Request) error {
	r = s.loadViewer(w, r)
	if err := r.ParseForm(); err != nil {
		return &userError{Status: http.StatusBadRequest, Msg: "The form could not be read."}
	}
	if principal(r.Context()) != nil && !checkCSRF(r.PostForm.Get("csrf"), s.csrfToken(r)) {
		return &userError{Status: http.StatusForbidden,
			Msg: "The form expired. Reload the page and try again."}
	}
	s.clearSession(w)
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
	return nil
}

// safeNext returns next when it is a path on this site, else "/". It
// refuses scheme-relative ("//host"), backslash and absolute URLs, so
// sign-in never redirects off-site.
func safeNext(next string) string {
	if next == "" || len(next) > 2048 || !strings.HasPrefix(next, "/") ||
		strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\") ||
		strings.ContainsFunc(next, unicode.IsControl) ||
		strings.ContainsFunc(next, unicode.IsSpace) {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil ||
		!strings.HasPrefix(u.Path, "/") || strings.HasPrefix(u.Path, "//") {
		return "/"
	}
	return next
}
