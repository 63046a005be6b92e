package identity

import (
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"

	"github.com/malai-sec/malai/examples/malai/identity/internal/strictjson"
	"github.com/malai-sec/malai/problem"
)

// maxJSONBody caps every JSON request body. The largest legitimate body is
// a sign-in with a 128-character password, far below this.
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

func (s *Service) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+JWKSPath, s.serveJWKS)
	mux.HandleFunc("POST /v1/users", s.serveSignUp)
	mux.HandleFunc("POST /v1/sessions", s.serveSignIn)
	mux.HandleFunc("POST "+RefreshPath, s.serveRefresh)
	mux.HandleFunc("DELETE "+RefreshPath, s.serveSignOut)
	mux.HandleFunc("POST /v1/mfa/totp", s.serveTOTPEnroll)
	mux.HandleFunc("POST /v1/mfa/totp/confirm", s.serveTOTPConfirm)
	mux.HandleFunc("POST /oauth2/token", s.serveToken)
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
		rec := &statusRecorder{header: make(http.Header)}
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

// statusRecorder captures what the mux's not-found/method handler writes.
type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header { return r.header }
func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}
func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return len(b), nil
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
	{ErrSignInBlocked, problem.Problem{Status: http.StatusForbidden, Type: "sign-in-blocked",
		Title: "Sign-in blocked", Detail: "Sign-in is temporarily blocked after suspicious activity; try again later."}},
	{ErrMFARequired, problem.Problem{Status: http.StatusUnauthorized, Type: "mfa-required",
		Title: "Second factor required", Detail: "Repeat the request with a TOTP code or a recovery code."}},
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
		Title: "Malformed request", Detail: "The body must be one JSON object with the documented string members only."}},
	{ErrUnsupportedMediaType, problem.Problem{Status: http.StatusUnsupportedMediaType, Type: "unsupported-media-type",
		Title: "Unsupported media type", Detail: "Send the body as application/json."}},
	{ErrBodyTooLarge, problem.Problem{Status: http.StatusRequestEntityTooLarge, Type: "payload-too-large",
		Title: "Request body too large", Detail: "The request body exceeds the size limit."}},
	{ErrInvalidToken, problem.Problem{Status: http.StatusUnauthorized, Type: "invalid-token",
		Title: "Invalid token", Detail: "A valid user access token is required."}},
	{ErrReauthenticate, problem.Problem{Status: http.StatusUnauthorized, Type: "reauthentication-required",
		Title: "Sign in again", Detail: "This action needs a recent sign-in."}},
	{ErrMFAAlreadyEnrolled, problem.Problem{Status: http.StatusConflict, Type: "mfa-already-enrolled",
		Title: "Second factor already enrolled"}},
	{ErrMFANotPending, problem.Problem{Status: http.StatusConflict, Type: "mfa-not-pending",
		Title: "No pending enrolment", Detail: "Start an enrolment with POST /v1/mfa/totp first."}},
	{ErrInvalidCode, problem.Problem{Status: http.StatusUnprocessableEntity, Type: "invalid-otp-code",
		Title: "Invalid code", Detail: "The code does not match the authenticator; check the device clock and enter the current code."}},
	{ErrInvalidRefresh, problem.Problem{Status: http.StatusUnauthorized, Type: "invalid-refresh",
		Title: "Invalid refresh session", Detail: "Sign in again."}},
	{ErrRefreshReused, problem.Problem{Status: http.StatusUnauthorized, Type: "invalid-refresh",
		Title: "Invalid refresh session", Detail: "Sign in again."}},
	{ErrClientIP, problem.Problem{Status: http.StatusBadRequest, Type: "client-address-invalid",
		Title: "Client address unavailable", Detail: "The client address could not be determined."}},
	{ErrNotFound, problem.Problem{Status: http.StatusNotFound, Type: "not-found", Title: "Not found"}},
	{ErrMethodNotAllowed, problem.Problem{Status: http.StatusMethodNotAllowed, Type: "method-not-allowed",
		Title: "Method not allowed"}},
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
	switch {
	case errors.Is(err, ErrInvalidToken), errors.Is(err, ErrReauthenticate):
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	case errors.Is(err, ErrInvalidRefresh), errors.Is(err, ErrRefreshReused):
		http.SetCookie(w, clearRefreshCookie())
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrClosed):
		w.Header().Set("Retry-After", "5")
	}
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
