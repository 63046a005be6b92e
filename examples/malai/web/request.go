package web

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
)

type stateKey struct{}

// reqState is one request's session, loaded on first use.
type reqState struct {
	loaded bool
	h      *handle
	err    error
}

func (a *App) withSession(r *http.Request) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), stateKey{}, &reqState{}))
}

// current returns the request's live session, or nil when it has none
// (no cookie, expired, unknown). A store failure is returned as an error.
func (a *App) current(r *http.Request) (*handle, error) {
	st, _ := r.Context().Value(stateKey{}).(*reqState)
	if st == nil {
		st = &reqState{}
	}
	if !st.loaded {
		st.loaded = true
		if id, ok := cookieID(r); ok {
			st.h, st.err = a.sessions.load(r.Context(), id)
			if errors.Is(st.err, errNoSession) {
				st.h, st.err = nil, nil
			}
		}
	}
	return st.h, st.err
}

// ensure returns the request's session, creating an anonymous one (for a
// form's CSRF token) when there is none.
func (a *App) ensure(w http.ResponseWriter, r *http.Request) (*handle, error) {
	h, err := a.current(r)
	if err != nil || h != nil {
		return h, err
	}
	h, err = a.sessions.create(r.Context(), w)
	if err == nil {
		st, _ := r.Context().Value(stateKey{}).(*reqState)
		if st != nil {
			st.h = h
		}
	}
	return h, err
}

// requireSignedIn sends a visitor without a signed-in session to the
// sign-in page (GET) or refuses (POST).
func (a *App) requireSignedIn(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, err := a.current(r)
		if err != nil {
			a.unavailable(w, r, err)
			return
		}
		if h == nil || !h.sess.signedIn() {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/signin", http.StatusSeeOther)
				return
			}
			a.errorPage(w, r, http.StatusUnauthorized, "Signed out", "Your session has ended. Sign in again.")
			return
		}
		if a.sessions.now().Sub(h.sess.LastSeen) >= touchEvery {
			if err := a.sessions.update(r.Context(), h, func(*session) error { return nil }); err != nil && !errors.Is(err, errNoSession) {
				a.unavailable(w, r, err)
				return
			}
		}
		if r.Method != http.MethodGet {
			if err := a.checkLive(r, h); err != nil {
				a.handleSessionErr(w, r, err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// pathAccount is identity's account route; it answers 401 for a token
// whose session was signed out or revoked.
const pathAccount = "/v1/account"

// checkLive asks identity whether the session is still live before a
// signed-in change: the ledger accepts an access token until it expires,
// so without this a session revoked from another device could still move
// money for the token's remaining minutes. A revoked session fails the
// forced refresh too and is signed out here; identity unreachable fails
// closed.
func (a *App) checkLive(r *http.Request, h *handle) error {
	return a.withToken(r, h, func(tok string) error {
		_, err := a.up.do(r.Context(), call{method: http.MethodGet, base: a.up.identity, path: pathAccount, token: tok, clientIP: a.clientIP(r)})
		return err
	})
}

// csrf refuses a state-changing request unless (1) it comes from one of
// the app's origins — Origin, or when a browser sends none, Sec-Fetch-Site
// same-origin — and (2) it carries the session's synchroniser token in
// the form field "csrf". Both must hold: SameSite=Strict does not separate
// two ports of one host (they are the same site), the Origin check does;
// the token stops a same-origin page region an attacker controls from
// posting without having read a page of the session.
func (a *App) csrf(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.sameOrigin(r) {
			a.log.LogAttrs(r.Context(), slog.LevelWarn, "web: cross-origin request refused",
				slog.String("route", r.Pattern), slog.String("origin", truncate(r.Header.Get("Origin"), 100)))
			a.errorPage(w, r, http.StatusForbidden, "Request refused", "This request did not come from this site's own pages.")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			a.errorPage(w, r, http.StatusBadRequest, "Bad request", "The form could not be read.")
			return
		}
		h, err := a.current(r)
		if err != nil {
			a.unavailable(w, r, err)
			return
		}
		tok := r.PostForm.Get("csrf")
		if h == nil || len(r.PostForm["csrf"]) != 1 || subtle.ConstantTimeCompare([]byte(tok), []byte(h.sess.CSRF)) != 1 {
			a.log.LogAttrs(r.Context(), slog.LevelWarn, "web: CSRF token missing or wrong", slog.String("route", r.Pattern))
			a.errorPage(w, r, http.StatusForbidden, "Page expired",
				"This form is out of date or did not come from this site. Go back, reload the page and try again.")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// maxFormBytes caps a form body; the largest form is a password change.
const maxFormBytes = 8 << 10

func (a *App) sameOrigin(r *http.Request) bool {
	origins := r.Header.Values("Origin")
	if len(origins) > 1 {
		return false
	}
	if len(origins) == 1 && origins[0] != "null" {
		o := strings.ToLower(origins[0])
		if len(a.origins) > 0 {
			return a.origins[o]
		}
		return r.Host != "" && o == "https://"+strings.ToLower(r.Host)
	}
	// No Origin, or "null" (a browser sends that for a form post when the
	// page's referrer policy hides its origin): only a request the
	// browser itself labels same-origin passes. No page can set
	// Sec-Fetch-Site.
	return r.Header.Get("Sec-Fetch-Site") == "same-origin"
}

func (a *App) clientIP(r *http.Request) netip.Addr {
	if a.cfg.ClientIP == nil {
		return netip.Addr{}
	}
	ip, err := a.cfg.ClientIP(r)
	if err != nil {
		return netip.Addr{}
	}
	return ip
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
