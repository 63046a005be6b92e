package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/malai-sec/malai/examples/malai/identity/clientauth"
)

// cpuClock measures the process's CPU time (user+system, GC included)
// across a benchmark loop: on a shared machine wall time per op swings
// with other tenants' load, CPU time per op much less.
type cpuClock struct{ start time.Duration }

func startCPU() cpuClock { return cpuClock{start: cpuNow()} }

func (c cpuClock) report(b *testing.B) {
	b.ReportMetric(float64(cpuNow()-c.start)/float64(b.N), "cpu-ns/op")
}

// benchHarness is a harness with the production argon2id cost (OWASP:
// 19 MiB, 2 passes, 1 lane) unless argon is set.
func benchHarness(b *testing.B, argon Argon2Params) *harness {
	return newHarness(b, func(c *Config) { c.Argon2 = argon })
}

// BenchmarkSignIn is a whole successful POST /v1/sessions from a known
// device with the default argon2id parameters, which dominate by design:
// the store reads and writes, the lockout counts, the session and the
// token are the rest.
func BenchmarkSignIn(b *testing.B) {
	h := benchHarness(b, Argon2Params{})
	if _, err := h.svc.CreateUser(context.Background(), "alice", strongPW); err != nil {
		b.Fatal(err)
	}
	dev := h.signInOK(creds("alice", strongPW)).device
	body := `{"username":"alice","password":"` + strongPW + `"}`
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, SignInPath, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.AddCookie(&http.Cookie{Name: DeviceCookie, Value: dev})
		w := httptest.NewRecorder()
		h.svc.Handler().ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatal(w.Code, w.Body)
		}
	}
	cpu.report(b)
}

// BenchmarkArgon2id is the password hash alone at the default cost: the
// floor BenchmarkSignIn is measured against.
func BenchmarkArgon2id(b *testing.B) {
	h := benchHarness(b, Argon2Params{})
	u, err := h.svc.CreateUser(context.Background(), "alice", strongPW)
	if err != nil {
		b.Fatal(err)
	}
	su, _, _ := h.st.UserByID(context.Background(), u.ID)
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		if ok, _, err := h.svc.verifyPassword(context.Background(), strongPW, su.PasswordHash); err != nil || !ok {
			b.Fatal(err)
		}
	}
	cpu.report(b)
}

// BenchmarkSignInThrottled is a sign-in refused before the password is
// checked: the cost a flood imposes once its network is throttled.
func BenchmarkSignInThrottled(b *testing.B) {
	h := benchHarness(b, Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1})
	for i := range 12 {
		h.signIn(creds("victim"+string(rune('a'+i)), "Leaked-Password-"+string(rune('a'+i))), fromIP("198.51.100.1"))
	}
	body := `{"username":"alice","password":"` + strongPW + `"}`
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, SignInPath, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.RemoteAddr = "198.51.100.1:1234"
		w := httptest.NewRecorder()
		h.svc.Handler().ServeHTTP(w, r)
		if w.Code != 429 {
			b.Fatal(w.Code)
		}
	}
	cpu.report(b)
}

// BenchmarkMint is the service's token minting alone.
func BenchmarkMint(b *testing.B) {
	h := benchHarness(b, Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1})
	g := grant{class: ClassService, subject: "worker", clientID: "worker", scopes: []string{"ledger:transfer"}}
	ctx := context.Background()
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		if _, err := h.svc.mint(ctx, g); err != nil {
			b.Fatal(err)
		}
	}
	cpu.report(b)
}

// BenchmarkMintJWXFloor signs the same claims with jwx directly: the peer
// BenchmarkMint is measured against.
func BenchmarkMintJWXFloor(b *testing.B) {
	raw, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key, _ := jwk.FromRaw(raw)
	_ = key.Set(jwk.KeyIDKey, "k1")
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.TypeKey, TokenType)
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		now := time.Now()
		tok, _ := jwt.NewBuilder().Issuer(testIssuer).Subject("worker").Audience([]string{AudienceService}).
			IssuedAt(now).NotBefore(now).Expiration(now.Add(5*time.Minute)).JwtID("abcdefghijklmnopqrstuv").
			Claim(ClaimClientID, "worker").Claim(ClaimScope, "ledger:transfer").Claim(ClaimTokenClass, ClassService).Build()
		if _, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, key, jws.WithProtectedHeaders(hdr))); err != nil {
			b.Fatal(err)
		}
	}
	cpu.report(b)
}

// BenchmarkClientCredentials is a whole POST /oauth2/token with
// private_key_jwt: the assertion signed by the client, parsed, checked,
// its jti stored (one fsynced write), the token minted.
func BenchmarkClientCredentials(b *testing.B) {
	h := benchHarness(b, Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1})
	key, _ := clientauth.NewKey()
	if _, err := h.svc.RegisterClientKey(context.Background(), "worker", key.PublicJWK()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		a, _ := key.Assertion("worker", testIssuer+TokenPath, h.clock.Now())
		body := url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {AssertionType}, "client_assertion": {a}}.Encode()
		r := httptest.NewRequest(http.MethodPost, TokenPath, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Header.Set("X-Test-Peer", "worker")
		w := httptest.NewRecorder()
		h.svc.Handler().ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatal(w.Code, w.Body)
		}
	}
	cpu.report(b)
}

// BenchmarkVerifyOwnToken is identity's bearer check on its account
// routes: jwtverify (cached) plus the account and session lookups.
func BenchmarkVerifyOwnToken(b *testing.B) {
	h := benchHarness(b, Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1})
	if _, err := h.svc.CreateUser(context.Background(), "alice", strongPW); err != nil {
		b.Fatal(err)
	}
	tok := h.signInOK(creds("alice", strongPW)).token
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodGet, "/v1/account", nil)
		r.Header.Set("Authorization", "Bearer "+tok.Reveal())
		w := httptest.NewRecorder()
		h.svc.Handler().ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
	cpu.report(b)
}
