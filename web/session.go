package web

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strings"
	"time"

	"github.com/guardwatch/observatory/internal/authz"
)

// Cookie names. The session cookie holds the viewer's signed token plus
// our own MAC over it; the token is verified again on every request, so
// its expiry and signature stay in force for the whole session.
const (
	sessionCookie = "obs_session"
	csrfCookie    = "obs_csrf" // double-submit token of the sign-in form
	tzCookie      = "obs_tz"   // the viewer's IANA time zone, set by app.js
	maxTokenBytes = 8 << 10    // a longer token is refused before verification
	sessionMaxAge = 12 * time.Hour
)

var b64 = base64.RawURLEncoding

func (s *server) mac(purpose, value string) string {
	m := hmac.New(sha256.New, s.SessionSecret)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write([]byte(value))
	return b64.EncodeToString(m.Sum(nil))
}

// setSession stores the verified token in the session cookie.
func (s *server) setSession(w http.ResponseWriter, token string) {
	v := b64.EncodeToString([]byte(token)) + "." + s.mac("session", token)
	http.SetCookie(w, s.cookie(sessionCookie, v, sessionMaxAge))
}

func (s *server) clearSession(w http.ResponseWriter) {
	http.SetCookie(w, s.cookie(sessionCookie, "", -1))
}

func (s *server) cookie(name, value string, maxAge time.Duration) *http.Cookie {
	c := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true,
		Secure: !s.InsecureCookies, SameSite: http.SameSiteLaxMode}
	if maxAge < 0 {
		c.MaxAge = -1
	} else {
		c.MaxAge = int(maxAge / time.Second)
	}
	return c
}

// sessionToken returns the token of a well-formed session cookie whose MAC
// is ours, or "".
func (s *server) sessionToken(r *http.Request) string {
	c, err := r.Cookie(sessionCookie)
	if err != nil || len(c.Value) > 2*maxTokenBytes {
		return ""
	}
	enc, sig, ok := strings.Cut(c.Value, ".")
	if !ok {
		return ""
	}
	raw, err := b64.DecodeString(enc)
	if err != nil {
		return ""
	}
	token := string(raw)
	if !hmac.Equal([]byte(sig), []byte(s.mac("session", token))) {
		return ""
	}
	return token
}

type viewerKey struct{}

// viewerCtx is the signed-in principal and its token.
type viewerCtx struct {
	p      *authz.Principal
	token  string
	bearer bool // from an Authorization header: no cookie, no forms
}

func principal(ctx context.Context) *authz.Principal {
	if v, ok := ctx.Value(viewerKey{}).(viewerCtx); ok {
		return v.p
	}
	return nil
}

// loadViewer verifies the session's token; a missing, forged or expired
// token leaves the request anonymous.
func (s *server) loadViewer(w http.ResponseWriter, r *http.Request) *http.Request {
	token := s.sessionToken(r)
	if token == "" {
		return r
	}
	p, err := s.Verifier.Verify(r.Context(), token)
	if err != nil || p == nil {
		return r
	}
	return r.WithContext(context.WithValue(r.Context(), viewerKey{}, viewerCtx{p: p, token: token}))
}

// viewer wraps a handler that needs a signed-in viewer, from the session
// cookie or an "Authorization: Bearer" token (for scripts). Without either
// the viewer is sent to sign in. A token that does not verify (tampered,
// expired, unsigned, signed by another key) gets the same 401 whatever the
// path names, so it learns nothing about what exists; a session cookie
// that no longer verifies is dropped and the viewer sent to sign in.
func (s *server) viewer(h appHandler) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if auth := r.Header.Get("Authorization"); auth != "" {
			token, ok := strings.CutPrefix(auth, "Bearer ")
			if !ok || len(token) > maxTokenBytes {
				return errBadToken
			}
			p, err := s.Verifier.Verify(r.Context(), strings.TrimSpace(token))
			if err != nil || p == nil {
				return errBadToken
			}
			v := viewerCtx{p: p, token: token, bearer: true}
			return h(w, r.WithContext(context.WithValue(r.Context(), viewerKey{}, v)))
		}
		if _, err := r.Cookie(sessionCookie); err != nil {
			return errSignIn
		}
		r = s.loadViewer(w, r)
		if principal(r.Context()) == nil {
			// An expired, forged or revoked session: send the viewer to
			// sign in again, the same way whatever the path names.
			s.clearSession(w)
			return errSignIn
		}
		return h(w, r)
	})
}

// csrfToken is the token that the viewer's state-changing forms carry: a
// MAC over the session, so it needs no server state.
func (s *server) csrfToken(r *http.Request) string {
	v, ok := r.Context().Value(viewerKey{}).(viewerCtx)
	if !ok {
		return ""
	}
	return s.mac("csrf", v.token)
}

// checkCSRF compares a form's token with the expected one in constant time.
func checkCSRF(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// signinCSRF returns the double-submit token of the sign-in form, setting
// its cookie when the browser has none yet.
func (s *server) signinCSRF(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 43 {
		return c.Value
	}
	var b [32]byte
	_, _ = rand.Read(b[:])
	v := b64.EncodeToString(b[:])
	http.SetCookie(w, s.cookie(csrfCookie, v, time.Hour))
	return v
}
