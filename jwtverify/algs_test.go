package jwtverify

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/base64"
	"fmt"
	"math/big"
	"testing"

	"github.com/malai-sec/malai/jwtverify/devissuer"
	"github.com/malai-sec/malai/jwtverify/jwttest"
)

// TestEveryAlgorithm verifies a token of every supported algorithm; each
// is also refused under a profile that does not allow its algorithm and
// with a tampered signature. (Tokens signed by an independent
// implementation are checked in the interop module.)
func TestEveryAlgorithm(t *testing.T) {
	clock := newClock()
	for _, alg := range devissuer.Algorithms() {
		t.Run(alg, func(t *testing.T) {
			key := jwttest.NewKey(t, alg, "k")
			tok := key.Mint(t, jwttest.Claims(testIss, testAud, "alice", clock.Now()))
			newV := func(algs []string) *Verifier {
				v, err := New(Config{Now: clock.Now, Issuers: []Issuer{{Issuer: testIss, Keys: jwttest.Set(t, key), Audiences: []string{testAud}, Algorithms: algs}}})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = v.Close() })
				return v
			}
			if _, err := newV([]string{alg}).Verify(context.Background(), tok); err != nil {
				t.Fatalf("%s refused: %v", alg, err)
			}
			other := "ES256"
			if alg == "ES256" {
				other = "EdDSA"
			}
			if _, err := newV([]string{other}).Verify(context.Background(), tok); ReasonOf(err) != ReasonAlgorithm {
				t.Fatalf("%s under a profile without it: %v", alg, err)
			}
			bad := tok[:len(tok)-2] + "AA"
			if tok[len(tok)-2:] == "AA" {
				bad = tok[:len(tok)-2] + "BA"
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
	enc := base64.RawURLEncoding
	set := fmt.Sprintf(`{"keys":[{"kty":"RSA","n":%q,"e":"AQAB"}]}`, enc.EncodeToString(weak.N.Bytes()))
	if _, err := New(Config{Issuers: []Issuer{{Issuer: testIss, Keys: []byte(set), Audiences: []string{testAud}}}}); err == nil {
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
