package interop

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/jwtverify/devissuer"
)

const (
	iss = "https://id.interop.test"
	aud = "ledger"
)

// signers returns one fresh private key per JWS algorithm.
func signers(t *testing.T) map[string]crypto.Signer {
	t.Helper()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ec := func(c elliptic.Curve) crypto.Signer {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	return map[string]crypto.Signer{
		"ES256": ec(elliptic.P256()), "ES384": ec(elliptic.P384()), "ES512": ec(elliptic.P521()),
		"RS256": rsaKey, "RS384": rsaKey, "RS512": rsaKey, "PS256": rsaKey, "PS384": rsaKey, "PS512": rsaKey,
		"EdDSA": ed,
	}
}

// Tokens signed by jwx, with the key set jwx encodes, verify in jwtverify
// for every algorithm; a tampered signature and a profile without the
// algorithm refuse them.
func TestJWXSignedTokensVerify(t *testing.T) {
	now := time.Now()
	claims, _ := json.Marshal(map[string]any{
		"iss": iss, "aud": aud, "sub": "alice", "client_id": "web", "iat": now.Unix(),
		"exp": now.Add(5 * time.Minute).Unix(), "token_class": "user",
	})
	for alg, priv := range signers(t) {
		t.Run(alg, func(t *testing.T) {
			pub, err := jwk.FromRaw(priv.Public())
			if err != nil {
				t.Fatal(err)
			}
			_ = pub.Set(jwk.KeyIDKey, "k")
			set := jwk.NewSet()
			_ = set.AddKey(pub)
			doc, err := json.Marshal(set)
			if err != nil {
				t.Fatal(err)
			}
			hdr := jws.NewHeaders()
			_ = hdr.Set(jws.TypeKey, "at+jwt")
			_ = hdr.Set(jws.KeyIDKey, "k")
			tok, err := jws.Sign(claims, jws.WithKey(jwa.SignatureAlgorithm(alg), priv, jws.WithProtectedHeaders(hdr)))
			if err != nil {
				t.Fatal(err)
			}
			newV := func(algs ...string) *jwtverify.Verifier {
				v, err := jwtverify.New(jwtverify.Config{Issuers: []jwtverify.Issuer{{Issuer: iss, Keys: doc, Audiences: []string{aud}, Algorithms: algs}}})
				if err != nil {
					t.Fatalf("jwx's key set refused: %v\n%s", err, doc)
				}
				t.Cleanup(func() { _ = v.Close() })
				return v
			}
			if c, err := newV(alg).Verify(context.Background(), string(tok)); err != nil || c.Subject() != "alice" {
				t.Fatalf("jwx-signed %s refused: %v", alg, err)
			}
			bad := string(tok[:len(tok)-2]) + "AA"
			if string(tok[len(tok)-2:]) == "AA" {
				bad = string(tok[:len(tok)-2]) + "BA"
			}
			if _, err := newV(alg).Verify(context.Background(), bad); err == nil {
				t.Fatalf("tampered %s accepted", alg)
			}
			other := "ES256"
			if alg == "ES256" {
				other = "EdDSA"
			}
			if _, err := newV(other).Verify(context.Background(), string(tok)); jwtverify.ReasonOf(err) != jwtverify.ReasonAlgorithm {
				t.Fatalf("%s under a profile without it: %v", alg, err)
			}
		})
	}
}

// What devissuer mints and publishes, jwx parses and verifies, for every
// algorithm, and jwx reads back the same public key.
func TestDevissuerTokensVerifyWithJWX(t *testing.T) {
	for _, alg := range devissuer.Algorithms() {
		t.Run(alg, func(t *testing.T) {
			k, err := devissuer.NewKey(alg, "k-"+alg)
			if err != nil {
				t.Fatal(err)
			}
			doc, err := devissuer.JWKS(k)
			if err != nil {
				t.Fatal(err)
			}
			set, err := jwk.Parse(doc)
			if err != nil {
				t.Fatalf("jwx refuses %s", doc)
			}
			key, _ := set.Key(0)
			var raw any
			if err := key.Raw(&raw); err != nil {
				t.Fatal(err)
			}
			type equaler interface{ Equal(crypto.PublicKey) bool }
			if !raw.(equaler).Equal(k.Private.Public()) {
				t.Fatalf("jwx reads another key from %s", doc)
			}
			now := time.Now()
			tok, err := k.Sign(k.Header("at+jwt"), map[string]any{"iss": iss, "aud": aud, "sub": "worker",
				"iat": now.Unix(), "exp": now.Add(time.Minute).Unix()})
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := jwt.Parse([]byte(tok), jwt.WithKeySet(set), jwt.WithValidate(true), jwt.WithAudience(aud))
			if err != nil {
				t.Fatal(err)
			}
			if parsed.Subject() != "worker" {
				t.Fatalf("sub %q", parsed.Subject())
			}
		})
	}
}
