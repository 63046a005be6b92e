package jwtverify

import (
	"context"
	"runtime"
	"testing"

	"github.com/malai-sec/malai/jwtverify/jwttest"
)

// BenchmarkOverhead measures everything Verify does besides the signature
// check: size and segment checks, base64, strict JSON with duplicate
// detection, profile choice, key lookup and claim validation. Cold Verify
// costs this plus the floor measured in bench/jwtverify.
func BenchmarkOverhead(b *testing.B) {
	clock := newClock()
	key := jwttest.NewKey(b, "ES256", "k1")
	c := jwttest.Claims(testIss, testAud, "alice", clock.Now())
	c["scope"] = "ledger:read ledger:write"
	tok := key.Mint(b, c)
	v, err := New(Config{Now: clock.Now, Issuers: []Issuer{{Issuer: testIss, Keys: jwttest.Set(b, key), Audiences: []string{testAud}}}})
	if err != nil {
		b.Fatal(err)
	}
	p := v.byIssuer[testIss]
	ctx := context.Background()
	loop(b, func() error {
		t, e := parseToken(tok, DefaultMaxTokenSize)
		if e != nil {
			return e
		}
		if _, e := p.keys.lookup(ctx, t.kid, t.alg); e != nil {
			return e
		}
		if _, e := p.buildClaims(t, clock.Now()); e != nil {
			return e
		}
		return nil
	})
}

// loop runs op on one locked OS thread and reports "cpu-ns/op", the
// thread's own CPU time per op, which on a shared machine is steadier than
// wall time.
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

// BenchmarkCacheHit is a verified-token cache hit through Verify.
func BenchmarkCacheHit(b *testing.B) {
	clock := newClock()
	key := jwttest.NewKey(b, "ES256", "k1")
	tok := key.Mint(b, jwttest.Claims(testIss, testAud, "alice", clock.Now()))
	v, err := New(Config{Now: clock.Now, CacheSize: 1000, Issuers: []Issuer{{Issuer: testIss, Keys: jwttest.Set(b, key), Audiences: []string{testAud}}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	loop(b, func() error { _, err := v.Verify(ctx, tok); return err })
}
