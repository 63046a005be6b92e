package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestNewConfig(t *testing.T) {
	h := newHarness(t, nil)
	base := func() Config {
		return Config{Issuer: testIssuer, Store: h.st, Ring: h.ring, Audit: h.audit}
	}
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"no issuer", func(c *Config) { c.Issuer = "" }},
		{"http issuer", func(c *Config) { c.Issuer = "http://malai.test" }},
		{"issuer with query", func(c *Config) { c.Issuer = "https://malai.test/?a=b" }},
		{"no store", func(c *Config) { c.Store = nil }},
		{"no ring", func(c *Config) { c.Ring = nil }},
		{"no audit", func(c *Config) { c.Audit = nil }},
		{"http token endpoint", func(c *Config) { c.TokenEndpoint = "http://malai.test/oauth2/token" }},
		{"origin with a path", func(c *Config) { c.AllowedOrigins = []string{"https://malai.test/app"} }},
		{"token lifetime too long", func(c *Config) { c.AccessTokenTTL = time.Hour }},
		{"token lifetime too short", func(c *Config) { c.AccessTokenTTL = time.Second }},
		{"rotation faster than tokens live", func(c *Config) { c.KeyRotationInterval = 6 * time.Minute }},
		{"session shorter than refresh", func(c *Config) { c.SessionMaxAge = time.Hour; c.RefreshTTL = 2 * time.Hour }},
		{"bad argon2", func(c *Config) { c.Argon2 = Argon2Params{Time: 0, MemoryKiB: 64, Threads: 1} }},
		{"unknown policy", func(c *Config) { c.PasswordPolicy = 7 }},
		{"client with ':'", func(c *Config) { c.Clients = []Client{{ID: "a:b", Scopes: []string{"x"}}} }},
		{"client without scopes", func(c *Config) { c.Clients = []Client{{ID: "worker"}} }},
		{"client listed twice", func(c *Config) {
			c.Clients = []Client{{ID: "worker", Scopes: []string{"x"}}, {ID: "worker", Scopes: []string{"y"}}}
		}},
		{"client named like the user client", func(c *Config) { c.Clients = []Client{{ID: DefaultUserClientID, Scopes: []string{"x"}}} }},
		{"bad user scope", func(c *Config) { c.UserScopes = []string{"a b"} }},
		{"TOTP issuer with ':'", func(c *Config) { c.TOTPIssuer = "a:b" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mod(&c)
			if s, err := New(c); err == nil {
				s.Close()
				t.Fatal("New accepted the config")
			} else if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
		})
	}
}

func TestSignUp(t *testing.T) {
	h := newHarness(t, nil)
	w := h.postJSON("/v1/users", map[string]string{"username": "Alice", "password": strongPW})
	if w.Code != http.StatusCreated {
		t.Fatalf("sign-up: %d %s", w.Code, w.Body)
	}
	var out struct{ ID, Sub, Username string }
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if out.Username != "alice" || out.Sub != UserSubject(out.ID) || strings.Contains(out.Sub, "alice") {
		t.Fatalf("sign-up answer %+v: the subject must be opaque", out)
	}
	if id, ok := UserID(out.Sub); !ok || id != out.ID {
		t.Fatalf("UserID(%q) = %q %v", out.Sub, id, ok)
	}
	wantProblem(t, h.postJSON("/v1/users", map[string]string{"username": "ALICE", "password": otherPW}), http.StatusConflict, "username-taken")
	for _, tc := range []struct {
		name, user, pw string
		status         int
		slug           string
	}{
		{"short", "bob", "Sh0rt!", 422, "password-policy"},
		{"no symbol", "bob", "Harbourlantern42", 422, "password-policy"},
		{"contains the username", "harbour", "Harbour-Lantern-42", 422, "password-policy"},
		{"breached", "bob", "P@ssw0rd!2024", 422, "password-compromised"},
		{"bad username", "b", strongPW, 422, "invalid-username"},
		{"username with a colon", "bob:x", strongPW, 422, "invalid-username"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantProblem(t, h.postJSON("/v1/users", map[string]string{"username": tc.user, "password": tc.pw}), tc.status, tc.slug)
		})
	}
	for _, body := range []string{`{"username":"bob","password":"x","role":"admin"}`, `{"username":"bob","username":"eve","password":"x"}`, `[]`, ``} {
		wantProblem(t, h.do(http.MethodPost, "/v1/users", "application/json", body), http.StatusBadRequest, "malformed-request")
	}
	wantProblem(t, h.do(http.MethodPost, "/v1/users", "text/plain", `{}`), http.StatusUnsupportedMediaType, "unsupported-media-type")
	wantProblem(t, h.do(http.MethodPost, "/v1/users", "application/json", `{"username":"`+strings.Repeat("a", 5000)+`"}`), http.StatusRequestEntityTooLarge, "payload-too-large")
	if got := h.auditTypes(); len(got) != 1 || got[0] != AuditUserCreated {
		t.Fatalf("audit after one sign-up: %v", got)
	}
}

func TestRoutingProblems(t *testing.T) {
	h := newHarness(t, nil)
	wantProblem(t, h.do(http.MethodGet, "/nope", "", ""), http.StatusNotFound, "not-found")
	w := h.do(http.MethodPut, "/v1/users", "", "")
	wantProblem(t, w, http.StatusMethodNotAllowed, "method-not-allowed")
	if w.Header().Get("Allow") == "" {
		t.Fatal("405 without Allow")
	}
}

// TestTokenClaims: a user token names the account by its opaque id,
// carries the session, and verifies with jwtverify the way every other
// layer checks it.
func TestTokenClaims(t *testing.T) {
	h := newHarness(t, nil)
	sub := h.signUp("alice", strongPW)
	s := h.signInOK(creds("alice", strongPW))
	c := claimsOf(t, s.token)
	if c["sub"] != sub || strings.Contains(s.token.Reveal(), "alice") {
		t.Fatalf("sub %v, want %s; the username must not be in the token", c["sub"], sub)
	}
	for _, k := range []string{"iss", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope", ClaimTokenClass, ClaimAuthTime, ClaimAMR, ClaimSession} {
		if _, ok := c[k]; !ok {
			t.Fatalf("claim %s missing: %v", k, c)
		}
	}
	if c["iss"] != testIssuer || fmt.Sprint(c["aud"]) != "["+AudienceUser+"]" || c[ClaimTokenClass] != ClassUser {
		t.Fatalf("claims %v", c)
	}
	claims, err := h.svc.Verifier().Verify(context.Background(), s.token.Reveal())
	if err != nil {
		t.Fatal(err)
	}
	if claims.Subject() != sub || claims.Issuer() != testIssuer {
		t.Fatalf("verified %v", claims)
	}
	w := h.do(http.MethodGet, "/v1/account", "", "", withBearer(s.token))
	if w.Code != http.StatusOK {
		t.Fatalf("account: %d %s", w.Code, w.Body)
	}
	var acct AccountInfo
	_ = json.Unmarshal(w.Body.Bytes(), &acct)
	if acct.Subject != sub || acct.Username != "alice" || acct.MFA {
		t.Fatalf("account %+v", acct)
	}
}

func TestJWKSAndMetadata(t *testing.T) {
	h := newHarness(t, nil)
	w := h.do(http.MethodGet, JWKSPath, "", "")
	if w.Code != 200 || w.Header().Get("Cache-Control") != "public, max-age=300" || w.Header().Get("Content-Type") != "application/jwk-set+json" {
		t.Fatalf("JWKS: %d %v", w.Code, w.Header())
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	_ = json.Unmarshal(w.Body.Bytes(), &set)
	if len(set.Keys) != 2 {
		t.Fatalf("JWKS has %d keys, want current and next", len(set.Keys))
	}
	for _, k := range set.Keys {
		if _, private := k["d"]; private {
			t.Fatal("private key published")
		}
	}
	w = h.do(http.MethodGet, MetadataPath, "", "")
	if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Cache-Control"), "public, max-age=") {
		t.Fatalf("metadata: %d %v", w.Code, w.Header())
	}
	var md Metadata
	if err := json.Unmarshal(w.Body.Bytes(), &md); err != nil {
		t.Fatal(err)
	}
	want := Metadata{
		Issuer: testIssuer, JWKSURI: testIssuer + JWKSPath, TokenEndpoint: testIssuer + TokenPath,
		TokenEndpointAuthMethods: []string{"private_key_jwt"}, TokenEndpointAuthSigningAlgs: []string{"ES256", "EdDSA"},
		GrantTypes: []string{"client_credentials"}, ResponseTypes: []string{},
		Scopes: []string{"ledger:audit", "ledger:read", "ledger:transfer", "ledger:write"},
	}
	if d := cmp.Diff(want, md); d != "" {
		t.Fatalf("metadata (-want +got):\n%s", d)
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW)
	s := h.signInOK(creds("alice", strongPW))
	secret, codes := h.enrollTOTP(s, strongPW)
	h.signIn(creds("alice", "Wrong-Password-1!"))
	h.signIn(map[string]string{"username": "nobody", "password": "Mistyped-" + strongPW})
	w := h.signIn(creds("alice", strongPW), withDevice(s.device))
	p := wantProblem(t, w, http.StatusUnauthorized, "mfa-required")
	logs := h.logs.String()
	for _, leak := range []string{strongPW, "Wrong-Password-1!", "Mistyped-", s.token.Reveal(), s.refresh, s.device, secret, codes[0], p.MFAToken, "nobody", "alice"} {
		if strings.Contains(logs, leak) {
			t.Fatalf("logs contain a secret or a username: %q", leak)
		}
	}
	for _, e := range h.auditEvents() {
		for _, leak := range []string{strongPW, "alice", s.token.Reveal(), secret} {
			if strings.Contains(string(e.Payload), leak) || strings.Contains(e.Actor, leak) {
				t.Fatalf("audit event %s holds %q", e.Type, leak)
			}
		}
	}
}

func TestSecretRedaction(t *testing.T) {
	s := Secret("hunter2")
	for _, got := range []string{fmt.Sprint(s), fmt.Sprintf("%v %s %q %#v", s, s, s, s)} {
		if strings.Contains(got, "hunter2") {
			t.Fatalf("formatted secret: %s", got)
		}
	}
	b, _ := json.Marshal(TokenResponse{AccessToken: s})
	if strings.Contains(string(b), "hunter2") {
		t.Fatalf("marshalled: %s", b)
	}
}

func TestClose(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW)
	if err := h.svc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Close(); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, h.signIn(creds("alice", strongPW)), http.StatusServiceUnavailable, "service-unavailable")
	if _, err := h.svc.CreateUser(context.Background(), "bob", strongPW); !errors.Is(err, ErrClosed) {
		t.Fatalf("CreateUser after Close: %v", err)
	}
}

func TestErrorHandlerHook(t *testing.T) {
	var got error
	h := newHarness(t, func(c *Config) {
		c.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) { got = err; w.WriteHeader(418) }
	})
	w := h.signIn(creds("nobody", strongPW))
	if w.Code != 418 || !errors.Is(got, ErrInvalidCredentials) {
		t.Fatalf("hook saw %v, status %d", got, w.Code)
	}
}

// TestUniformUnknownUser: an unknown name and a wrong password get the
// same answer after the same argon2id work.
func TestUniformUnknownUser(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW)
	before := h.svc.hashes.Load()
	a := h.signIn(creds("alice", "Wrong-Password-1!"), fromIP("198.51.100.1"))
	b := h.signIn(creds("nobody", "Wrong-Password-1!"), fromIP("198.51.100.2"))
	if a.Code != b.Code || a.Body.String() != b.Body.String() {
		t.Fatalf("unknown user distinguishable: %d %s vs %d %s", a.Code, a.Body, b.Code, b.Body)
	}
	if n := h.svc.hashes.Load() - before; n != 2 {
		t.Fatalf("%d argon2id computations for two sign-ins, want 2", n)
	}
}

func TestConcurrentUse(t *testing.T) {
	h := newHarness(t, nil)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("user%d", i)
			if _, err := h.svc.CreateUser(context.Background(), name, strongPW); err != nil {
				t.Error(err)
				return
			}
			w := h.signIn(creds(name, strongPW), fromIP(fmt.Sprintf("192.0.2.%d", 20+i)))
			if w.Code != http.StatusOK {
				t.Errorf("%s: %d %s", name, w.Code, w.Body)
			}
		}()
	}
	wg.Wait()
}

// TestConcurrentSignUpOneName: many sign-ups of one name race; exactly one
// account exists afterwards.
func TestConcurrentSignUpOneName(t *testing.T) {
	h := newHarness(t, nil)
	var wg sync.WaitGroup
	codes := make([]int, 8)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = h.postJSON("/v1/users", map[string]string{"username": "alice", "password": fmt.Sprintf("%s-%d", strongPW, i)}).Code
		}()
	}
	wg.Wait()
	created := 0
	for _, c := range codes {
		switch c {
		case http.StatusCreated:
			created++
		case http.StatusConflict:
		default:
			t.Fatalf("status %d", c)
		}
	}
	if created != 1 {
		t.Fatalf("%d accounts created for one name", created)
	}
}

type flipChecker struct {
	mu  sync.Mutex
	set map[string]bool
}

func (f *flipChecker) put(pw string, v bool) { f.mu.Lock(); f.set[pw] = v; f.mu.Unlock() }
func (f *flipChecker) Breached(_ context.Context, pw string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.set[pw], nil
}

// TestBreachedAtSignIn: a password that turns up in a breach corpus
// forces a reset; without a second factor the refusal looks like a
// wrong password, with one the owner is told.
func TestBreachedAtSignIn(t *testing.T) {
	checker := &flipChecker{set: map[string]bool{}}
	h := newHarness(t, func(c *Config) { c.Breach = checker })
	h.signUp("alice", strongPW)
	h.signUp("carol", strongPW)
	secret, _ := h.enrollTOTP(h.signInOK(creds("carol", strongPW)), strongPW)

	checker.put(strongPW, true)
	wrong := h.signIn(creds("alice", "Wrong-Pass-123!"), fromIP("198.51.100.1"))
	w := h.signIn(creds("alice", strongPW), fromIP("198.51.100.2"))
	wantProblem(t, w, 401, "invalid-credentials")
	if w.Body.String() != wrong.Body.String() {
		t.Fatal("the breached-password refusal tells the caller the password was right")
	}
	wantProblem(t, h.signIn(map[string]string{"username": "carol", "password": strongPW, "totp_code": h.code(secret)}), 403, "password-reset-required")
	p := wantProblem(t, h.signIn(creds("carol", strongPW)), 401, "mfa-required")
	wantProblem(t, h.postJSON(SignInPath, map[string]string{"mfa_token": p.MFAToken, "totp_code": h.code(secret)}), 403, "password-reset-required")

	// The flag sticks even if the corpus forgets the password.
	checker.put(strongPW, false)
	wantProblem(t, h.signIn(creds("alice", strongPW), fromIP("198.51.100.3")), 401, "invalid-credentials")

	checker.put("Leaked-Lantern-77!", true)
	if err := h.svc.ResetPassword(context.Background(), "alice", "Leaked-Lantern-77!"); !errors.Is(err, ErrPasswordCompromised) {
		t.Fatalf("reset to a compromised password: %v", err)
	}
	var pe *PolicyError
	if err := h.svc.ResetPassword(context.Background(), "alice", "short"); !errors.As(err, &pe) {
		t.Fatalf("reset to a short password: %v", err)
	}
	if err := h.svc.ResetPassword(context.Background(), "nobody", "Fresh-Lantern-42!"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("reset of an unknown user: %v", err)
	}
	if err := h.svc.ResetPassword(context.Background(), "alice", "Fresh-Lantern-42!"); err != nil {
		t.Fatal(err)
	}
	h.signInOK(creds("alice", "Fresh-Lantern-42!"), fromIP("198.51.100.4"))
	if !contains(h.auditTypes(), AuditPasswordReset) {
		t.Fatal("reset not audited")
	}
}

// TestSubjectNamespaces: a user called like a component never gets that
// component's subject, and the mfa_token route refuses mixed bodies.
func TestSubjectNamespaces(t *testing.T) {
	h := newHarness(t, nil)
	sub := h.signUp("worker", strongPW)
	if sub == "worker" || !strings.HasPrefix(sub, UserSubjectPrefix) {
		t.Fatalf("user worker got subject %q", sub)
	}
	wantProblem(t, h.postJSON(SignInPath, map[string]string{"username": "worker", "password": strongPW, "mfa_token": "m1.x.y"}), 400, "malformed-request")
}

// The cookies a sign-in issues have exactly the shapes the gateway's WAF
// leaves uninspected (DeviceCookieFormat, RefreshCookieFormat): a shape
// drifting from its format would put random values back under the SQL
// rules, which refuse about one in 3,000 of them.
func TestIssuedCookieFormats(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW)
	for range 20 {
		s := h.signInOK(creds("alice", strongPW))
		for _, c := range []struct{ name, value, format string }{
			{DeviceCookie, s.device, DeviceCookieFormat},
			{RefreshCookie, s.refresh, RefreshCookieFormat},
		} {
			if !regexp.MustCompile("^(?:" + c.format + ")$").MatchString(c.value) {
				t.Fatalf("%s value %q does not have its format %s", c.name, c.value, c.format)
			}
		}
	}
}
