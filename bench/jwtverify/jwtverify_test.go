// Package jwtverifybench compares jwtverify with raw signature verification
// (the floor), golang-jwt v5, auth0/go-jwt-middleware v2's validator and
// jwx's jwt.Parse, in one run. See BENCHMARKS.md.
package jwtverifybench

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/auth0/go-jwt-middleware/v2/validator"
	gojwt "github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/jwtverify/jwttest"
)

const (
	iss = "https://identity.malai.test"
	aud = "ledger"
)

type fixture struct {
	alg   string
	key   *jwttest.Key
	pub   crypto.PublicKey
	tok   string
	input []byte // signing input
	sig   []byte // decoded JWS signature
}

func newFixture(b *testing.B, alg string) *fixture {
	k := jwttest.NewKey(b, alg, "k1")
	c := jwttest.Claims(iss, aud, "alice", time.Now())
	c["scope"] = "ledger:read ledger:write"
	tok := k.Mint(b, c)
	dot := strings.LastIndexByte(tok, '.')
	sig, err := base64.RawURLEncoding.DecodeString(tok[dot+1:])
	if err != nil {
		b.Fatal(err)
	}
	return &fixture{alg: alg, key: k, pub: k.Private.Public(), tok: tok, input: []byte(tok[:dot]), sig: sig}
}

// floor is signature verification alone: hash the signing input, verify
// the already decoded signature with the already parsed key.
func (f *fixture) floor(b *testing.B) func() bool {
	switch f.alg {
	case "ES256":
		der, _ := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(f.sig[:32]), new(big.Int).SetBytes(f.sig[32:])})
		pub := f.pub.(*ecdsa.PublicKey)
		return func() bool { h := sha256.Sum256(f.input); return ecdsa.VerifyASN1(pub, h[:], der) }
	case "EdDSA":
		pub := f.pub.(ed25519.PublicKey)
		return func() bool { return ed25519.Verify(pub, f.input, f.sig) }
	case "RS256":
		pub := f.pub.(*rsa.PublicKey)
		return func() bool {
			h := sha256.Sum256(f.input)
			return rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], f.sig) == nil
		}
	}
	b.Fatal("alg")
	return nil
}

func (f *fixture) verifier(b *testing.B, cache int) *jwtverify.Verifier {
	v, err := jwtverify.New(jwtverify.Config{
		Issuers:   []jwtverify.Issuer{{Issuer: iss, Keys: jwttest.Set(b, f.key), Audiences: []string{aud}, Algorithms: []string{f.alg}}},
		CacheSize: cache,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = v.Close() })
	return v
}

var algs = []string{"ES256", "EdDSA", "RS256"}

// loop runs op b.N times on one locked OS thread and reports, besides
// wall time, "cpu-ns/op": the thread's own CPU time per op. On this shared
// 2-core machine wall time swings with other people's load; CPU time does
// not. (It leaves out GC work done on other threads, which favours the
// peers that allocate more.)
func loop(b *testing.B, op func() error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	start, ok := threadCPU()
	for b.Loop() {
		if err := op(); err != nil {
			b.Fatal(err)
		}
	}
	if end, ok2 := threadCPU(); ok && ok2 {
		b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
	}
}

func BenchmarkVerify(b *testing.B) {
	ctx := context.Background()
	errRefused := errors.New("refused")
	for _, alg := range algs {
		f := newFixture(b, alg)
		b.Run(alg+"/floor", func(b *testing.B) {
			verify := f.floor(b)
			loop(b, func() error {
				if !verify() {
					return errRefused
				}
				return nil
			})
		})
		b.Run(alg+"/golang-jwt", func(b *testing.B) {
			p := gojwt.NewParser(gojwt.WithValidMethods([]string{alg}), gojwt.WithIssuer(iss), gojwt.WithAudience(aud),
				gojwt.WithExpirationRequired(), gojwt.WithIssuedAt(), gojwt.WithLeeway(30*time.Second))
			kf := func(*gojwt.Token) (any, error) { return f.pub, nil }
			loop(b, func() error { _, err := p.Parse(f.tok, kf); return err })
		})
		b.Run(alg+"/auth0", func(b *testing.B) {
			v, err := validator.New(func(context.Context) (any, error) { return f.pub, nil },
				validator.SignatureAlgorithm(alg), iss, []string{aud}, validator.WithAllowedClockSkew(30*time.Second))
			if err != nil {
				b.Fatal(err)
			}
			loop(b, func() error { _, err := v.ValidateToken(ctx, f.tok); return err })
		})
		b.Run(alg+"/jwx", func(b *testing.B) {
			opts := []jwt.ParseOption{jwt.WithKey(jwa.SignatureAlgorithm(alg), f.pub), jwt.WithValidate(true),
				jwt.WithIssuer(iss), jwt.WithAudience(aud), jwt.WithAcceptableSkew(30 * time.Second)}
			tok := []byte(f.tok)
			loop(b, func() error { _, err := jwt.Parse(tok, opts...); return err })
		})
		b.Run(alg+"/jwtverify-cold", func(b *testing.B) {
			v := f.verifier(b, 0)
			loop(b, func() error { _, err := v.Verify(ctx, f.tok); return err })
		})
		b.Run(alg+"/jwtverify-cached", func(b *testing.B) {
			v := f.verifier(b, 1000)
			if _, err := v.Verify(ctx, f.tok); err != nil {
				b.Fatal(err)
			}
			loop(b, func() error { _, err := v.Verify(ctx, f.tok); return err })
		})
	}
}

// BenchmarkBothLayers is the reference system's cost per request: the
// gateway verifies (cold: it does not cache), then the ledger verifies
// again. "first-use" is a token the ledger has not seen (two cold
// verifications); "steady" is the same token on later requests, a ledger
// cache hit. Compare with one auth0 verification in BenchmarkVerify.
func BenchmarkBothLayers(b *testing.B) {
	ctx := context.Background()
	for _, alg := range algs {
		f := newFixture(b, alg)
		both := func(gw, svc *jwtverify.Verifier) func() error {
			return func() error {
				if _, err := gw.Verify(ctx, f.tok); err != nil {
					return err
				}
				_, err := svc.Verify(ctx, f.tok)
				return err
			}
		}
		b.Run(alg+"/first-use", func(b *testing.B) {
			loop(b, both(f.verifier(b, 0), f.verifier(b, 0)))
		})
		b.Run(alg+"/steady", func(b *testing.B) {
			loop(b, both(f.verifier(b, 0), f.verifier(b, 1000)))
		})
	}
}

// BenchmarkHandlerCached is the HTTP path of a cache hit: header parsing,
// cache lookup, context, and a Require check.
func BenchmarkHandlerCached(b *testing.B) {
	f := newFixture(b, "ES256")
	v := f.verifier(b, 1000)
	h := v.Handler(v.RequireUser("ledger:read")(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	r := httptest.NewRequest(http.MethodGet, "/balance", nil)
	r.Header.Set("Authorization", "Bearer "+f.tok)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		b.Fatal(w.Code)
	}
	loop(b, func() error { h.ServeHTTP(w, r); return nil })
}
