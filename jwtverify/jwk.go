package jwtverify

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// MaxRSABits is the largest RSA modulus accepted: verification cost grows
// with the square of the size, and no issuer needs more.
const MaxRSABits = 8192

// MaxKeys caps the usable keys kept from one key set. Real issuers publish
// a handful; every verification of a token without "kid" looks at each.
const MaxKeys = 100

// errKeySet wraps every error about a key set document.
var errKeySet = errors.New("jwtverify: unusable key set")

// errNoUsableKey is the error for a well-formed set none of whose keys can
// verify a signature.
var errNoUsableKey = fmt.Errorf("%w: no usable signature key", errKeySet)

func rsaSizeOK(bits int) bool { return bits >= MinRSABits && bits <= MaxRSABits }

// rsaExponentOK accepts odd public exponents from 3 to 2^31-1, as
// crypto/rsa does.
func rsaExponentOK(e int) bool { return e >= 3 && e <= 1<<31-1 && e%2 == 1 }

// privateMembers are the JWK members that carry private key material
// (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// parseJWKS decodes a JWK Set document (RFC 7517 §5).
//
// The document must be strict JSON (no duplicate member at any depth).
// Keys the verifier cannot use are skipped: other key types (oct, X25519,
// Ed448), use other than "sig", key_ops without "verify", an "alg" that is
// not an allowed asymmetric JWS algorithm or does not fit the key, RSA
// moduli outside [MinRSABits, MaxRSABits] or with an even or tiny exponent,
// EC points not on their curve or not encoded at the curve's full size.
// When allowPrivate is false (a fetched set), so are keys that carry
// private members: a published set that leaks a private key must not be
// used as if nothing happened; a static set (the caller's own file) is
// reduced to its public parts. It fails when the document is not strict
// JSON, has no "keys" array, holds more than MaxKeys usable keys, or no
// usable key remains.
func parseJWKS(doc []byte, allowPrivate bool) ([]*publicKey, error) {
	ms, err := parseObject(string(doc))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errKeySet, err)
	}
	raw, ok := ms.get("keys")
	if !ok {
		return nil, fmt.Errorf("%w: no \"keys\" member", errKeySet)
	}
	elems, err := arrayElements(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: \"keys\" is not an array", errKeySet)
	}
	var out []*publicKey
	for _, e := range elems {
		k, ok := parseJWK(e, allowPrivate)
		if !ok {
			continue
		}
		if len(out) == MaxKeys {
			return nil, fmt.Errorf("%w: more than %d usable keys", errKeySet, MaxKeys)
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, errNoUsableKey
	}
	return out, nil
}

// parseJWK decodes one JWK (RFC 7517 §4, RFC 7518 §6, RFC 8037 §2). It
// reports false for any key it will not verify with.
func parseJWK(raw string, allowPrivate bool) (*publicKey, bool) {
	if len(raw) == 0 || raw[0] != '{' {
		return nil, false
	}
	ms, err := parseObject(raw)
	if err != nil {
		return nil, false
	}
	for _, name := range privateMembers {
		if _, ok := ms.get(name); ok && !allowPrivate {
			return nil, false
		}
	}
	// Every member we read must be a string when present.
	str := func(name string) (string, bool) {
		v, ok := ms.get(name)
		if !ok {
			return "", true
		}
		return jsonString(v)
	}
	kty, ok1 := str("kty")
	kid, ok2 := str("kid")
	alg, ok3 := str("alg")
	use, ok4 := str("use")
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return nil, false
	}
	if use != "" && use != "sig" {
		return nil, false
	}
	if v, ok := ms.get("key_ops"); ok {
		ops, ok := jsonStrings(v)
		if !ok || len(v) == 0 || v[0] != '[' {
			return nil, false
		}
		verify := false
		for _, op := range ops {
			verify = verify || op == "verify"
		}
		if !verify {
			return nil, false
		}
	}
	if alg != "" && !supportedAlgs[alg] {
		return nil, false
	}
	var pub crypto.PublicKey
	switch kty {
	case "RSA":
		n, okN := b64Member(ms, "n")
		e, okE := b64Member(ms, "e")
		if !okN || !okE || len(e) == 0 || len(e) > 4 {
			return nil, false
		}
		key := &rsa.PublicKey{N: new(big.Int).SetBytes(n)}
		for _, b := range e {
			key.E = key.E<<8 | int(b)
		}
		if !rsaSizeOK(key.N.BitLen()) || !rsaExponentOK(key.E) {
			return nil, false
		}
		pub = key
	case "EC":
		crv, ok := str("crv")
		if !ok {
			return nil, false
		}
		var curve elliptic.Curve
		switch crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, false
		}
		size := (curve.Params().BitSize + 7) / 8
		x, okX := b64Member(ms, "x")
		y, okY := b64Member(ms, "y")
		// RFC 7518 §6.2.1.2: coordinates are exactly the field size.
		if !okX || !okY || len(x) != size || len(y) != size {
			return nil, false
		}
		point := make([]byte, 0, 1+2*size)
		point = append(append(append(point, 4), x...), y...)
		key, err := ecdsa.ParseUncompressedPublicKey(curve, point)
		if err != nil {
			return nil, false
		}
		pub = key
	case "OKP":
		crv, ok := str("crv")
		if !ok || crv != "Ed25519" {
			return nil, false
		}
		x, ok := b64Member(ms, "x")
		if !ok || len(x) != ed25519.PublicKeySize {
			return nil, false
		}
		pub = ed25519.PublicKey(x)
	default:
		return nil, false
	}
	k := &publicKey{kid: kid, alg: alg, pub: pub}
	if alg != "" && !k.fits(alg) {
		return nil, false
	}
	return k, true
}

// b64Member decodes a base64url member (unpadded, as RFC 7515 §2 asks;
// padded values are accepted too, as some issuers send them).
func b64Member(ms members, name string) ([]byte, bool) {
	v, ok := ms.get(name)
	if !ok {
		return nil, false
	}
	s, ok := jsonString(v)
	if !ok || s == "" {
		return nil, false
	}
	s = strings.TrimRight(s, "=")
	for i := 0; i < len(s); i++ {
		// The decoder would skip CR and LF; nothing else is base64url.
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return nil, false
		}
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, false
	}
	return b, true
}
