package jwtverify

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/malai-sec/malai/jwtverify/jwttest"
)

// fuzzKey is fixed so committed corpus entries keep their meaning.
func fuzzKey() *jwttest.Key {
	seed := make([]byte, ed25519.SeedSize)
	copy(seed, "malai-jwtverify-fuzz-seed-000000")
	return &jwttest.Key{Alg: "EdDSA", KID: "f1", Private: ed25519.NewKeyFromSeed(seed)}
}

var fuzzNow = time.Unix(1_800_000_000, 0)

func jsonSeeds() []string {
	return []string{
		`{}`, `{"a":1}`, `{"a":1,"a":2}`, `{"a":1,"\u0061":2}`, `{"a":{"b":1,"b":2}}`,
		`{"a":[1,2,{"c":null}],"b":"x\"y","c":-0.5e+3}`, `[1]`, `{"a":01}`, `{"a":"\ud800"}`,
		`{"a":tru}`, " {\"x\" : true } ", `{"a":"` + "\xff" + `"}`, strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40),
	}
}

// FuzzParseObject checks the strict JSON scanner against encoding/json:
// whatever it accepts is valid JSON with the same top-level keys and no
// duplicates.
func FuzzParseObject(f *testing.F) {
	for _, s := range jsonSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ms, err := parseObject(s)
		if err != nil {
			return
		}
		if !json.Valid([]byte(s)) {
			t.Fatalf("accepted invalid JSON %q", s)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("accepted %q that encoding/json refuses: %v", s, err)
		}
		if len(m) != len(ms) {
			t.Fatalf("%d members, encoding/json sees %d distinct keys in %q", len(ms), len(m), s)
		}
		for _, mb := range ms {
			raw, ok := m[mb.key]
			if !ok {
				t.Fatalf("key %q not seen by encoding/json", mb.key)
			}
			var a, b any
			if json.Unmarshal(raw, &a) != nil || json.Unmarshal([]byte(mb.val), &b) != nil {
				t.Fatalf("member %q value %q does not decode", mb.key, mb.val)
			}
		}
		if validJSON(s) != nil {
			t.Fatalf("validJSON disagrees on %q", s)
		}
	})
}

// FuzzParseToken feeds arbitrary text to the pre-parser: it must never
// panic, and anything it accepts has three segments and a string alg.
func FuzzParseToken(f *testing.F) {
	k := fuzzKey()
	var tb testing.TB = f
	valid := k.Mint(tb, jwttest.Claims(testIss, testAud, "alice", fuzzNow))
	p := strings.Split(valid, ".")
	for _, s := range []string{valid, "", ".", "..", "a.b.c", valid + ".x", p[0] + "=." + p[1] + "." + p[2],
		"eyJhbGciOiJub25lIn0.e30.", "eyJhbGciOiJub25lIn0.e30.AA", strings.Repeat("A", 9000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, e := parseToken(s, DefaultMaxTokenSize)
		if e != nil {
			return
		}
		if strings.Count(s, ".") != 2 || tok.alg == "" || len(tok.sig) == 0 {
			t.Fatalf("accepted %q", s)
		}
		if !strings.HasPrefix(s, string(tok.signingInput)+".") {
			t.Fatal("signing input is not the token prefix")
		}
	})
}

// FuzzVerify checks end to end that nothing but the one genuinely signed
// token is ever accepted, and that errors never carry input text.
func FuzzVerify(f *testing.F) {
	k := fuzzKey()
	var tb testing.TB = f
	valid := k.Mint(tb, jwttest.Claims(testIss, testAud, "alice", fuzzNow))
	p := strings.Split(valid, ".")
	f.Add(valid)
	f.Add(p[0] + "." + p[1] + ".")
	f.Add(p[0] + ".e30." + p[2])
	f.Add("eyJhbGciOiJIUzI1NiJ9." + p[1] + "." + p[2])
	v, err := New(Config{Now: func() time.Time { return fuzzNow }, CacheSize: 16,
		Issuers: []Issuer{{Issuer: testIss, Keys: jwttest.Set(tb, k), Audiences: []string{testAud}}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := v.Verify(context.Background(), s)
		if err == nil {
			if s != valid || c.Subject() != "alice" {
				t.Fatalf("accepted a token that was never signed: %q", s)
			}
			return
		}
		if len(s) > 3 && strings.Contains(err.Error(), s) {
			t.Fatal("error echoes the token")
		}
	})
}

// FuzzAuthorization fuzzes the Authorization header parser.
func FuzzAuthorization(f *testing.F) {
	for _, s := range []string{"Bearer abc.def.ghi", "bearer  x", "Bearer ", "Basic Zm9v", "Bearer a b", "Bearer a==", "Bearer =a", "Bearer\tx", ""} {
		f.Add(s)
	}
	v, err := New(Config{Issuers: []Issuer{{Issuer: testIss, Keys: jwttest.Set(f, fuzzKey()), Audiences: []string{testAud}}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, h string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", h)
		tok, e := v.tokenFrom(r)
		if e != nil {
			return
		}
		if !isB64Token(tok) || !strings.HasSuffix(h, tok) || len(tok) > DefaultMaxTokenSize {
			t.Fatalf("header %q gave token %q", h, tok)
		}
	})
}

// FuzzJWKS feeds arbitrary documents to the key-set parser: no panic, and
// every key it keeps is a public asymmetric signature key.
func FuzzJWKS(f *testing.F) {
	var tb testing.TB = f
	good := jwttest.Set(tb, fuzzKey())
	f.Add(string(good))
	for _, tc := range jwkCases() {
		f.Add(tc.doc)
	}
	f.Add(`{"keys":[]}`)
	f.Add(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`)
	f.Add(`{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}`)
	f.Add(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`)
	f.Add(strings.Replace(string(good), `"kty"`, `"kty":"OKP","kty"`, 1))
	f.Fuzz(func(t *testing.T, doc string) {
		keys, err := parseJWKS([]byte(doc), false)
		if err != nil {
			return
		}
		if len(keys) == 0 || len(keys) > MaxKeys {
			t.Fatalf("%d keys without an error", len(keys))
		}
		for _, k := range keys {
			fits := false
			for alg := range supportedAlgs {
				fits = fits || k.fits(alg)
			}
			if !fits {
				t.Fatalf("kept a key that fits no algorithm: %T", k.pub)
			}
			if _, ok := usablePublic(k.pub); !ok {
				t.Fatalf("kept an unusable key: %T", k.pub)
			}
			if k.alg != "" && !supportedAlgs[k.alg] {
				t.Fatalf("kept a key for algorithm %q", k.alg)
			}
		}
	})
}
