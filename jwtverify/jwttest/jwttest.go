// Package jwttest mints signed test tokens and serves a JWK Set over
// httptest, for tests of code that sits behind [jwtverify].
//
// It is for tests only: keys are generated per test and never persisted,
// and every failure ends the test. Outside tests (a development server, a
// demo) use [devissuer], which this package wraps.
//
//	key := jwttest.NewKey(t, "ES256", "k1")
//	srv := jwttest.NewServer(t, key)            // JWKS at srv.URL
//	tok := key.Mint(t, jwttest.Claims("https://id.example", "ledger", "alice", time.Now()))
//
// [jwtverify]: https://pkg.go.dev/github.com/malai-sec/malai/jwtverify
// [devissuer]: https://pkg.go.dev/github.com/malai-sec/malai/jwtverify/devissuer
package jwttest

import (
	"crypto"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/malai-sec/malai/jwtverify/devissuer"
)

// Key is a generated signing key with its JWS algorithm and key id.
type Key struct {
	Alg     string
	KID     string
	Private crypto.Signer
}

func (k *Key) dev() *devissuer.Key { return &devissuer.Key{Alg: k.Alg, KID: k.KID, Private: k.Private} }

// NewKey generates a key for alg (any of [devissuer.Algorithms]: ES256,
// ES384, ES512, RS256, RS384, RS512, PS256, PS384, PS512, EdDSA) with key
// id kid ("" for none).
func NewKey(tb testing.TB, alg, kid string) *Key {
	tb.Helper()
	k, err := devissuer.NewKey(alg, kid)
	if err != nil {
		tb.Fatal(err)
	}
	return &Key{Alg: k.Alg, KID: k.KID, Private: k.Private}
}

// JWK returns the public key as a JWK with "kid", "alg" and use=sig.
func (k *Key) JWK(tb testing.TB) json.RawMessage {
	tb.Helper()
	j, err := k.dev().JWK()
	if err != nil {
		tb.Fatal(err)
	}
	return j
}

// Set returns a JWK Set document holding the public keys, for
// jwtverify.Issuer.Keys.
func Set(tb testing.TB, keys ...*Key) []byte {
	tb.Helper()
	dev := make([]*devissuer.Key, len(keys))
	for i, k := range keys {
		dev[i] = k.dev()
	}
	doc, err := devissuer.JWKS(dev...)
	if err != nil {
		tb.Fatal(err)
	}
	return doc
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
	tok, err := k.dev().Sign(header, claims)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// SignRaw signs the exact header and payload bytes, for tests that need
// JSON encoding/json would not produce (duplicate keys, odd spacing).
func (k *Key) SignRaw(tb testing.TB, header, payload []byte) string {
	tb.Helper()
	tok, err := k.dev().SignRaw(header, payload)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
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
	s.SetDocument(Set(tb, keys...))
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
