package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/malai-sec/malai/internal/fakeclock"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/malai-sec/malai/examples/malai/identity/internal/otpcode"
)

const testIssuer = "https://identity.malai.test"

type fakeClock = fakeclock.Clock

func newClock() *fakeClock {
	return fakeclock.New(time.Date(2026, 3, 1, 12, 0, 5, 0, time.UTC))
}

// syncBuffer collects log output from concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type harness struct {
	t     *testing.T
	svc   *Service
	clock *fakeClock
	logs  *syncBuffer
}

// newHarness builds a service with cheap argon2 parameters and a fake
// clock; mod may adjust the config.
func newHarness(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	clock := newClock()
	logs := &syncBuffer{}
	cfg := Config{
		Issuer: testIssuer,
		Now:    clock.Now,
		Argon2: Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1},
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	return &harness{t: t, svc: svc, clock: clock, logs: logs}
}

type reqOpt func(*http.Request)

func fromIP(ip string) reqOpt { return func(r *http.Request) { r.RemoteAddr = ip + ":40000" } }
func withBearer(tok Secret) reqOpt {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok.Reveal()) }
}
func withCookie(v string) reqOpt {
	return func(r *http.Request) { r.AddCookie(&http.Cookie{Name: RefreshCookie, Value: v}) }
}

func (h *harness) do(method, path, contentType, body string, opts ...reqOpt) *httptest.ResponseRecorder {
	h.t.Helper()
	r := httptest.NewRequestWithContext(context.Background(), method, path, strings.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	r.RemoteAddr = "192.0.2.10:40000"
	for _, o := range opts {
		o(r)
	}
	w := httptest.NewRecorder()
	h.svc.Handler().ServeHTTP(w, r)
	return w
}

func (h *harness) postJSON(path string, v any, opts ...reqOpt) *httptest.ResponseRecorder {
	h.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.do(http.MethodPost, path, "application/json", string(b), opts...)
}

func (h *harness) signUp(user, pw string, opts ...reqOpt) {
	h.t.Helper()
	w := h.postJSON("/v1/users", map[string]string{"username": user, "password": pw}, opts...)
	if w.Code != http.StatusCreated {
		h.t.Fatalf("sign-up %s: %d %s", user, w.Code, w.Body)
	}
}

func (h *harness) signIn(body map[string]string, opts ...reqOpt) *httptest.ResponseRecorder {
	h.t.Helper()
	return h.postJSON("/v1/sessions", body, opts...)
}

// signInOK signs in and returns the token response and refresh cookie.
func (h *harness) signInOK(body map[string]string, opts ...reqOpt) (TokenResponse, string) {
	h.t.Helper()
	w := h.signIn(body, opts...)
	if w.Code != http.StatusOK {
		h.t.Fatalf("sign-in: %d %s", w.Code, w.Body)
	}
	return decodeToken(h.t, w), refreshCookieValue(h.t, w)
}

func decodeToken(t *testing.T, w *httptest.ResponseRecorder) TokenResponse {
	t.Helper()
	var tr TokenResponse
	if err := json.Unmarshal(w.Body.Bytes(), &tr); err != nil {
		t.Fatalf("token response %q: %v", w.Body, err)
	}
	if tr.TokenType != "Bearer" || tr.AccessToken == "" {
		t.Fatalf("token response: %s", w.Body)
	}
	if w.Header().Get("Cache-Control") != "no-store" {
		t.Fatal("token response is cacheable")
	}
	return tr
}

func refreshCookieValue(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	for _, c := range w.Result().Cookies() {
		if c.Name == RefreshCookie {
			return c.Value
		}
	}
	t.Fatalf("no refresh cookie in %v", w.Header()["Set-Cookie"])
	return ""
}

type problemBody struct {
	Type       string   `json:"type"`
	Title      string   `json:"title"`
	Status     int      `json:"status"`
	Detail     string   `json:"detail"`
	Violations []string `json:"violations"`
}

func wantProblem(t *testing.T, w *httptest.ResponseRecorder, status int, slug string) problemBody {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status %d, want %d; body %s", w.Code, status, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("content type %q; body %s", ct, w.Body)
	}
	var p problemBody
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(p.Type, "#"+slug) {
		t.Fatalf("problem type %q, want slug %q", p.Type, slug)
	}
	return p
}

// verifyWithJWKS verifies a token the way another domain would: with jwx
// against the JWKS document served over HTTP.
func (h *harness) verifyWithJWKS(tok Secret, aud, class string) (jwt.Token, error) {
	h.t.Helper()
	w := h.do(http.MethodGet, JWKSPath, "", "")
	set, err := jwk.Parse(w.Body.Bytes())
	if err != nil {
		h.t.Fatal(err)
	}
	return verifyAgainst(set, tok, aud, class, h.clock.Now)
}

func verifyAgainst(set jwk.Set, tok Secret, aud, class string, now func() time.Time) (jwt.Token, error) {
	msg, err := jws.Parse([]byte(tok.Reveal()))
	if err != nil {
		return nil, err
	}
	if typ := msg.Signatures()[0].ProtectedHeaders().Type(); typ != TokenType {
		return nil, errTyp
	}
	return jwt.Parse([]byte(tok.Reveal()),
		jwt.WithKeySet(set, jws.WithRequireKid(true)),
		jwt.WithValidate(true),
		jwt.WithClock(jwt.ClockFunc(now)),
		jwt.WithIssuer(testIssuer),
		jwt.WithAudience(aud),
		jwt.WithClaimValue(ClaimTokenClass, class),
	)
}

var errTyp = io.ErrUnexpectedEOF // any sentinel: only non-nil matters

// enrollTOTP enrols and confirms TOTP for an account; it returns the
// secret and the recovery codes.
func (h *harness) enrollTOTP(tok Secret) (string, []string) {
	h.t.Helper()
	w := h.do(http.MethodPost, "/v1/mfa/totp", "", "", withBearer(tok))
	if w.Code != http.StatusCreated {
		h.t.Fatalf("enrol: %d %s", w.Code, w.Body)
	}
	var enr struct {
		Secret string `json:"secret"`
		URL    string `json:"otpauth_url"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &enr); err != nil {
		h.t.Fatal(err)
	}
	code, _ := otpcode.Code(enr.Secret, h.clock.Now())
	w = h.postJSON("/v1/mfa/totp/confirm", map[string]string{"code": code}, withBearer(tok))
	if w.Code != http.StatusOK {
		h.t.Fatalf("confirm: %d %s", w.Code, w.Body)
	}
	var rc struct {
		Codes []string `json:"recovery_codes"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &rc); err != nil {
		h.t.Fatal(err)
	}
	return enr.Secret, rc.Codes
}
