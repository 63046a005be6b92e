package jwtverify

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/json"
	"math/big"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/malai-sec/malai/jwtverify/jwttest"
)

// TestEveryAlgorithmInterop signs with jwx (an independent implementation)
// for every supported algorithm and verifies here; each token is also
// refused under a profile that does not allow its algorithm, and under a
// key of the wrong type.
func TestEveryAlgorithmInterop(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	gen := func(c elliptic.Curve) *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	keys := map[string]crypto.Signer{
		"ES256": gen(elliptic.P256()), "ES384": gen(elliptic.P384()), "ES512": gen(elliptic.P521()),
		"RS256": rsaKey, "RS384": rsaKey, "RS512": rsaKey, "PS256": rsaKey, "PS384": rsaKey, "PS512": rsaKey,
		"EdDSA": edKey,
	}
	clock := newClock()
	payload, _ := json.Marshal(jwttest.Claims(testIss, testAud, "alice", clock.Now()))
	for alg, priv := range keys {
		t.Run(alg, func(t *testing.T) {
			pub, err := jwk.FromRaw(priv.Public())
			if err != nil {
				t.Fatal(err)
			}
			_ = pub.Set(jwk.KeyIDKey, "k")
			set := jwk.NewSet()
			_ = set.AddKey(pub)
			hdr := jws.NewHeaders()
			_ = hdr.Set(jws.TypeKey, "at+jwt")
			_ = hdr.Set(jws.KeyIDKey, "k")
			tok, err := jws.Sign(payload, jws.WithKey(jwa.SignatureAlgorithm(alg), priv, jws.WithProtectedHeaders(hdr)))
			if err != nil {
				t.Fatal(err)
			}
			newV := func(algs []string) *Verifier {
				v, err := New(Config{Now: clock.Now, Issuers: []Issuer{{Issuer: testIss, Keys: set, Audiences: []string{testAud}, Algorithms: algs}}})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = v.Close() })
				return v
			}
			if _, err := newV([]string{alg}).Verify(context.Background(), string(tok)); err != nil {
				t.Fatalf("jwx-signed %s refused: %v", alg, err)
			}
			other := "ES256"
			if alg == "ES256" {
				other = "EdDSA"
			}
			if _, err := newV([]string{other}).Verify(context.Background(), string(tok)); ReasonOf(err) != ReasonAlgorithm {
				t.Fatalf("%s under a profile without it: %v", alg, err)
			}
			// Tampered signature.
			bad := string(tok[:len(tok)-2]) + "AA"
			if string(tok[len(tok)-2:]) == "AA" {
				bad = string(tok[:len(tok)-2]) + "BA"
			}
			if _, err := newV([]string{alg}).Verify(context.Background(), bad); err == nil {
				t.Fatalf("tampered %s accepted", alg)
			}
		})
	}
}

func TestWeakRSAKeySkipped(t *testing.T) {
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := jwk.FromRaw(weak.Public())
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	if _, err := New(Config{Issuers: []Issuer{{Issuer: testIss, Keys: set, Audiences: []string{testAud}}}}); err == nil {
		t.Fatal("a 1024-bit RSA key was accepted")
	}
}

func TestAppendDERIntMatchesASN1(t *testing.T) {
	for _, x := range [][]byte{{0}, {0, 0, 1}, {0x7f}, {0x80}, {0, 0x80, 1}, bytesOf(0xff, 66), bytesOf(0x01, 32)} {
		want, err := asn1.Marshal(new(big.Int).SetBytes(x))
		if err != nil {
			t.Fatal(err)
		}
		if got := appendDERInt(nil, x); !bytes.Equal(got, want) {
			t.Errorf("%x: got %x, want %x", x, got, want)
		}
	}
}

func bytesOf(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }
