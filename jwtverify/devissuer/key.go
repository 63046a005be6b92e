package devissuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha256" // registers SHA-256 for crypto.Hash.New
	_ "crypto/sha512" // registers SHA-384 and SHA-512
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// ErrAlgorithm is returned for an algorithm this package cannot sign with.
var ErrAlgorithm = errors.New("devissuer: unsupported algorithm")

// Algorithms lists the JWS algorithms [NewKey] generates keys for: every
// asymmetric algorithm jwtverify verifies.
var algorithms = []string{"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}

// Algorithms returns the JWS algorithms [NewKey] accepts.
func Algorithms() []string { return append([]string(nil), algorithms...) }

// Key is a signing key with its JWS algorithm and key id. Private is the
// generated key; it never leaves the process unless the caller sends it.
type Key struct {
	Alg     string
	KID     string
	Private crypto.Signer
}

// NewKey generates a key for alg (see [Algorithms]) with key id kid (""
// for none): P-256/384/521 for ES*, 2048-bit RSA for RS* and PS*, Ed25519
// for EdDSA.
func NewKey(alg, kid string) (*Key, error) {
	var (
		k   crypto.Signer
		err error
	)
	switch alg {
	case "ES256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ES512":
		k, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "EdDSA":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("%w %q", ErrAlgorithm, alg)
	}
	if err != nil {
		return nil, fmt.Errorf("devissuer: generating a %s key: %w", alg, err)
	}
	return &Key{Alg: alg, KID: kid, Private: k}, nil
}

var b64 = base64.RawURLEncoding

// JWK returns the public key as a JWK (RFC 7517) with "kid" (when set),
// "alg" and "use": "sig".
func (k *Key) JWK() (json.RawMessage, error) {
	m := map[string]string{"alg": k.Alg, "use": "sig"}
	if k.KID != "" {
		m["kid"] = k.KID
	}
	switch pub := k.Private.Public().(type) {
	case *ecdsa.PublicKey:
		raw, err := pub.Bytes()
		if err != nil {
			return nil, fmt.Errorf("devissuer: key %q: %w", k.KID, err)
		}
		size := (len(raw) - 1) / 2
		m["kty"], m["crv"] = "EC", pub.Curve.Params().Name
		m["x"], m["y"] = b64.EncodeToString(raw[1:1+size]), b64.EncodeToString(raw[1+size:])
	case *rsa.PublicKey:
		m["kty"] = "RSA"
		m["n"] = b64.EncodeToString(pub.N.Bytes())
		m["e"] = b64.EncodeToString(big.NewInt(int64(pub.E)).Bytes())
	case ed25519.PublicKey:
		m["kty"], m["crv"], m["x"] = "OKP", "Ed25519", b64.EncodeToString(pub)
	default:
		return nil, fmt.Errorf("%w: key type %T", ErrAlgorithm, pub)
	}
	return json.Marshal(m)
}

// JWKS returns a JWK Set document (RFC 7517 §5) with the public keys, the
// form jwtverify.Issuer.Keys and a JWKS URL take.
func JWKS(keys ...*Key) ([]byte, error) {
	doc := struct {
		Keys []json.RawMessage `json:"keys"`
	}{Keys: []json.RawMessage{}}
	for _, k := range keys {
		j, err := k.JWK()
		if err != nil {
			return nil, err
		}
		doc.Keys = append(doc.Keys, j)
	}
	return json.Marshal(doc)
}

// Header returns the JOSE header [Key.Sign] uses for typ: {"alg", "typ",
// "kid" (when set)}. An empty typ is left out.
func (k *Key) Header(typ string) map[string]any {
	h := map[string]any{"alg": k.Alg}
	if typ != "" {
		h["typ"] = typ
	}
	if k.KID != "" {
		h["kid"] = k.KID
	}
	return h
}

// Sign encodes header and claims with encoding/json and signs them. The
// header is used as given: it must name the key's algorithm for the token
// to verify.
func (k *Key) Sign(header, claims map[string]any) (string, error) {
	hb, err := json.Marshal(header)
	if err != nil {
		return "", fmt.Errorf("devissuer: header: %w", err)
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("devissuer: claims: %w", err)
	}
	return k.SignRaw(hb, cb)
}

// SignRaw signs the exact header and payload bytes, for tokens that
// encoding/json would not produce (duplicate members, odd spacing).
func (k *Key) SignRaw(header, payload []byte) (string, error) {
	input := b64.EncodeToString(header) + "." + b64.EncodeToString(payload)
	sig, err := k.signature([]byte(input))
	if err != nil {
		return "", err
	}
	return input + "." + b64.EncodeToString(sig), nil
}

// hashFor returns the hash of a JWS algorithm name ("ES256" → SHA-256).
func hashFor(alg string) (crypto.Hash, bool) {
	if len(alg) < 3 {
		return 0, false
	}
	switch alg[len(alg)-3:] {
	case "256":
		return crypto.SHA256, true
	case "384":
		return crypto.SHA384, true
	case "512":
		return crypto.SHA512, true
	}
	return 0, false
}

func (k *Key) signature(input []byte) ([]byte, error) {
	switch p := k.Private.(type) {
	case ed25519.PrivateKey:
		if k.Alg == "EdDSA" {
			return ed25519.Sign(p, input), nil
		}
	case *ecdsa.PrivateKey:
		curves := map[string]elliptic.Curve{"ES256": elliptic.P256(), "ES384": elliptic.P384(), "ES512": elliptic.P521()}
		if c, ok := curves[k.Alg]; ok && p.Curve == c {
			h, _ := hashFor(k.Alg)
			r, s, err := ecdsa.Sign(rand.Reader, p, digest(h, input))
			if err != nil {
				return nil, fmt.Errorf("devissuer: signing: %w", err)
			}
			// JWS ECDSA signatures are R || S at the field size (RFC 7518 §3.4).
			size := (c.Params().BitSize + 7) / 8
			sig := make([]byte, 2*size)
			r.FillBytes(sig[:size])
			s.FillBytes(sig[size:])
			return sig, nil
		}
	case *rsa.PrivateKey:
		h, ok := hashFor(k.Alg)
		switch {
		case ok && strings.HasPrefix(k.Alg, "RS") && len(k.Alg) == 5:
			return rsa.SignPKCS1v15(rand.Reader, p, h, digest(h, input))
		case ok && strings.HasPrefix(k.Alg, "PS") && len(k.Alg) == 5:
			return rsa.SignPSS(rand.Reader, p, h, digest(h, input), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
	}
	return nil, fmt.Errorf("%w: %q with a %T key", ErrAlgorithm, k.Alg, k.Private)
}

func digest(h crypto.Hash, input []byte) []byte {
	d := h.New()
	d.Write(input)
	return d.Sum(nil)
}
