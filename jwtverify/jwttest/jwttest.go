// Package jwttest mints signed test tokens and serves a JWK Set over
// httptest, for tests of code that sits behind [jwtverify].
//
// It is for tests only: keys are generated per test and never persisted.
//
//	key := jwttest.NewKey(t, "ES256", "k1")
//	srv := jwttest.NewServer(t, key)            // JWKS at srv.URL
//	tok := key.Mint(t, jwttest.Claims("https://id.example", "ledger", "alice", time.Now()))
//
// [jwtverify]: https://pkg.go.dev/github.com/malai-sec/malai/jwtverify
package jwttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// Key is a generated signing key with its JWS algorithm and key id.
type Key struct {
	Alg     string
	KID     string
	Private crypto.Signer
}

// NewKey generates a key for alg (ES256, EdDSA or RS256) with key id kid
// ("" for none).
func NewKey(tb testing.TB, alg, kid string) *Key {
	tb.Helper()
	var (
		k   crypto.Signer
		err error
	)
	switch alg {
	case "ES256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "EdDSA":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	case "RS256":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		tb.Fatalf("jwttest: unsupported algorithm %q", alg)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return &Key{Alg: alg, KID: kid, Private: k}
}

// JWK returns the public key as a jwk.Key with "kid", "alg" and use=sig.
func (k *Key) JWK(tb testing.TB) jwk.Key {
	tb.Helper()
	pk, err := jwk.FromRaw(k.Private.Public())
	if err != nil {
		tb.Fatal(err)
	}
	if k.KID != "" {
		_ = pk.Set(jwk.KeyIDKey, k.KID)
	}
	_ = pk.Set(jwk.AlgorithmKey, jwa.SignatureAlgorithm(k.Alg))
	_ = pk.Set(jwk.KeyUsageKey, jwk.ForSignature)
	return pk
}

// Set returns a jwk.Set holding the public keys.
func Set(tb testing.TB, keys ...*Key) jwk.Set {
	tb.Helper()
	s := jwk.NewSet()
	for _, k := range keys {
		if err := s.AddKey(k.JWK(tb)); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}

// Claims returns the claims of a valid user access token: iss, aud, sub,
// client_id "web", iat now, exp now+5m, a jti and token_class "user".
func Claims(iss, aud, sub string, now time.Time) map[string]any {
	return map[string]any{
		"iss": iss, "aud": aud, "sub": sub, "client_id": "web",
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"jti": "jti-" + sub, "token_class": "user",
	}
}

// ServiceClaims returns the claims of a valid service (client credentials)
// token: sub equals client_id, token_class "service".
func ServiceClaims(iss, aud, client string, now time.Time) map[string]any {
	c := Claims(iss, aud, client, now)
	c["client_id"] = client
	c["token_class"] = "service"
	return c
}

// Mint signs claims with header {alg, kid, typ: "at+jwt"}.
func (k *Key) Mint(tb testing.TB, claims map[string]any) string {
	tb.Helper()
	return k.MintWith(tb, k.Header(), claims)
}

// Header returns the default header Mint uses.
func (k *Key) Header() map[string]any {
	h := map[string]any{"alg": k.Alg, "typ": "at+jwt"}
	if k.KID != "" {
		h["kid"] = k.KID
	}
	return h
}

// MintWith signs claims under the given header (which must name an alg the
// key can produce; the header is used as is).
func (k *Key) MintWith(tb testing.TB, header, claims map[string]any) string {
	tb.Helper()
	hb, err := json.Marshal(header)
	if err != nil {
		tb.Fatal(err)
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		tb.Fatal(err)
	}
	return k.SignRaw(tb, hb, cb)
}

var b64 = base64.RawURLEncoding

// SignRaw signs the exact header and payload bytes, for tests that need
// JSON encoding/json would not produce (duplicate keys, odd spacing).
func (k *Key) SignRaw(tb testing.TB, header, payload []byte) string {
	tb.Helper()
	input := b64.EncodeToString(header) + "." + b64.EncodeToString(payload)
	var sig []byte
	var err error
	switch p := k.Private.(type) {
	case ed25519.PrivateKey:
		sig = ed25519.Sign(p, []byte(input))
	case *ecdsa.PrivateKey:
		h := sha256.Sum256([]byte(input))
		r, s, e := ecdsa.Sign(rand.Reader, p, h[:])
		err = e
		sig = make([]byte, 64)
		if e == nil {
			r.FillBytes(sig[:32])
			s.FillBytes(sig[32:])
		}
	case *rsa.PrivateKey:
		h := sha256.Sum256([]byte(input))
		sig, err = rsa.SignPKCS1v15(rand.Reader, p, crypto.SHA256, h[:])
	}
	if err != nil {
		tb.Fatal(err)
	}
	return input + "." + b64.EncodeToString(sig)
}

// Server serves a JWK Set on 127.0.0.1. Its keys, status and Cache-Control
// can change while it runs; it counts the requests it answered.
type Server struct {
	*httptest.Server
	mu           sync.Mutex
	doc          []byte
	status       int
	cacheControl string
	hits         atomic.Int64
}

// NewServer starts a JWKS server publishing keys; it is closed at cleanup.
func NewServer(tb testing.TB, keys ...*Key) *Server {
	tb.Helper()
	s := &Server{status: http.StatusOK}
	s.SetKeys(tb, keys...)
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	tb.Cleanup(s.Close)
	return s
}

func (s *Server) serve(w http.ResponseWriter, _ *http.Request) {
	s.hits.Add(1)
	s.mu.Lock()
	doc, status, cc := s.doc, s.status, s.cacheControl
	s.mu.Unlock()
	if status != http.StatusOK {
		http.Error(w, "unavailable", status)
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	if cc != "" {
		w.Header().Set("Cache-Control", cc)
	}
	_, _ = w.Write(doc)
}

// SetKeys replaces the published keys.
func (s *Server) SetKeys(tb testing.TB, keys ...*Key) {
	tb.Helper()
	doc, err := json.Marshal(Set(tb, keys...))
	if err != nil {
		tb.Fatal(err)
	}
	s.SetDocument(doc)
}

// SetDocument publishes an arbitrary document.
func (s *Server) SetDocument(doc []byte) {
	s.mu.Lock()
	s.doc = doc
	s.mu.Unlock()
}

// SetStatus makes the server answer with status (200 restores service).
func (s *Server) SetStatus(status int) {
	s.mu.Lock()
	s.status = status
	s.mu.Unlock()
}

// SetCacheControl sets the Cache-Control header of answers.
func (s *Server) SetCacheControl(v string) {
	s.mu.Lock()
	s.cacheControl = v
	s.mu.Unlock()
}

// Hits returns how many requests the server answered.
func (s *Server) Hits() int { return int(s.hits.Load()) }
