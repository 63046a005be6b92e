package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/malai-sec/malai/examples/malai/identity/internal/otpcode"
)

const goodPW = "Tr1cky-Harbour-Lantern"

func TestNewConfig(t *testing.T) {
	ok := func(c *Config) {}
	tests := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"defaults", ok, true},
		{"missing issuer", func(c *Config) { c.Issuer = "" }, false},
		{"http issuer", func(c *Config) { c.Issuer = "http://identity" }, false},
		{"issuer with query", func(c *Config) { c.Issuer = "https://id.test/?a=b" }, false},
		{"issuer with userinfo", func(c *Config) { c.Issuer = "https://u:p@id.test" }, false},
		{"unknown policy", func(c *Config) { c.PasswordPolicy = 7 }, false},
		{"nist policy", func(c *Config) { c.PasswordPolicy = PolicyNIST }, true},
		{"token ttl in hours", func(c *Config) { c.AccessTokenTTL = time.Hour }, false},
		{"token ttl seconds", func(c *Config) { c.AccessTokenTTL = 10 * time.Second }, false},
		{"negative refresh", func(c *Config) { c.RefreshTTL = -time.Second }, false},
		{"session shorter than refresh", func(c *Config) { c.RefreshTTL = 2 * time.Hour; c.SessionMaxAge = time.Hour }, false},
		{"rotation faster than tokens live", func(c *Config) { c.KeyRotationInterval = 6 * time.Minute }, false},
		{"bad argon2", func(c *Config) { c.Argon2 = Argon2Params{Time: 1, MemoryKiB: 1, Threads: 1} }, false},
		{"negative hashes", func(c *Config) { c.MaxConcurrentHashes = -1 }, false},
		{"bad user client id", func(c *Config) { c.UserClientID = "Web App" }, false},
		{"bad scope", func(c *Config) { c.UserScopes = []string{"a b"} }, false},
		{"totp issuer colon", func(c *Config) { c.TOTPIssuer = "a:b" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Issuer: testIssuer, Argon2: Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}}
			tt.mod(&cfg)
			before := fmt.Sprintf("%+v", cfg)
			svc, err := New(cfg)
			if tt.ok != (err == nil) {
				t.Fatalf("New: %v", err)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			if svc != nil {
				_ = svc.Close()
			}
			if after := fmt.Sprintf("%+v", cfg); before != after {
				t.Fatal("New modified the caller's Config")
			}
		})
	}
}

func TestSignUpPolicy(t *testing.T) {
	tests := []struct {
		name       string
		policy     PasswordPolicy
		pw         string
		status     int
		violations []string
	}{
		{"page accepts 12 mixed", PolicyPage, "Harb0ur-Lamp", 201, nil},
		{"page refuses 11", PolicyPage, "Harb0ur-Lam", 422, []string{"too-short"}},
		{"page refuses no symbol", PolicyPage, "Harb0urLampX", 422, []string{"missing-symbol"}},
		{"page refuses passphrase without digit or upper", PolicyPage, "quiet harbour lantern", 422,
			[]string{"missing-uppercase", "missing-digit"}},
		{"page refuses username inside", PolicyPage, "Alice-Harb0ur!", 422, []string{"contains-username"}},
		{"nist accepts passphrase", PolicyNIST, "quiet harbour lantern", 201, nil},
		{"nist refuses page-valid 14", PolicyNIST, "Harb0ur-Lamp!!", 422, []string{"too-short"}},
		{"nist accepts 15 without composition", PolicyNIST, "harbourlanterns", 201, nil},
		{"nist refuses repetitive", PolicyNIST, "abababababababab", 422, []string{"repetitive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.PasswordPolicy = tt.policy })
			w := h.postJSON("/v1/users", map[string]string{"username": "alice", "password": tt.pw})
			if tt.status == 201 {
				if w.Code != 201 || !strings.Contains(w.Body.String(), `"username":"alice"`) {
					t.Fatalf("sign-up: %d %s", w.Code, w.Body)
				}
				return
			}
			p := wantProblem(t, w, tt.status, "password-policy")
			if !slices.Equal(p.Violations, tt.violations) {
				t.Fatalf("violations %v, want %v", p.Violations, tt.violations)
			}
			if strings.Contains(w.Body.String(), tt.pw) {
				t.Fatal("problem echoes the password")
			}
		})
	}
}

func TestSignUpErrors(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("Alice", goodPW)
	tests := []struct {
		name   string
		ct     string
		body   string
		status int
		slug   string
	}{
		{"taken (case-insensitive)", "application/json", `{"username":"ALICE","password":"` + goodPW + `"}`, 409, "username-taken"},
		{"bad username", "application/json", `{"username":"a b","password":"` + goodPW + `"}`, 422, "invalid-username"},
		{"short username", "application/json", `{"username":"ab","password":"` + goodPW + `"}`, 422, "invalid-username"},
		{"breached", "application/json", `{"username":"bob","password":"Password123!"}`, 422, "password-compromised"},
		{"breached leet", "application/json", `{"username":"bob","password":"P@ssw0rd!2024"}`, 422, "password-compromised"},
		{"unknown member", "application/json", `{"username":"bob","password":"x","role":"admin"}`, 400, "malformed-request"},
		{"two objects", "application/json", `{"username":"bob"}{"password":"x"}`, 400, "malformed-request"},
		{"text/plain", "text/plain", `{"username":"bob","password":"x"}`, 415, "unsupported-media-type"},
		{"too large", "application/json", `{"username":"bob","password":"` + strings.Repeat("x", 5000) + `"}`, 413, "payload-too-large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := h.do(http.MethodPost, "/v1/users", tt.ct, tt.body)
			wantProblem(t, w, tt.status, tt.slug)
		})
	}
}

func TestRoutingProblems(t *testing.T) {
	h := newHarness(t, nil)
	r := httptest.NewRequest(http.MethodGet, JWKSPath, nil)
	h.svc.Handler().ServeHTTP(httptest.NewRecorder(), r)
	if r.Pattern != "GET "+JWKSPath {
		t.Fatalf("r.Pattern = %q: telemetry around the handler cannot label the route", r.Pattern)
	}
	wantProblem(t, h.do(http.MethodGet, "/nope", "", ""), 404, "not-found")
	w := h.do(http.MethodGet, "/v1/users", "", "")
	wantProblem(t, w, 405, "method-not-allowed")
	if w.Header().Get("Allow") == "" {
		t.Fatal("405 without Allow")
	}
}

func TestTokenVerifiesAgainstJWKS(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", goodPW)
	tr, _ := h.signInOK(map[string]string{"username": "alice", "password": goodPW})
	if tr.ExpiresIn != 300 || tr.Scope != "ledger:read ledger:write" {
		t.Fatalf("token response %+v", tr)
	}
	tok, err := h.verifyWithJWKS(tr.AccessToken, AudienceUser, ClassUser)
	if err != nil {
		t.Fatalf("user token does not verify against the JWKS: %v", err)
	}
	if tok.Subject() != "user:alice" || tok.Expiration().Sub(tok.IssuedAt()) != 5*time.Minute ||
		!tok.NotBefore().Equal(tok.IssuedAt()) || tok.JwtID() == "" {
		t.Fatalf("claims: sub %q exp-iat %v nbf %v jti %q", tok.Subject(), tok.Expiration().Sub(tok.IssuedAt()), tok.NotBefore(), tok.JwtID())
	}
	for claim, want := range map[string]any{ClaimClientID: DefaultUserClientID, ClaimTokenClass: ClassUser, ClaimScope: "ledger:read ledger:write"} {
		if v, _ := tok.Get(claim); v != want {
			t.Errorf("claim %s = %v, want %v", claim, v, want)
		}
	}
	msg, _ := jws.Parse([]byte(tr.AccessToken.Reveal()))
	hdr := msg.Signatures()[0].ProtectedHeaders()
	if hdr.Type() != "at+jwt" || hdr.Algorithm().String() != "ES256" || hdr.KeyID() == "" {
		t.Fatalf("header typ %q alg %q kid %q", hdr.Type(), hdr.Algorithm(), hdr.KeyID())
	}
	// A user token is not a service token.
	if _, err := h.verifyWithJWKS(tr.AccessToken, AudienceService, ClassService); err == nil {
		t.Fatal("user token accepted as a service token")
	}
	// Expiry is enforced: six minutes later it is dead.
	h.clock.Advance(6 * time.Minute)
	if _, err := h.verifyWithJWKS(tr.AccessToken, AudienceUser, ClassUser); err == nil {
		t.Fatal("expired token verified")
	}
}

func TestJWKSDocument(t *testing.T) {
	h := newHarness(t, nil)
	w := h.do(http.MethodGet, JWKSPath, "", "")
	if w.Code != 200 || w.Header().Get("Cache-Control") != "public, max-age=300" {
		t.Fatalf("JWKS %d cache %q", w.Code, w.Header().Get("Cache-Control"))
	}
	set, err := jwk.Parse(w.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != 2 {
		t.Fatalf("fresh ring publishes %d keys, want current + next", set.Len())
	}
	for i := range set.Len() {
		k, _ := set.Key(i)
		if k.KeyID() == "" || k.KeyUsage() != "sig" || k.Algorithm().String() != "ES256" {
			t.Fatalf("key %d: kid %q use %q alg %q", i, k.KeyID(), k.KeyUsage(), k.Algorithm())
		}
		if _, ok := k.Get("d"); ok || strings.Contains(w.Body.String(), `"d"`) {
			t.Fatal("JWKS leaks a private key")
		}
	}
}

func TestKeyRotation(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", goodPW)
	before, _ := h.signInOK(map[string]string{"username": "alice", "password": goodPW})
	oldJWKS, _ := jwk.Parse(h.svc.JWKS())

	if err := h.svc.RotateKey(); err != nil {
		t.Fatal(err)
	}
	after, _ := h.signInOK(map[string]string{"username": "alice", "password": goodPW})
	kid := func(s Secret) string {
		m, _ := jws.Parse([]byte(s.Reveal()))
		return m.Signatures()[0].ProtectedHeaders().KeyID()
	}
	if kid(before.AccessToken) == kid(after.AccessToken) {
		t.Fatal("rotation did not change the signing key")
	}
	// Old token: still verifiable while its key is published as previous.
	if _, err := h.verifyWithJWKS(before.AccessToken, AudienceUser, ClassUser); err != nil {
		t.Fatalf("pre-rotation token fails after one rotation: %v", err)
	}
	// New token: verifiable even with a JWKS cached before the rotation,
	// because the next key was pre-published.
	if _, err := verifyAgainst(oldJWKS, after.AccessToken, AudienceUser, ClassUser, h.clock.Now); err != nil {
		t.Fatalf("post-rotation token fails against the pre-rotation JWKS: %v", err)
	}
	// Two rotations retire the key.
	if err := h.svc.RotateKey(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.verifyWithJWKS(before.AccessToken, AudienceUser, ClassUser); err == nil {
		t.Fatal("token of a retired key still verifies")
	}
}

func TestAutomaticKeyRotation(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.KeyRotationInterval = time.Hour })
	h.signUp("alice", goodPW)
	first, _ := h.signInOK(map[string]string{"username": "alice", "password": goodPW})
	h.clock.Advance(time.Hour)
	second, _ := h.signInOK(map[string]string{"username": "alice", "password": goodPW})
	k := func(s Secret) string {
		m, _ := jws.Parse([]byte(s.Reveal()))
		return m.Signatures()[0].ProtectedHeaders().KeyID()
	}
	if k(first.AccessToken) == k(second.AccessToken) {
		t.Fatal("key not rotated after KeyRotationInterval")
	}
}

func TestCreateUser(t *testing.T) {
	h := newHarness(t, nil)
	if err := h.svc.CreateUser(context.Background(), "Seeded", goodPW); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.CreateUser(context.Background(), "seeded", goodPW); !errors.Is(err, ErrUsernameTaken) {
		t.Fatalf("duplicate: %v", err)
	}
	var pe *PolicyError
	if err := h.svc.CreateUser(context.Background(), "other", "short"); !errors.As(err, &pe) || !errors.Is(err, ErrPasswordPolicy) {
		t.Fatalf("weak password: %v", err)
	}
	if err := h.svc.CreateUser(context.Background(), "x", goodPW); !errors.Is(err, ErrInvalidUsername) {
		t.Fatalf("bad name: %v", err)
	}
	h.signInOK(map[string]string{"username": "seeded", "password": goodPW})
}

func TestUniformUnknownUser(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", goodPW)
	hashes := h.svc.hashes.Load()
	wrong := h.signIn(map[string]string{"username": "alice", "password": "Wrong-Password-1"}, fromIP("198.51.100.1"))
	perWrong := h.svc.hashes.Load() - hashes
	unknown := h.signIn(map[string]string{"username": "mallory", "password": "Wrong-Password-1"}, fromIP("198.51.100.2"))
	perUnknown := h.svc.hashes.Load() - hashes - perWrong
	malformed := h.signIn(map[string]string{"username": "no such user!", "password": "x"}, fromIP("198.51.100.3"))

	wantProblem(t, wrong, 401, "invalid-credentials")
	for name, w := range map[string]int{"unknown": unknown.Code, "malformed": malformed.Code} {
		if w != wrong.Code {
			t.Fatalf("%s user status %d, wrong password %d", name, w, wrong.Code)
		}
	}
	if unknown.Body.String() != wrong.Body.String() || malformed.Body.String() != wrong.Body.String() {
		t.Fatalf("bodies differ:\n%s\n%s\n%s", wrong.Body, unknown.Body, malformed.Body)
	}
	if fmt.Sprint(unknown.Header()) != fmt.Sprint(wrong.Header()) {
		t.Fatalf("headers differ:\n%v\n%v", wrong.Header(), unknown.Header())
	}
	if perWrong != 1 || perUnknown != 1 {
		t.Fatalf("argon2 computations: wrong password %d, unknown user %d; want 1 each", perWrong, perUnknown)
	}
}

func TestSignInBlockedAfterFailures(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", goodPW, fromIP("192.0.2.10"))
	attacker := fromIP("203.0.113.5")
	for range 5 {
		wantProblem(t, h.signIn(map[string]string{"username": "alice", "password": "Wrong-Pass-123"}, attacker), 401, "invalid-credentials")
	}
	// The attacker's network is blocked for alice, even with the right
	// password, and before any hashing.
	n := h.svc.hashes.Load()
	wantProblem(t, h.signIn(map[string]string{"username": "alice", "password": goodPW}, attacker), 403, "sign-in-blocked")
	if h.svc.hashes.Load() != n {
		t.Fatal("a blocked attempt computed argon2id")
	}
	// The same answer for an unknown account under the same attack:
	// the block reveals nothing about existence.
	for range 5 {
		h.signIn(map[string]string{"username": "ghost", "password": "Wrong-Pass-123"}, attacker)
	}
	wantProblem(t, h.signIn(map[string]string{"username": "ghost", "password": goodPW}, attacker), 403, "sign-in-blocked")
	// The owner, from the known network, is not locked out.
	h.signInOK(map[string]string{"username": "alice", "password": goodPW}, fromIP("192.0.2.10"))
	// The block ends with the window.
	h.clock.Advance(16 * time.Minute)
	h.signInOK(map[string]string{"username": "alice", "password": goodPW}, attacker)
	if !strings.Contains(h.logs.String(), `"outcome":"blocked"`) {
		t.Fatal("block not logged")
	}
}

func TestSignInStepUp(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", goodPW, fromIP("192.0.2.10"))
	h.signUp("carol", goodPW, fromIP("192.0.2.10"))
	tr, _ := h.signInOK(map[string]string{"username": "carol", "password": goodPW}, fromIP("192.0.2.10"))
	secret, _ := h.enrollTOTP(tr.AccessToken)

	// Five failures spread over networks: alice and carol each get +20.
	for i := range 5 {
		ip := fromIP(fmt.Sprintf("198.51.100.%d", 20+i))
		h.signIn(map[string]string{"username": "alice", "password": "Wrong-Pass-123"}, ip)
		h.signIn(map[string]string{"username": "carol", "password": "Wrong-Pass-123"}, ip)
	}
	newNet := fromIP("203.0.113.77")
	// alice has no second factor: step-up is impossible, so the sign-in
	// is refused exactly like a wrong password.
	wrong := h.signIn(map[string]string{"username": "alice", "password": "Wrong-Pass-456"}, newNet)
	right := h.signIn(map[string]string{"username": "alice", "password": goodPW}, newNet)
	wantProblem(t, right, 401, "invalid-credentials")
	if right.Body.String() != wrong.Body.String() {
		t.Fatal("step-up refusal differs from a wrong password")
	}
	if !strings.Contains(h.logs.String(), `"outcome":"blocked-after-password"`) ||
		!strings.Contains(h.logs.String(), `"new-network"`) {
		t.Fatalf("step-up refusal not logged with reasons:\n%s", h.logs)
	}
	// From her known network the score stays below step-up.
	h.signInOK(map[string]string{"username": "alice", "password": goodPW}, fromIP("192.0.2.10"))

	// carol has TOTP: she is asked for it and gets in with it.
	wantProblem(t, h.signIn(map[string]string{"username": "carol", "password": goodPW}, newNet), 401, "mfa-required")
	h.clock.Advance(otpcode.Period)
	code, _ := otpcode.Code(secret, h.clock.Now())
	tr, _ = h.signInOK(map[string]string{"username": "carol", "password": goodPW, "totp_code": code}, newNet)
	tok, err := h.verifyWithJWKS(tr.AccessToken, AudienceUser, ClassUser)
	if err != nil {
		t.Fatal(err)
	}
	if amr, _ := tok.Get(ClaimAMR); fmt.Sprint(amr) != "[pwd otp mfa]" {
		t.Fatalf("amr %v", amr)
	}
}

func TestCredentialStuffingBlocked(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", goodPW, fromIP("192.0.2.10"))
	stuffer := fromIP("203.0.113.50")
	for i := range 10 {
		h.signIn(map[string]string{"username": fmt.Sprintf("victim%d", i), "password": "Summer-2024-pw"}, stuffer)
	}
	// Any account, right password or not, is now blocked from that network.
	wantProblem(t, h.signIn(map[string]string{"username": "alice", "password": goodPW}, stuffer), 403, "sign-in-blocked")
	if !strings.Contains(h.logs.String(), "credential-stuffing") {
		t.Fatal("credential stuffing not named in the log")
	}
	// Other networks are unaffected.
	h.signInOK(map[string]string{"username": "alice", "password": goodPW}, fromIP("192.0.2.10"))
}

// flipChecker reports the passwords in its set as breached: a password
// that leaks after sign-up.
type flipChecker struct{ set map[string]bool }

func (f *flipChecker) Breached(_ context.Context, pw string) (bool, error) { return f.set[pw], nil }

func TestBreachedAtSignIn(t *testing.T) {
	checker := &flipChecker{set: map[string]bool{}}
	h := newHarness(t, func(c *Config) { c.Breach = checker })
	h.signUp("alice", goodPW)
	h.signUp("carol", goodPW)
	tr, _ := h.signInOK(map[string]string{"username": "carol", "password": goodPW})
	secret, _ := h.enrollTOTP(tr.AccessToken)

	checker.set[goodPW] = true // the password shows up in a breach
	wrong := h.signIn(map[string]string{"username": "alice", "password": "Wrong-Pass-123"})
	w := h.signIn(map[string]string{"username": "alice", "password": goodPW})
	wantProblem(t, w, 401, "invalid-credentials")
	if w.Body.String() != wrong.Body.String() {
		t.Fatal("breached-password refusal tells the caller the password was right")
	}
	// carol proves the second factor, so she is told to reset.
	h.clock.Advance(otpcode.Period)
	code, _ := otpcode.Code(secret, h.clock.Now())
	wantProblem(t, h.signIn(map[string]string{"username": "carol", "password": goodPW, "totp_code": code}), 403, "password-reset-required")

	// The flag sticks even if the corpus forgets the password.
	checker.set[goodPW] = false
	wantProblem(t, h.signIn(map[string]string{"username": "alice", "password": goodPW}), 401, "invalid-credentials")

	checker.set["Leaked-Lantern-77"] = true
	if err := h.svc.ResetPassword(context.Background(), "alice", "Leaked-Lantern-77"); !errors.Is(err, ErrPasswordCompromised) {
		t.Fatalf("reset to a compromised password: %v", err)
	}
	var pe *PolicyError
	if err := h.svc.ResetPassword(context.Background(), "alice", "short"); !errors.As(err, &pe) {
		t.Fatalf("reset to a short password: %v", err)
	}
	if err := h.svc.ResetPassword(context.Background(), "nobody", "Fresh-Lantern-42"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("reset of unknown user: %v", err)
	}
	if err := h.svc.ResetPassword(context.Background(), "alice", "Fresh-Lantern-42"); err != nil {
		t.Fatal(err)
	}
	h.signInOK(map[string]string{"username": "alice", "password": "Fresh-Lantern-42"})
}

func TestTOTP(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", goodPW)
	tr, _ := h.signInOK(map[string]string{"username": "alice", "password": goodPW})

	// Confirm before enrol, bad codes, double enrol.
	wantProblem(t, h.postJSON("/v1/mfa/totp/confirm", map[string]string{"code": "123456"}, withBearer(tr.AccessToken)), 409, "mfa-not-pending")
	// A wrong confirmation code leaves the enrolment pending.
	if w := h.do(http.MethodPost, "/v1/mfa/totp", "", "", withBearer(tr.AccessToken)); w.Code != 201 {
		t.Fatalf("enrol: %d", w.Code)
	}
	wantProblem(t, h.postJSON("/v1/mfa/totp/confirm", map[string]string{"code": "12345x"}, withBearer(tr.AccessToken)), 422, "invalid-otp-code")
	h.signInOK(map[string]string{"username": "alice", "password": goodPW}) // not enrolled yet
	secret, recovery := h.enrollTOTP(tr.AccessToken)
	if len(recovery) != 10 {
		t.Fatalf("%d recovery codes", len(recovery))
	}
	wantProblem(t, h.do(http.MethodPost, "/v1/mfa/totp", "", "", withBearer(tr.AccessToken)), 409, "mfa-already-enrolled")

	// Sign-in now needs the second factor.
	wantProblem(t, h.signIn(map[string]string{"username": "alice", "password": goodPW}), 401, "mfa-required")
	// The confirmation code's step is spent: the same code is refused.
	code, _ := otpcode.Code(secret, h.clock.Now())
	wantProblem(t, h.signIn(map[string]string{"username": "alice", "password": goodPW, "totp_code": code}), 401, "invalid-credentials")

	h.clock.Advance(otpcode.Period)
	code, _ = otpcode.Code(secret, h.clock.Now())
	h.signInOK(map[string]string{"username": "alice", "password": goodPW, "totp_code": code})
	// Replay of that code within its validity window is refused.
	h.clock.Advance(10 * time.Second)
	wantProblem(t, h.signIn(map[string]string{"username": "alice", "password": goodPW, "totp_code": code}), 401, "invalid-credentials")
	// A wrong password with a valid code is still refused.
	h.clock.Advance(otpcode.Period)
	code, _ = otpcode.Code(secret, h.clock.Now())
	wantProblem(t, h.signIn(map[string]string{"username": "alice", "password": "Wrong-Pass-123", "totp_code": code}), 401, "invalid-credentials")

	// Recovery codes are single use.
	h.signInOK(map[string]string{"username": "alice", "password": goodPW, "recovery_code": recovery[0]})
	wantProblem(t, h.signIn(map[string]string{"username": "alice", "password": goodPW, "recovery_code": recovery[0]}), 401, "invalid-credentials")
	h.signInOK(map[string]string{"username": "alice", "password": goodPW, "recovery_code": strings.ToUpper(recovery[1])})

	// A token whose sign-in is old cannot enrol (nor re-confirm).
	h.signUp("bob", goodPW)
	old, _ := h.signInOK(map[string]string{"username": "bob", "password": goodPW})
	h.clock.Advance(MFAEnrollMaxAuthAge + time.Minute)
	w := h.do(http.MethodPost, "/v1/mfa/totp", "", "", withBearer(old.AccessToken))
	if w.Code != 401 {
		t.Fatalf("stale or expired token enrolled: %d", w.Code)
	}
}

func TestEnrollTokenChecks(t *testing.T) {
	h := newHarness(t, nil)
	secret, err := h.svc.RegisterClient("worker", []string{"transfers:run"})
	if err != nil {
		t.Fatal(err)
	}
	svcTok := h.clientToken("worker", secret, "")
	other := newHarness(t, nil)
	other.signUp("alice", goodPW)
	foreign, _ := other.signInOK(map[string]string{"username": "alice", "password": goodPW})
	tests := []struct {
		name string
		auth string
	}{
		{"none", ""},
		{"basic", "Basic YTpi"},
		{"garbage", "Bearer not.a.jwt"},
		{"service token cannot act as a user", "Bearer " + svcTok.Reveal()},
		{"token of another issuer key", "Bearer " + foreign.AccessToken.Reveal()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := h.do(http.MethodPost, "/v1/mfa/totp", "", "", func(r *http.Request) {
				if tt.auth != "" {
					r.Header.Set("Authorization", tt.auth)
				}
			})
			wantProblem(t, w, 401, "invalid-token")
			if !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Fatal("missing WWW-Authenticate: Bearer")
			}
		})
	}
}

func TestRefreshRotationAndReuse(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", goodPW)
	w := h.signIn(map[string]string{"username": "alice", "password": goodPW})
	first := refreshCookieValue(t, w)
	sc := w.Header().Get("Set-Cookie")
	for _, attr := range []string{"HttpOnly", "Secure", "SameSite=Strict", "Path=/v1/refresh", RefreshCookie + "="} {
		if !strings.Contains(sc, attr) {
			t.Fatalf("refresh cookie %q lacks %s", sc, attr)
		}
	}
	if strings.Contains(h.fmtSessions(), first) {
		t.Fatal("refresh token stored in clear")
	}

	h.clock.Advance(4 * time.Minute)
	w = h.do(http.MethodPost, RefreshPath, "", "", withCookie(first))
	tr := decodeToken(t, w)
	second := refreshCookieValue(t, w)
	if second == first {
		t.Fatal("refresh token not rotated")
	}
	if _, err := h.verifyWithJWKS(tr.AccessToken, AudienceUser, ClassUser); err != nil {
		t.Fatal(err)
	}

	// The old token comes back: someone else holds the chain. The whole
	// family dies, including the newest token.
	wantProblem(t, h.do(http.MethodPost, RefreshPath, "", "", withCookie(first)), 401, "invalid-refresh")
	wantProblem(t, h.do(http.MethodPost, RefreshPath, "", "", withCookie(second)), 401, "invalid-refresh")
	if !strings.Contains(h.logs.String(), "refresh token reused") {
		t.Fatal("reuse not logged")
	}

	// Missing, unknown, and duplicate cookies.
	wantProblem(t, h.do(http.MethodPost, RefreshPath, "", ""), 401, "invalid-refresh")
	wantProblem(t, h.do(http.MethodPost, RefreshPath, "", "", withCookie("forged")), 401, "invalid-refresh")

	// Idle expiry and sign-out.
	_, c := h.signInOK(map[string]string{"username": "alice", "password": goodPW})
	h.clock.Advance(DefaultRefreshTTL)
	wantProblem(t, h.do(http.MethodPost, RefreshPath, "", "", withCookie(c)), 401, "invalid-refresh")
	_, c = h.signInOK(map[string]string{"username": "alice", "password": goodPW})
	if w := h.do(http.MethodDelete, RefreshPath, "", "", withCookie(c)); w.Code != 204 {
		t.Fatalf("sign-out: %d", w.Code)
	}
	wantProblem(t, h.do(http.MethodPost, RefreshPath, "", "", withCookie(c)), 401, "invalid-refresh")

	// Absolute session lifetime: refreshing every few hours still ends.
	_, c = h.signInOK(map[string]string{"username": "alice", "password": goodPW})
	for range 3 {
		h.clock.Advance(7 * time.Hour)
		w := h.do(http.MethodPost, RefreshPath, "", "", withCookie(c))
		if w.Code != 200 {
			t.Fatalf("refresh within idle TTL: %d", w.Code)
		}
		c = refreshCookieValue(t, w)
	}
	h.clock.Advance(4 * time.Hour) // 25 h after sign-in
	wantProblem(t, h.do(http.MethodPost, RefreshPath, "", "", withCookie(c)), 401, "invalid-refresh")
}

// fmtSessions renders the session store's keys for the cleartext check.
func (h *harness) fmtSessions() string {
	h.svc.sessions.mu.Lock()
	defer h.svc.sessions.mu.Unlock()
	var b strings.Builder
	for k, f := range h.svc.sessions.current {
		fmt.Fprintf(&b, "%x %s %x\n", k, string(k[:]), f.current)
	}
	return b.String()
}

func TestRefreshAfterPasswordReset(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", goodPW)
	_, c := h.signInOK(map[string]string{"username": "alice", "password": goodPW})
	if err := h.svc.ResetPassword(context.Background(), "alice", "Fresh-Lantern-42"); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, h.do(http.MethodPost, RefreshPath, "", "", withCookie(c)), 401, "invalid-refresh")
}

func TestSecretsNeverLogged(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", goodPW)
	h.signIn(map[string]string{"username": "alice", "password": "Wrong-Pass-123"})
	// A password typed into the username field must not be logged either.
	h.signIn(map[string]string{"username": "Typed-Into-Username-9", "password": goodPW})
	tr, c := h.signInOK(map[string]string{"username": "alice", "password": goodPW})
	secret, codes := h.enrollTOTP(tr.AccessToken)
	h.do(http.MethodPost, RefreshPath, "", "", withCookie(c))
	h.do(http.MethodPost, RefreshPath, "", "", withCookie(c)) // reuse
	cs, _ := h.svc.RegisterClient("ledger", []string{"audit:append"})
	h.clientToken("ledger", cs, "")

	logs := h.logs.String()
	for _, s := range []string{goodPW, "Wrong-Pass-123", "Typed-Into-Username-9", "typed-into-username-9",
		tr.AccessToken.Reveal(), c, secret, codes[0], cs} {
		if strings.Contains(logs, s) {
			t.Fatalf("log contains a secret (%.6s…):\n%s", s, logs)
		}
	}
	if !strings.Contains(logs, `"outcome":"success"`) {
		t.Fatal("no sign-in events logged: the check above proves nothing")
	}
}

func TestSecretRedaction(t *testing.T) {
	s := Secret("hunter2-hunter2")
	req := signInRequest{Username: "alice", Password: s}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("x", "req", req, "pw", s)
	j, _ := json.Marshal(req)
	tr, _ := json.Marshal(TokenResponse{AccessToken: "hunter2-token"})
	out := b.String() + string(j) + string(tr) + fmt.Sprintf("%v %+v %#v %s %q", req, req, req, s, s)
	if strings.Contains(out, "hunter2") {
		t.Fatalf("secret printed: %s", out)
	}
	if s.Reveal() != "hunter2-hunter2" {
		t.Fatal("Reveal")
	}
}

func TestClose(t *testing.T) {
	h := newHarness(t, nil)
	if err := h.svc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	wantProblem(t, h.do(http.MethodGet, JWKSPath, "", ""), 503, "service-unavailable")
	if err := h.svc.RotateKey(); !errors.Is(err, ErrClosed) {
		t.Fatalf("RotateKey after Close: %v", err)
	}
	if _, err := h.svc.RegisterClient("x", []string{"a"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("RegisterClient after Close: %v", err)
	}
	if err := h.svc.CreateUser(context.Background(), "alice", goodPW); !errors.Is(err, ErrClosed) {
		t.Fatalf("CreateUser after Close: %v", err)
	}
}

func TestErrorHandlerHook(t *testing.T) {
	var got error
	h := newHarness(t, func(c *Config) {
		c.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
			got = err
			w.WriteHeader(http.StatusTeapot)
		}
	})
	w := h.signIn(map[string]string{"username": "nobody", "password": "x"})
	if w.Code != http.StatusTeapot || !errors.Is(got, ErrInvalidCredentials) {
		t.Fatalf("hook not used: %d %v", w.Code, got)
	}
}

func TestClientIPResolver(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.ClientIP = func(r *http.Request) (netip.Addr, error) { return netip.Addr{}, errors.New("untrusted hop") }
	})
	wantProblem(t, h.signIn(map[string]string{"username": "a", "password": "b"}), 400, "client-address-invalid")
}

func TestSubjectNamespaces(t *testing.T) {
	for _, tt := range []struct {
		sub  string
		name string
		ok   bool
	}{
		{"user:alice", "alice", true},
		{"alice", "", false},
		{"ledger", "", false},
		{"user:", "", false},
		{"user:A B", "", false},
	} {
		name, ok := Username(tt.sub)
		if name != tt.name || ok != tt.ok {
			t.Errorf("Username(%q) = %q, %v", tt.sub, name, ok)
		}
	}
	// A user cannot take a client's subject: the user named "ledger" and
	// the ledger component get different subs.
	h := newHarness(t, nil)
	secret, _ := h.svc.RegisterClient("ledger", []string{"audit:append"})
	h.signUp("ledger", goodPW)
	user, _ := h.signInOK(map[string]string{"username": "ledger", "password": goodPW})
	ut, err := h.verifyWithJWKS(user.AccessToken, AudienceUser, ClassUser)
	if err != nil {
		t.Fatal(err)
	}
	st, err := h.verifyWithJWKS(h.clientToken("ledger", secret, ""), AudienceService, ClassService)
	if err != nil {
		t.Fatal(err)
	}
	if ut.Subject() == st.Subject() {
		t.Fatalf("user and service share subject %q", ut.Subject())
	}
}

func TestConcurrentTOTPSingleUse(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", goodPW)
	tr, _ := h.signInOK(map[string]string{"username": "alice", "password": goodPW})
	secret, recovery := h.enrollTOTP(tr.AccessToken)
	h.clock.Advance(otpcode.Period)
	code, _ := otpcode.Code(secret, h.clock.Now())
	const n = 8
	results := make(chan int, 2*n)
	for i := range 2 * n {
		go func() {
			body := map[string]string{"username": "alice", "password": goodPW, "totp_code": code}
			if i%2 == 1 {
				body = map[string]string{"username": "alice", "password": goodPW, "recovery_code": recovery[0]}
			}
			results <- h.signIn(body).Code
		}()
	}
	ok := 0
	for range 2 * n {
		if <-results == http.StatusOK {
			ok++
		}
	}
	if ok != 2 {
		t.Fatalf("%d concurrent sign-ins succeeded with one TOTP code and one recovery code, want 2", ok)
	}
}

// TestConcurrentUse runs sign-up, sign-in, refresh, client credentials and
// key rotation from many goroutines; -race checks the locking, and every
// goroutine's refresh chain must stay valid.
func TestConcurrentUse(t *testing.T) {
	h := newHarness(t, nil)
	secret, _ := h.svc.RegisterClient("worker", []string{"transfers:run"})
	const n = 8
	errs := make(chan error, n+1)
	for i := range n {
		go func() {
			name := fmt.Sprintf("user%d", i)
			ip := fromIP(fmt.Sprintf("192.0.2.%d", 100+i))
			if w := h.postJSON("/v1/users", map[string]string{"username": name, "password": goodPW}, ip); w.Code != 201 {
				errs <- fmt.Errorf("sign-up %s: %d", name, w.Code)
				return
			}
			w := h.signIn(map[string]string{"username": name, "password": goodPW}, ip)
			if w.Code != 200 {
				errs <- fmt.Errorf("sign-in %s: %d %s", name, w.Code, w.Body)
				return
			}
			c := ""
			for _, ck := range w.Result().Cookies() {
				c = ck.Value
			}
			for range 3 {
				w := h.do(http.MethodPost, RefreshPath, "", "", withCookie(c))
				if w.Code != 200 {
					errs <- fmt.Errorf("refresh %s: %d", name, w.Code)
					return
				}
				for _, ck := range w.Result().Cookies() {
					c = ck.Value
				}
			}
			errs <- nil
		}()
	}
	go func() {
		for range 3 {
			if err := h.svc.RotateKey(); err != nil {
				errs <- err
				return
			}
			form := "grant_type=client_credentials"
			r := h.do(http.MethodPost, "/oauth2/token", "application/x-www-form-urlencoded", form, func(r *http.Request) {
				r.SetBasicAuth("worker", secret)
			})
			if r.Code != 200 {
				errs <- fmt.Errorf("client credentials: %d", r.Code)
				return
			}
		}
		errs <- nil
	}()
	for range n + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
