package jwtverify

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// usablePublic is the independent statement of what a kept key must be:
// RSA within [MinRSABits, MaxRSABits] with an odd exponent ≥ 3, ECDSA on
// P-256/384/521 with its point on the curve, or a 32-byte Ed25519 key.
func usablePublic(k crypto.PublicKey) (crypto.PublicKey, bool) {
	switch pub := k.(type) {
	case *rsa.PublicKey:
		b := pub.N.BitLen()
		return pub, b >= MinRSABits && b <= MaxRSABits && pub.E >= 3 && pub.E%2 == 1
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return nil, false
		}
		raw, err := pub.Bytes()
		if err != nil {
			return nil, false
		}
		_, err = ecdsa.ParseUncompressedPublicKey(pub.Curve, raw)
		return pub, err == nil
	case ed25519.PublicKey:
		return pub, len(pub) == ed25519.PublicKeySize
	}
	return nil, false
}

var b64u = base64.RawURLEncoding

type jwkCase struct {
	name string
	doc  string
	keep int // usable keys when fetched (private members refused)
	err  bool
}

// jwkCases are JWK Set documents with the number of keys a fetched set
// keeps; they also seed FuzzJWKS.
func jwkCases() []jwkCase {
	ec := func(c elliptic.Curve) *ecdsa.PrivateKey {
		k, _ := ecdsa.GenerateKey(c, rand.Reader)
		return k
	}
	p256, p384, p521 := ec(elliptic.P256()), ec(elliptic.P384()), ec(elliptic.P521())
	coords := func(k *ecdsa.PrivateKey) (x, y string) {
		raw, _ := k.PublicKey.Bytes()
		n := (len(raw) - 1) / 2
		return b64u.EncodeToString(raw[1 : 1+n]), b64u.EncodeToString(raw[1+n:])
	}
	x256, y256 := coords(p256)
	x384, y384 := coords(p384)
	x521, y521 := coords(p521)
	// A valid x with y off the curve.
	yBad := []byte(strings.Repeat("\x01", 32))
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	n := b64u.EncodeToString(rsaKey.N.Bytes())
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	x25519 := b64u.EncodeToString(edPub)
	set := func(keys ...string) string { return `{"keys":[` + strings.Join(keys, ",") + `]}` }
	ecJWK := func(crv, x, y, extra string) string {
		return fmt.Sprintf(`{"kty":"EC","crv":%q,"x":%q,"y":%q%s}`, crv, x, y, extra)
	}
	rsaJWK := func(n, e, extra string) string {
		return fmt.Sprintf(`{"kty":"RSA","n":%q,"e":%q%s}`, n, e, extra)
	}
	ed := func(x, extra string) string { return fmt.Sprintf(`{"kty":"OKP","crv":"Ed25519","x":%q%s}`, x, extra) }
	return []jwkCase{
		{"P-256", set(ecJWK("P-256", x256, y256, "")), 1, false},
		{"P-384", set(ecJWK("P-384", x384, y384, `,"alg":"ES384"`)), 1, false},
		{"P-521", set(ecJWK("P-521", x521, y521, `,"kid":"a","use":"sig"`)), 1, false},
		{"RSA", set(rsaJWK(n, "AQAB", `,"alg":"PS256"`)), 1, false},
		{"Ed25519", set(ed(x25519, `,"key_ops":["verify"]`)), 1, false},
		{"all kept, unusable skipped", set(ecJWK("P-256", x256, y256, ""), `{"kty":"oct","k":"c2VjcmV0"}`, ed(x25519, "")), 2, false},
		{"padded base64url", set(ed(x25519+"=", "")), 1, false},
		{"no keys member", `{"key":[]}`, 0, true},
		{"keys not an array", `{"keys":{}}`, 0, true},
		{"empty", `{"keys":[]}`, 0, true},
		{"not JSON", `{"keys":[`, 0, true},
		{"duplicate member", `{"keys":[` + ed(x25519, `,"kty":"RSA"`) + `]}`, 0, true},
		{"duplicate keys member", `{"keys":[],"keys":[` + ed(x25519, "") + `]}`, 0, true},
		{"element not an object", set(`"x"`, `1`, ed(x25519, "")), 1, false},
		{"symmetric", set(`{"kty":"oct","k":"c2VjcmV0","alg":"HS256"}`), 0, true},
		{"X25519", set(`{"kty":"OKP","crv":"X25519","x":"` + x25519 + `"}`), 0, true},
		{"Ed448", set(`{"kty":"OKP","crv":"Ed448","x":"` + x25519 + `"}`), 0, true},
		{"encryption key", set(ed(x25519, `,"use":"enc"`)), 0, true},
		{"key_ops without verify", set(ed(x25519, `,"key_ops":["sign"]`)), 0, true},
		{"key_ops not an array", set(ed(x25519, `,"key_ops":"verify"`)), 0, true},
		{"HMAC alg on an EC key", set(ecJWK("P-256", x256, y256, `,"alg":"HS256"`)), 0, true},
		{"alg none", set(ed(x25519, `,"alg":"none"`)), 0, true},
		{"alg that does not fit the curve", set(ecJWK("P-256", x256, y256, `,"alg":"ES384"`)), 0, true},
		{"RSA alg on an EC key", set(ecJWK("P-256", x256, y256, `,"alg":"RS256"`)), 0, true},
		{"point off the curve", set(ecJWK("P-256", x256, b64u.EncodeToString(yBad), "")), 0, true},
		{"short coordinate", set(ecJWK("P-256", x256[:40], y256, "")), 0, true},
		{"unknown curve", set(ecJWK("secp256k1", x256, y256, "")), 0, true},
		{"crv not a string", set(`{"kty":"EC","crv":1,"x":"` + x256 + `","y":"` + y256 + `"}`), 0, true},
		{"kid not a string", set(ed(x25519, `,"kid":7`)), 0, true},
		{"Ed25519 wrong length", set(ed(x25519[:20], "")), 0, true},
		{"base64 with newline escape", set(fmt.Sprintf(`{"kty":"OKP","crv":"Ed25519","x":"%s\n%s"}`, x25519[:10], x25519[10:])), 0, true},
		{"standard base64 alphabet", set(ed(strings.ReplaceAll(strings.ReplaceAll(x25519, "-", "+"), "_", "/")+"+/", "")), 0, true},
		{"even RSA exponent", set(rsaJWK(n, b64u.EncodeToString([]byte{1, 0, 0}), "")), 0, true},
		{"RSA exponent 1", set(rsaJWK(n, "AQ", "")), 0, true},
		{"RSA exponent too long", set(rsaJWK(n, "AQABAQAB", "")), 0, true},
		{"small RSA modulus", set(rsaJWK(b64u.EncodeToString(rsaKey.N.Bytes()[:64]), "AQAB", "")), 0, true},
		{"private EC key in a fetched set", set(ecJWK("P-256", x256, y256, `,"d":"`+b64u.EncodeToString(ecScalar(p256))+`"`)), 0, true},
		{"private RSA member", set(rsaJWK(n, "AQAB", `,"p":"AQAB"`)), 0, true},
	}
}

func TestParseJWKS(t *testing.T) {
	for _, tc := range jwkCases() {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := parseJWKS([]byte(tc.doc), false)
			if (err != nil) != tc.err || len(keys) != tc.keep {
				t.Fatalf("kept %d keys, err %v; want %d, error %v", len(keys), err, tc.keep, tc.err)
			}
			for _, k := range keys {
				if _, ok := usablePublic(k.pub); !ok {
					t.Fatalf("kept an unusable %T", k.pub)
				}
			}
		})
	}
}

func TestParseJWKSKeepsParameters(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	raw, _ := k.PublicKey.Bytes()
	doc := fmt.Sprintf(`{"keys":[{"kty":"EC","crv":"P-256","kid":"k-\u00e9","alg":"ES256","x":%q,"y":%q,"x5t":"ignored"}]}`,
		b64u.EncodeToString(raw[1:33]), b64u.EncodeToString(raw[33:]))
	keys, err := parseJWKS([]byte(doc), false)
	if err != nil || len(keys) != 1 {
		t.Fatal(keys, err)
	}
	got := keys[0]
	if got.kid != "k-é" || got.alg != "ES256" || !got.pub.(*ecdsa.PublicKey).Equal(&k.PublicKey) {
		t.Fatalf("kid %q alg %q key %v", got.kid, got.alg, got.pub)
	}
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	doc = fmt.Sprintf(`{"keys":[{"kty":"RSA","n":%q,"e":"AQAB"}]}`, b64u.EncodeToString(rk.N.Bytes()))
	keys, err = parseJWKS([]byte(doc), false)
	if err != nil || !keys[0].pub.(*rsa.PublicKey).Equal(&rk.PublicKey) {
		t.Fatal(err)
	}
}

// A static set (the caller's own file) may hold private keys: they are
// reduced to the public part, and nothing private is kept.
func TestStaticSetDropsPrivateParts(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	raw, _ := k.PublicKey.Bytes()
	doc, _ := json.Marshal(map[string]any{"keys": []any{map[string]string{
		"kty": "EC", "crv": "P-256", "x": b64u.EncodeToString(raw[1:33]), "y": b64u.EncodeToString(raw[33:]),
		"d": b64u.EncodeToString(ecScalar(k)),
	}}})
	if _, err := parseJWKS(doc, false); err == nil {
		t.Fatal("a fetched set kept a private key")
	}
	keys, err := parseJWKS(doc, true)
	if err != nil || len(keys) != 1 {
		t.Fatal(err)
	}
	if _, ok := keys[0].pub.(*ecdsa.PublicKey); !ok {
		t.Fatalf("kept %T", keys[0].pub)
	}
}

func TestParseJWKSCapsKeys(t *testing.T) {
	_, x, _ := ed25519.GenerateKey(rand.Reader)
	one := fmt.Sprintf(`{"kty":"OKP","crv":"Ed25519","x":%q}`, b64u.EncodeToString(x.Public().(ed25519.PublicKey)))
	doc := `{"keys":[` + strings.TrimSuffix(strings.Repeat(one+",", MaxKeys+1), ",") + `]}`
	if _, err := parseJWKS([]byte(doc), false); err == nil {
		t.Fatalf("%d keys accepted", MaxKeys+1)
	}
	doc = `{"keys":[` + strings.TrimSuffix(strings.Repeat(one+",", MaxKeys), ",") + `]}`
	if keys, err := parseJWKS([]byte(doc), false); err != nil || len(keys) != MaxKeys {
		t.Fatalf("%d keys: %v", len(keys), err)
	}
}
