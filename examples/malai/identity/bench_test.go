package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/malai-sec/malai/examples/malai/identity/internal/risk"
)

func benchService(b *testing.B, argon Argon2Params) *Service {
	b.Helper()
	svc, err := New(Config{Issuer: testIssuer, Argon2: argon, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = svc.Close() })
	return svc
}

// BenchmarkClientCredentials is a whole POST /oauth2/token in process:
// form parsing, client authentication, minting and signing.
func BenchmarkClientCredentials(b *testing.B) {
	svc := benchService(b, Argon2Params{})
	secret, _ := svc.RegisterClient("ledger", []string{"audit:append"})
	h := svc.Handler()
	body := url.Values{"grant_type": {"client_credentials"}}.Encode()
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(body))
		r.Header.Set("Content-Type", formCT)
		r.SetBasicAuth("ledger", secret)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}

// BenchmarkMint is the service's token minting alone.
func BenchmarkMint(b *testing.B) {
	svc := benchService(b, Argon2Params{})
	g := grant{class: ClassService, subject: "ledger", clientID: "ledger", scopes: []string{"audit:append"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := svc.mint(g); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMintJWXFloor signs the same claims with jwx directly: the floor
// BenchmarkMint is measured against.
func BenchmarkMintJWXFloor(b *testing.B) {
	raw, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key, _ := jwk.FromRaw(raw)
	_ = key.Set(jwk.KeyIDKey, "k1")
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.TypeKey, TokenType)
	b.ReportAllocs()
	for b.Loop() {
		now := time.Now()
		tok, _ := jwt.NewBuilder().Issuer(testIssuer).Subject("ledger").Audience([]string{AudienceService}).
			IssuedAt(now).NotBefore(now).Expiration(now.Add(5*time.Minute)).JwtID("abcdefghijklmnopqrstuv").
			Claim(ClaimClientID, "ledger").Claim(ClaimScope, "audit:append").Claim(ClaimTokenClass, ClassService).Build()
		if _, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, key, jws.WithProtectedHeaders(hdr))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignIn is a whole successful POST /v1/sessions with the
// default (OWASP) argon2id cost, which dominates by design.
func BenchmarkSignIn(b *testing.B) {
	svc := benchService(b, Argon2Params{})
	if err := svc.CreateUser(context.Background(), "alice", goodPW); err != nil {
		b.Fatal(err)
	}
	h := svc.Handler()
	body := `{"username":"alice","password":"` + goodPW + `"}`
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/v1/sessions", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatal(w.Code, w.Body)
		}
	}
}

// BenchmarkSignInBlocked is a sign-in refused before the password check:
// the cost a credential-stuffing flood imposes once its network is
// blocked.
func BenchmarkSignInBlocked(b *testing.B) {
	svc := benchService(b, Argon2Params{})
	n := risk.Network(netip.MustParseAddr("192.0.2.1"))
	for i := range 10 {
		svc.risk.Failure(string(rune('a'+i))+"-victim", n)
	}
	h := svc.Handler()
	body := `{"username":"alice","password":"` + goodPW + `"}`
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/v1/sessions", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.RemoteAddr = "192.0.2.1:1234"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 403 {
			b.Fatal(w.Code)
		}
	}
}

func BenchmarkJWKS(b *testing.B) {
	svc := benchService(b, Argon2Params{})
	h := svc.Handler()
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodGet, JWKSPath, nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
	}
}

func BenchmarkVerifyUserToken(b *testing.B) {
	svc := benchService(b, Argon2Params{})
	tr, err := svc.mint(grant{class: ClassUser, subject: UserSubject("alice"), clientID: DefaultUserClientID,
		scopes: []string{"ledger:read"}, amr: []string{"pwd"}, authTime: time.Now()})
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, "/v1/mfa/totp", nil)
	r.Header.Set("Authorization", "Bearer "+tr.AccessToken.Reveal())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := svc.verifyUserToken(r); err != nil {
			b.Fatal(err)
		}
	}
}
