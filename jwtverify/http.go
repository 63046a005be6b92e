package jwtverify

import (
	"net/http"
	"slices"
	"strings"

	"github.com/malai-sec/malai/problem"
)

// Requirement is what a route demands of an already verified token. The
// zero value accepts any verified token.
type Requirement struct {
	// Class, when not ClassAny, is the only token class accepted: internal
	// routes require ClassService, user routes ClassUser.
	Class Class
	// Scopes must all be granted.
	Scopes []string
	// Audiences, when set, narrow the issuer's audience check for this
	// route: "aud" must contain at least one of them.
	Audiences []string
}

// Check reports whether c meets q, as an [*Error] wrapping
// [ErrInsufficientScope] when it does not.
func (q Requirement) Check(c *Claims) error {
	if e := q.check(c); e != nil {
		return e
	}
	return nil
}

func (q Requirement) check(c *Claims) *Error {
	if c == nil {
		return errNoToken
	}
	refuse := func(r Reason) *Error {
		return &Error{Reason: r, kind: ErrInsufficientScope, scope: strings.Join(q.Scopes, " ")}
	}
	if q.Class != ClassAny && c.class != q.Class {
		return refuse(ReasonWrongClass)
	}
	for _, s := range q.Scopes {
		if !c.HasScope(s) {
			return refuse(ReasonScope)
		}
	}
	if len(q.Audiences) > 0 && !slices.ContainsFunc(c.audience, func(a string) bool {
		return slices.Contains(q.Audiences, a)
	}) {
		return refuse(ReasonRouteAudience)
	}
	return nil
}

// Handler authenticates every request: it takes the bearer token, verifies
// it and calls next with the claims in the request context
// ([FromContext]). A request without a valid token gets the RFC 6750
// answer. Handler does not decide the token class; wrap routes with
// [Verifier.Require].
func (v *Verifier) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, e := v.authenticate(r)
		if e != nil {
			v.fail(w, r, e)
			return
		}
		next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), c)))
	})
}

// Require returns middleware that lets a request through only when its
// token meets q. It reuses the claims [Verifier.Handler] of the same
// Verifier put in the context, and verifies the token itself otherwise, so
// a route wrapped only in Require is still authenticated.
func (v *Verifier) Require(q Requirement) func(http.Handler) http.Handler {
	q.Scopes = append([]string(nil), q.Scopes...)
	q.Audiences = append([]string(nil), q.Audiences...)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, ok := FromContext(r.Context())
			if !ok || c.v != v {
				var e *Error
				if c, e = v.authenticate(r); e != nil {
					v.fail(w, r, e)
					return
				}
				r = r.WithContext(NewContext(r.Context(), c))
			}
			if e := q.check(c); e != nil {
				if v.cfg.Observe != nil {
					v.cfg.Observe(r.Context(), Event{Reason: e.Reason, Issuer: c.issuer, KeyID: c.keyID,
						Subject: c.subject, ClientID: c.clientID, JTI: c.jti, Class: c.class})
				}
				v.fail(w, r, e)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// RequireUser is Require for user tokens with the given scopes.
func (v *Verifier) RequireUser(scopes ...string) func(http.Handler) http.Handler {
	return v.Require(Requirement{Class: ClassUser, Scopes: scopes})
}

// RequireService is Require for service tokens with the given scopes.
func (v *Verifier) RequireService(scopes ...string) func(http.Handler) http.Handler {
	return v.Require(Requirement{Class: ClassService, Scopes: scopes})
}

func (v *Verifier) authenticate(r *http.Request) (*Claims, *Error) {
	tok, e := v.tokenFrom(r)
	if e != nil {
		v.observe(r.Context(), nil, false, e)
		return nil, e
	}
	c, cached, e := v.verify(r.Context(), tok)
	v.observe(r.Context(), c, cached, e)
	return c, e
}

// tokenFrom extracts the one bearer token of a request (RFC 6750 §2).
func (v *Verifier) tokenFrom(r *http.Request) (string, *Error) {
	var tok string
	found := 0
	if hs := r.Header.Values("Authorization"); len(hs) > 1 {
		return "", errMultiple
	} else if len(hs) == 1 {
		// Another scheme (Basic, DPoP, ...) carries no bearer token; the
		// header is then ignored here.
		if scheme, rest, _ := strings.Cut(hs[0], " "); strings.EqualFold(scheme, "Bearer") {
			rest = strings.TrimLeft(rest, " ")
			if rest == "" {
				return "", errBadScheme
			}
			if len(rest) > v.cfg.MaxTokenSize {
				return "", errTooLarge
			}
			if !isB64Token(rest) {
				return "", errMalformed
			}
			tok = rest
			found++
		}
	}
	if v.cfg.CookieName != "" {
		n := 0
		for _, ck := range r.CookiesNamed(v.cfg.CookieName) {
			tok = ck.Value
			n++
		}
		if n > 1 {
			return "", errMultiple
		}
		found += n
	}
	if v.cfg.AllowQuery {
		if vals := r.URL.Query()["access_token"]; len(vals) > 0 {
			if len(vals) > 1 {
				return "", errMultiple
			}
			tok = vals[0]
			found++
		}
	}
	switch found {
	case 0:
		return "", errNoToken
	case 1:
		return tok, nil
	default:
		return "", errMultiple
	}
}

// isB64Token reports whether s matches RFC 6750's b64token.
func isB64Token(s string) bool {
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/') {
			break
		}
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

// fail sets the RFC 6750 challenge (and Retry-After while the keys are
// unavailable) and calls the error handler.
func (v *Verifier) fail(w http.ResponseWriter, r *http.Request, e *Error) {
	if ch := v.challenge(e); ch != "" {
		w.Header().Set("WWW-Authenticate", ch)
	}
	if e.kind == ErrUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	v.onError(w, r, e)
}

// challenge builds the WWW-Authenticate value for e (RFC 6750 §3).
func (v *Verifier) challenge(e *Error) string {
	var code string
	switch e.kind {
	case ErrNoToken:
	case ErrInvalidRequest:
		code = "invalid_request"
	case ErrInvalidToken:
		code = "invalid_token"
	case ErrInsufficientScope:
		code = "insufficient_scope"
	default:
		return ""
	}
	var b strings.Builder
	b.WriteString("Bearer")
	sep := " "
	if v.cfg.Realm != "" {
		b.WriteString(` realm="` + v.cfg.Realm + `"`)
		sep = ", "
	}
	if code != "" {
		b.WriteString(sep + `error="` + code + `"`)
		if e.Reason == ReasonExpired {
			b.WriteString(`, error_description="The access token expired"`)
		}
		if e.scope != "" && isScopeText(e.scope) {
			b.WriteString(`, scope="` + e.scope + `"`)
		}
	}
	return b.String()
}

// isScopeText reports whether s may appear in a quoted scope attribute
// (RFC 6749 §3.3 scope-token characters and spaces).
func isScopeText(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// DefaultErrorHandler is the ErrorHandler of a zero Config: RFC 9457
// problem+json with a generic detail; the status follows [Error.Status].
// The Verifier sets WWW-Authenticate and, for ErrUnavailable,
// Retry-After before any ErrorHandler runs.
func DefaultErrorHandler(w http.ResponseWriter, r *http.Request, err error) {
	e, ok := err.(*Error)
	if !ok {
		problem.Write(w, r, problem.Internal)
		return
	}
	switch e.kind {
	case ErrNoToken:
		problem.Write(w, r, problem.Problem{Status: http.StatusUnauthorized, Type: "invalid-token",
			Title: "Authentication required", Detail: "Send a bearer token in the Authorization header."})
	case ErrInvalidRequest:
		problem.Write(w, r, problem.Problem{Status: http.StatusBadRequest, Type: "invalid-request",
			Title: "Malformed credentials", Detail: "Send exactly one bearer token, in one Authorization header."})
	case ErrInsufficientScope:
		problem.Write(w, r, problem.Problem{Status: http.StatusForbidden, Type: "insufficient-scope",
			Title: "Insufficient scope", Detail: "The token does not grant access to this resource."})
	case ErrUnavailable:
		if w.Header().Get("Retry-After") == "" {
			w.Header().Set("Retry-After", "5")
		}
		problem.Write(w, r, problem.Unavailable)
	default:
		problem.Write(w, r, problem.Problem{Status: http.StatusUnauthorized, Type: "invalid-token",
			Title: "Invalid token", Detail: "The bearer token is invalid or expired."})
	}
}
