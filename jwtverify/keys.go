package jwtverify

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"sync/atomic"
)

// MinRSABits is the smallest RSA modulus accepted from a key set.
const MinRSABits = 2048

// supportedAlgs are the asymmetric JWS algorithms this package verifies.
// "none" and the HMAC family are absent on purpose: a verifier holding only
// public keys must never accept a MAC (the algorithm-confusion attack).
var supportedAlgs = map[string]bool{
	"ES256": true, "ES384": true, "ES512": true,
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"EdDSA": true,
}

// defaultAlgs is the allow-list when [Issuer.Algorithms] is empty.
var defaultAlgs = []string{"ES256", "EdDSA", "RS256", "PS256"}

// publicKey is one verification key from a key set.
type publicKey struct {
	kid string
	alg string // the JWK "alg", empty if the key did not name one
	pub crypto.PublicKey
	// removed is set when a refresh no longer lists this key; cached
	// verifications made with it stop counting at once.
	removed atomic.Bool
}

// fits reports whether the key may verify a token signed with alg: the key
// type and curve must match the algorithm, and a key that names its own
// algorithm accepts only that one.
func (k *publicKey) fits(alg string) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	switch pub := k.pub.(type) {
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return pub.Curve == elliptic.P256()
		case "ES384":
			return pub.Curve == elliptic.P384()
		case "ES512":
			return pub.Curve == elliptic.P521()
		}
	case *rsa.PublicKey:
		switch alg {
		case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
			return true
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// verifySignature checks sig over input with the key, for alg. The caller
// has already checked k.fits(alg).
func verifySignature(alg string, k *publicKey, input, sig []byte) bool {
	switch alg {
	case "EdDSA":
		pub, ok := k.pub.(ed25519.PublicKey)
		return ok && len(sig) == ed25519.SignatureSize && ed25519.Verify(pub, input, sig)
	case "ES256":
		h := sha256.Sum256(input)
		return verifyECDSA(k.pub, h[:], sig, 32)
	case "ES384":
		h := sha512.Sum384(input)
		return verifyECDSA(k.pub, h[:], sig, 48)
	case "ES512":
		h := sha512.Sum512(input)
		return verifyECDSA(k.pub, h[:], sig, 66)
	case "RS256", "PS256":
		h := sha256.Sum256(input)
		return verifyRSA(alg, k.pub, crypto.SHA256, h[:], sig)
	case "RS384", "PS384":
		h := sha512.Sum384(input)
		return verifyRSA(alg, k.pub, crypto.SHA384, h[:], sig)
	case "RS512", "PS512":
		h := sha512.Sum512(input)
		return verifyRSA(alg, k.pub, crypto.SHA512, h[:], sig)
	}
	return false
}

// verifyECDSA checks a JWS ECDSA signature: R and S as fixed-size
// big-endian integers, concatenated (RFC 7518 §3.4). Any other length,
// including DER, is refused. The pair is re-encoded as the DER that
// crypto/ecdsa verifies, without big.Int round trips.
func verifyECDSA(key crypto.PublicKey, hash, sig []byte, size int) bool {
	pub, ok := key.(*ecdsa.PublicKey)
	if !ok || len(sig) != 2*size {
		return false
	}
	var body, out [2 * (3 + 67)]byte
	b := appendDERInt(appendDERInt(body[:0], sig[:size]), sig[size:])
	der := append(out[:0], 0x30)
	if len(b) >= 0x80 {
		der = append(der, 0x81)
	}
	der = append(append(der, byte(len(b))), b...)
	return ecdsa.VerifyASN1(pub, hash, der)
}

// appendDERInt appends x, an unsigned big-endian integer of at most 66
// bytes, as a DER INTEGER.
func appendDERInt(b, x []byte) []byte {
	for len(x) > 1 && x[0] == 0 {
		x = x[1:]
	}
	n := len(x)
	pad := x[0]&0x80 != 0
	if pad {
		n++
	}
	b = append(b, 0x02, byte(n))
	if pad {
		b = append(b, 0)
	}
	return append(b, x...)
}

func verifyRSA(alg string, key crypto.PublicKey, h crypto.Hash, hash, sig []byte) bool {
	pub, ok := key.(*rsa.PublicKey)
	if !ok {
		return false
	}
	if alg[0] == 'P' {
		return rsa.VerifyPSS(pub, h, hash, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
	}
	return rsa.VerifyPKCS1v15(pub, h, hash, sig) == nil
}

// keySet is an immutable snapshot of an issuer's keys.
type keySet struct {
	keys []*publicKey
}

// find returns the one key that may verify a token with this kid and alg.
// A token without kid is accepted only when exactly one key fits.
func (s *keySet) find(kid, alg string) (*publicKey, *Error) {
	var found *publicKey
	n := 0
	for _, k := range s.keys {
		if kid != "" && k.kid != kid {
			continue
		}
		if !k.fits(alg) {
			continue
		}
		found = k
		n++
	}
	switch n {
	case 0:
		return nil, errUnknownKey
	case 1:
		return found, nil
	default:
		return nil, errAmbiguousKey
	}
}

// sameKey reports whether two keys are the same key under the same id.
func sameKey(a, b *publicKey) bool {
	if a.kid != b.kid || a.alg != b.alg {
		return false
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.pub.(equaler)
	return ok && e.Equal(b.pub)
}
