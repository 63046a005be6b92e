package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	auditmem "github.com/malai-sec/malai/auditlog/memstore"
	"github.com/malai-sec/malai/examples/malai/identity/internal/otpcode"
	"github.com/malai-sec/malai/examples/malai/identity/store"
	"github.com/malai-sec/malai/examples/malai/identity/store/boltstore"
	"github.com/malai-sec/malai/internal/fakeclock"
	"github.com/malai-sec/malai/keyring"
)

const (
	testIssuer = "https://malai.test"
	testOrigin = "https://malai.test"
	strongPW   = "Tr1cky-Harbour-Lantern"
	otherPW    = "Quiet-Meadow-Walrus-42"
)

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

// storeFactory opens the backing store of a harness; each call opens the
// same data again (a restart).
type storeFactory func(t testing.TB) func() store.Store

func boltFactory(t testing.TB) func() store.Store {
	dir := t.TempDir()
	return func() store.Store {
		st, err := boltstore.Open(dir, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
}

type harness struct {
	t      testing.TB
	svc    *Service
	st     store.Store
	open   func() store.Store
	clock  *fakeClock
	logs   *syncBuffer
	ring   *keyring.Ring
	audit  *auditlog.Log
	auditS *auditmem.Store
	mod    func(*Config)
}

// newHarness builds a service with cheap argon2 parameters, a fake clock,
// a bbolt store under a temporary directory and an in-memory audit chain;
// mod may adjust the config.
func newHarness(t testing.TB, mod func(*Config)) *harness {
	return newHarnessOn(t, boltFactory, mod)
}

func newHarnessOn(t testing.TB, f storeFactory, mod func(*Config)) *harness {
	t.Helper()
	k, err := keyring.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	ring, err := keyring.NewRing("k1", map[string]keyring.Key{"k1": k})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, open: f(t), clock: newClock(), logs: &syncBuffer{}, ring: ring, auditS: auditmem.New(), mod: mod}
	h.start()
	return h
}

// start opens the store and the audit log and starts a service on them.
func (h *harness) start() {
	t := h.t
	t.Helper()
	skey, _, err := note.GenerateKey(rand.Reader, "malai.test/identity-audit")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	h.audit, err = auditlog.New(auditlog.Config{Store: h.auditS, Origin: "malai.test/identity-audit", Signers: []note.Signer{signer}, Ring: h.ring, Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	h.st = h.open()
	cfg := Config{
		Issuer: testIssuer,
		Store:  h.st,
		Ring:   h.ring,
		Audit:  h.audit,
		Now:    h.clock.Now,
		Argon2: Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1},
		Logger: slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Clients: []Client{
			{ID: "worker", Scopes: []string{"ledger:transfer"}},
			{ID: "evidence", Scopes: []string{"ledger:audit"}},
		},
		PeerComponent: func(r *http.Request) string { return r.Header.Get("X-Test-Peer") },
	}
	if h.mod != nil {
		h.mod(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.svc = svc
	st, audit := h.st, h.audit
	t.Cleanup(func() {
		_ = svc.Close()
		_ = audit.Close()
		_ = st.Close()
	})
}

// restart stops the service and its store and starts them again on the
// same data: what a process restart with the same data directory does.
func (h *harness) restart() {
	h.t.Helper()
	if err := h.svc.Close(); err != nil {
		h.t.Fatal(err)
	}
	_ = h.audit.Close()
	if err := h.st.Close(); err != nil {
		h.t.Fatal(err)
	}
	h.start()
}

// auditEvents returns the types and payloads of the audit chain so far.
func (h *harness) auditEvents() []auditlog.Event {
	h.t.Helper()
	var out []auditlog.Event
	if _, err := auditlog.Replay(context.Background(), h.auditS, h.ring, func(e auditlog.Event) error {
		out = append(out, e)
		return nil
	}); err != nil {
		h.t.Fatal(err)
	}
	return out
}

func (h *harness) auditTypes() []string {
	var out []string
	for _, e := range h.auditEvents() {
		out = append(out, e.Type)
	}
	return out
}

type reqOpt func(*http.Request)

func fromIP(ip string) reqOpt { return func(r *http.Request) { r.RemoteAddr = ip + ":40000" } }
func withBearer(tok Secret) reqOpt {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok.Reveal()) }
}
func withCookie(name, v string) reqOpt {
	return func(r *http.Request) { r.AddCookie(&http.Cookie{Name: name, Value: v}) }
}
func withRefresh(v string) reqOpt { return withCookie(RefreshCookie, v) }
func withDevice(v string) reqOpt  { return withCookie(DeviceCookie, v) }
func withHeader(k, v string) reqOpt {
	return func(r *http.Request) { r.Header.Set(k, v) }
}

// browser adds what a same-origin browser request to refresh or sign-out
// carries.
func browser() reqOpt {
	return func(r *http.Request) {
		r.Header.Set("Origin", testOrigin)
		r.Header.Set(CSRFHeader, "1")
	}
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

func (h *harness) signUp(user, pw string, opts ...reqOpt) string {
	h.t.Helper()
	w := h.postJSON("/v1/users", map[string]string{"username": user, "password": pw}, opts...)
	if w.Code != http.StatusCreated {
		h.t.Fatalf("sign-up %s: %d %s", user, w.Code, w.Body)
	}
	var out struct{ Sub string }
	_ = json.Unmarshal(w.Body.Bytes(), &out)
	return out.Sub
}

func (h *harness) signIn(body map[string]string, opts ...reqOpt) *httptest.ResponseRecorder {
	h.t.Helper()
	return h.postJSON(SignInPath, body, opts...)
}

// signedIn is what a client keeps from a sign-in.
type session struct {
	token   Secret
	refresh string
	device  string
}

// signInOK signs in and returns the token and the refresh and device
// cookies.
func (h *harness) signInOK(body map[string]string, opts ...reqOpt) session {
	h.t.Helper()
	w := h.signIn(body, opts...)
	if w.Code != http.StatusOK {
		h.t.Fatalf("sign-in: %d %s", w.Code, w.Body)
	}
	return session{token: decodeToken(h.t, w).AccessToken, refresh: cookieValue(h.t, w, RefreshCookie), device: cookieValue(h.t, w, DeviceCookie)}
}

func creds(user, pw string) map[string]string {
	return map[string]string{"username": user, "password": pw}
}

func decodeToken(t testing.TB, w *httptest.ResponseRecorder) TokenResponse {
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

func cookieValue(t testing.TB, w *httptest.ResponseRecorder, name string) string {
	t.Helper()
	for _, c := range w.Result().Cookies() {
		if c.Name == name {
			return c.Value
		}
	}
	t.Fatalf("no %s cookie in %v", name, w.Header()["Set-Cookie"])
	return ""
}

type problemBody struct {
	Type       string   `json:"type"`
	Title      string   `json:"title"`
	Status     int      `json:"status"`
	Detail     string   `json:"detail"`
	Violations []string `json:"violations"`
	MFAToken   string   `json:"mfa_token"`
}

func wantProblem(t testing.TB, w *httptest.ResponseRecorder, status int, slug string) problemBody {
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
	if !strings.HasSuffix(p.Type, "#"+slug) && !strings.HasSuffix(p.Type, "/"+slug) {
		t.Fatalf("problem type %q, want slug %q", p.Type, slug)
	}
	return p
}

// claimsOf decodes a token's payload without verifying it.
func claimsOf(t testing.TB, tok Secret) map[string]any {
	t.Helper()
	parts := strings.Split(tok.Reveal(), ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS: %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// enrollTOTP enrols and confirms TOTP for an account; it returns the
// secret and the recovery codes.
func (h *harness) enrollTOTP(s session, pw string) (string, []string) {
	h.t.Helper()
	w := h.postJSON("/v1/mfa/totp", map[string]string{"password": pw}, withBearer(s.token))
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
	w = h.postJSON("/v1/mfa/totp/confirm", map[string]string{"code": code}, withBearer(s.token))
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

// code returns the TOTP code at the clock's time, advancing the clock one
// step first so no two codes share a step.
func (h *harness) code(secret string) string {
	h.t.Helper()
	h.clock.Advance(otpcode.Period)
	c, err := otpcode.Code(secret, h.clock.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// signRaw signs header and payload JSON texts with the service's current
// key, for forged-claim tests.
func (h *harness) signRaw(header, payload string) Secret {
	h.t.Helper()
	key, err := h.svc.keys.Signer(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	var priv ecdsa.PrivateKey
	if err := key.Raw(&priv); err != nil {
		h.t.Fatal(err)
	}
	header = strings.ReplaceAll(header, "$KID", key.KeyID())
	in := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	d := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, &priv, d[:])
	if err != nil {
		h.t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return Secret(in + "." + base64.RawURLEncoding.EncodeToString(sig))
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }
