package identity

import (
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/malai-sec/malai/examples/malai/identity/internal/strictjson"
	"github.com/malai-sec/malai/problem"
)

// maxJSONBody caps every JSON request body. The largest legitimate body is
// a password change with two 128-character passwords, far below this.
const maxJSONBody = 4 << 10

// Secret is a string that never prints itself: slog, fmt's %v, %s, %q
// and %#v, and encoding/json (so a struct logged as JSON) all show
// "[REDACTED]". Passwords, codes and tokens travel in it; [Secret.Reveal]
// returns the value. Decoding JSON into a Secret stores the real value, so
// a client can unmarshal a [TokenResponse]; the service writes its
// responses from the revealed values.
type Secret string

const redacted = "[REDACTED]"

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// String implements fmt.Stringer.
func (Secret) String() string { return redacted }

// GoString implements fmt.GoStringer.
func (Secret) GoString() string { return redacted }

// MarshalJSON implements json.Marshaler.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// Token classes a route takes.
const (
	TokenNone = "" // no bearer token
	TokenUser = "user"
)

// Route is one row of identity's route table: the pattern, the bearer
// token class it takes, whether the gateway mounts it, and the other
// components whose certificate it admits on the internal listener.
type Route struct {
	Pattern string
	Token   string
	Public  bool
	Callers []string
	MaxBody int64
	bind    func(*Service) http.Handler
}

func plain(f func(*Service, http.ResponseWriter, *http.Request)) func(*Service) http.Handler {
	return func(s *Service) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f(s, w, r) })
	}
}

func user(f func(*Service, http.ResponseWriter, *http.Request, caller)) func(*Service) http.Handler {
	return func(s *Service) http.Handler {
		return s.withUser(func(w http.ResponseWriter, r *http.Request, c caller) { f(s, w, r, c) })
	}
}

// routeTable is every route of identity, written once.
var routeTable = []Route{
	{Pattern: "GET " + JWKSPath, Public: true, Callers: []string{"gateway", "ledger", "worker", "web", "evidence"}, bind: plain((*Service).serveJWKS)},
	{Pattern: "GET " + MetadataPath, Public: true, Callers: []string{"gateway", "ledger", "worker", "web", "evidence"}, bind: plain((*Service).serveMetadata)},
	{Pattern: "POST /v1/users", Public: true, Callers: []string{"web"}, MaxBody: maxJSONBody, bind: plain((*Service).serveSignUp)},
	{Pattern: "POST " + SignInPath, Public: true, Callers: []string{"web"}, MaxBody: maxJSONBody, bind: plain((*Service).serveSignIn)},
	{Pattern: "POST " + SignInPath + "/mfa", Public: true, Callers: []string{"web"}, MaxBody: maxJSONBody, bind: plain((*Service).serveSignInMFA)},
	{Pattern: "POST " + RefreshPath, Public: true, Callers: []string{"web"}, bind: plain((*Service).serveRefresh)},
	{Pattern: "DELETE " + RefreshPath, Public: true, Callers: []string{"web"}, bind: plain((*Service).serveSignOut)},
	// The same as POST: the gateway's WAF admits GET, HEAD, POST and
	// OPTIONS only, and the refresh cookie is sent only under RefreshPath.
	{Pattern: "POST " + SignOutPath, Public: true, Callers: []string{"web"}, bind: plain((*Service).serveSignOut)},
	{Pattern: "GET /v1/account", Token: TokenUser, Public: true, Callers: []string{"web"}, bind: user((*Service).serveAccount)},
	{Pattern: "POST /v1/account/password", Token: TokenUser, Public: true, Callers: []string{"web"}, MaxBody: maxJSONBody, bind: user((*Service).servePasswordChange)},
	{Pattern: "GET " + SignInPath, Token: TokenUser, Public: true, Callers: []string{"web"}, bind: user((*Service).serveListSessions)},
	{Pattern: "DELETE " + SignInPath + "/{id}", Token: TokenUser, Public: true, Callers: []string{"web"}, bind: user((*Service).serveRevokeSession)},
	{Pattern: "POST " + SignInPath + "/{id}/revoke", Token: TokenUser, Public: true, Callers: []string{"web"}, bind: user((*Service).serveRevokeSession)},
	{Pattern: "POST /v1/mfa/totp", Token: TokenUser, Public: true, Callers: []string{"web"}, MaxBody: maxJSONBody, bind: user((*Service).serveTOTPEnroll)},
	{Pattern: "POST /v1/mfa/totp/confirm", Token: TokenUser, Public: true, Callers: []string{"web"}, MaxBody: maxJSONBody, bind: user((*Service).serveTOTPConfirm)},
	{Pattern: "POST /v1/mfa/totp/disable", Token: TokenUser, Public: true, Callers: []string{"web"}, MaxBody: maxJSONBody, bind: user((*Service).serveTOTPDisable)},
	{Pattern: "POST /v1/mfa/recovery-codes", Token: TokenUser, Public: true, Callers: []string{"web"}, MaxBody: maxJSONBody, bind: user((*Service).serveRecoveryCodes)},
	// The token endpoint, key registration and revocation live only on
	// the internal listener: only components, by certificate, reach them.
	{Pattern: "POST " + TokenPath, Callers: []string{"worker", "evidence"}, MaxBody: maxFormBody, bind: plain((*Service).serveToken)},
	{Pattern: "POST " + ClientsPath, Callers: []string{"worker", "evidence"}, MaxBody: maxJSONBody, bind: plain((*Service).serveRegisterKey)},
	{Pattern: "POST " + ClientsPath + "/{id}/revoke", Callers: []string{"operator"}, MaxBody: maxJSONBody, bind: plain((*Service).serveRevokeClient)},
}

// Routes returns identity's route table as data (no handlers): what the
// gateway mounts (Public) and which bearer token each route takes.
func Routes() []Route {
	out := make([]Route, len(routeTable))
	for i, r := range routeTable {
		r.bind = nil
		out[i] = r
	}
	return out
}

func (s *Service) routes() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range routeTable {
		mux.Handle(rt.Pattern, rt.bind(s))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.isClosed() {
			s.fail(w, r, ErrClosed)
			return
		}
		h, pattern := mux.Handler(r)
		if pattern != "" {
			// Through the mux itself, so r.Pattern is set for the
			// telemetry wrapped around this handler.
			mux.ServeHTTP(w, r)
			return
		}
		// No route: let the mux decide between 404 and 405 (and the Allow
		// header), then answer in problem+json instead of text/plain.
		rec := &memResponse{header: make(http.Header)}
		h.ServeHTTP(rec, r)
		if rec.status == http.StatusMethodNotAllowed {
			if allow := rec.header.Get("Allow"); allow != "" {
				w.Header().Set("Allow", allow)
			}
			s.fail(w, r, ErrMethodNotAllowed)
			return
		}
		s.fail(w, r, ErrNotFound)
	})
}

// decodeJSON enforces the media type and size cap, then decodes strictly.
func decodeJSON(w http.ResponseWriter, r *http.Request, fields map[string]*string) error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return ErrUnsupportedMediaType
	}
	return decodeBody(http.MaxBytesReader(w, r.Body, maxJSONBody), fields)
}

func decodeBody(body io.Reader, fields map[string]*string) error {
	err := strictjson.Decode(body, fields)
	if err == nil {
		return nil
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return ErrBodyTooLarge
	}
	return ErrMalformedRequest
}

// fail routes an error to the configured ErrorHandler or the default.
func (s *Service) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, ErrUnavailable) {
		s.log.ErrorContext(r.Context(), "identity: unavailable", "error", err.Error())
	}
	if s.cfg.ErrorHandler != nil {
		s.cfg.ErrorHandler(w, r, err)
		return
	}
	WriteError(w, r, err)
}

type mapped struct {
	err error
	p   problem.Problem
}

var problems = []mapped{
	{ErrInvalidCredentials, problem.Problem{Status: http.StatusUnauthorized, Type: "invalid-credentials",
		Title: "Invalid credentials", Detail: "The credentials are not valid."}},
	{ErrThrottled, problem.Problem{Status: http.StatusTooManyRequests, Type: "sign-in-throttled",
		Title: "Too many attempts", Detail: "Too many failed attempts; wait for Retry-After seconds. A device that signed in here before is not affected."}},
	{ErrMFARequired, problem.Problem{Status: http.StatusUnauthorized, Type: "mfa-required",
		Title: "Second factor required", Detail: "Repeat with a TOTP code or a recovery code, or send mfa_token with one to POST /v1/sessions/mfa."}},
	{ErrInvalidMFAToken, problem.Problem{Status: http.StatusUnauthorized, Type: "invalid-mfa-token",
		Title: "Sign in again", Detail: "The mfa_token is invalid, expired or used."}},
	{ErrPasswordResetRequired, problem.Problem{Status: http.StatusForbidden, Type: "password-reset-required",
		Title: "Password reset required", Detail: "This password appears in a compromised-password corpus and must be reset."}},
	{ErrPasswordPolicy, problem.Problem{Status: http.StatusUnprocessableEntity, Type: "password-policy",
		Title: "Password does not meet the policy", Detail: "The password breaks the rules listed in violations."}},
	{ErrPasswordCompromised, problem.Problem{Status: http.StatusUnprocessableEntity, Type: "password-compromised",
		Title: "Password is compromised", Detail: "This password appears in a compromised or common-password corpus; choose another."}},
	{ErrUsernameTaken, problem.Problem{Status: http.StatusConflict, Type: "username-taken",
		Title: "Username taken", Detail: "Choose another username."}},
	{ErrInvalidUsername, problem.Problem{Status: http.StatusUnprocessableEntity, Type: "invalid-username",
		Title: "Invalid username", Detail: "Usernames are 3 to 64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit."}},
	{ErrMalformedRequest, problem.Problem{Status: http.StatusBadRequest, Type: "malformed-request",
		Title: "Malformed request", Detail: "The body must be one JSON object with the documented members only."}},
	{ErrUnsupportedMediaType, problem.Problem{Status: http.StatusUnsupportedMediaType, Type: "unsupported-media-type",
		Title: "Unsupported media type", Detail: "Send the body as application/json."}},
	{ErrBodyTooLarge, problem.Problem{Status: http.StatusRequestEntityTooLarge, Type: "payload-too-large",
		Title: "Request body too large", Detail: "The request body exceeds the size limit."}},
	{ErrInvalidToken, problem.Problem{Status: http.StatusUnauthorized, Type: "invalid-token",
		Title: "Invalid token", Detail: "A valid user access token of a live session is required."}},
	{ErrReauthenticate, problem.Problem{Status: http.StatusForbidden, Type: "reauthentication-failed",
		Title: "Re-authentication failed", Detail: "This change needs your current password (and your second factor when enrolled)."}},
	{ErrMFAAlreadyEnrolled, problem.Problem{Status: http.StatusConflict, Type: "mfa-already-enrolled",
		Title: "Second factor already enrolled"}},
	{ErrMFANotEnrolled, problem.Problem{Status: http.StatusConflict, Type: "mfa-not-enrolled",
		Title: "No second factor enrolled"}},
	{ErrMFANotPending, problem.Problem{Status: http.StatusConflict, Type: "mfa-not-pending",
		Title: "No pending enrolment", Detail: "Start an enrolment with POST /v1/mfa/totp from this session first."}},
	{ErrInvalidCode, problem.Problem{Status: http.StatusUnprocessableEntity, Type: "invalid-otp-code",
		Title: "Invalid code", Detail: "The code does not match the authenticator; check the device clock and enter the current code."}},
	{ErrInvalidRefresh, problem.Problem{Status: http.StatusUnauthorized, Type: "invalid-refresh",
		Title: "Invalid refresh session", Detail: "Sign in again."}},
	{ErrRefreshReused, problem.Problem{Status: http.StatusUnauthorized, Type: "invalid-refresh",
		Title: "Invalid refresh session", Detail: "Sign in again."}},
	{ErrCSRF, problem.Problem{Status: http.StatusForbidden, Type: "cross-site-request",
		Title: "Cross-site request refused", Detail: "Send X-Malai-CSRF: 1 and an allowed Origin."}},
	{ErrClientIP, problem.Problem{Status: http.StatusBadRequest, Type: "client-address-invalid",
		Title: "Client address unavailable", Detail: "The client address could not be determined."}},
	{ErrNotFound, problem.Problem{Status: http.StatusNotFound, Type: "not-found", Title: "Not found"}},
	{ErrUnknownUser, problem.Problem{Status: http.StatusNotFound, Type: "not-found", Title: "Not found"}},
	{ErrMethodNotAllowed, problem.Problem{Status: http.StatusMethodNotAllowed, Type: "method-not-allowed",
		Title: "Method not allowed"}},
	{ErrForbidden, problem.Problem{Status: http.StatusForbidden, Type: "forbidden", Title: "Forbidden",
		Detail: "This caller may not use this route."}},
	{ErrInvalidClient, problem.Problem{Status: http.StatusBadRequest, Type: "invalid-client", Title: "Invalid client"}},
	{ErrUnavailable, problem.Unavailable},
	{ErrClosed, problem.Unavailable},
}

// WriteError is the default ErrorHandler: it maps the package's errors to
// problem+json (docs/problems.md) and anything else to a generic 500. No
// error text reaches the client. A custom ErrorHandler can call it for the
// errors it does not handle itself.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	p := problem.Internal
	for _, m := range problems {
		if errors.Is(err, m.err) {
			p = m.p
			break
		}
	}
	var pe *PolicyError
	if errors.As(err, &pe) {
		p.Extensions = map[string]any{"violations": pe.Violations}
	}
	var me *MFARequiredError
	if errors.As(err, &me) {
		p.Extensions = map[string]any{"mfa_token": me.Token.Reveal()}
	}
	var te *ThrottleError
	if errors.As(err, &te) {
		secs := int((te.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	}
	switch {
	case errors.Is(err, ErrInvalidToken):
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	case errors.Is(err, ErrInvalidRefresh), errors.Is(err, ErrRefreshReused):
		http.SetCookie(w, clearRefreshCookie())
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrClosed):
		w.Header().Set("Retry-After", "5")
	}
	w.Header().Set("Cache-Control", "no-store")
	problem.Write(w, r, p)
}

// writeJSON sends v with no-store caching (token responses must not be
// cached, RFC 6749 §5.1).
func writeJSON(w http.ResponseWriter, status int, v []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_, _ = w.Write(v)
}
