// Package assertion parses and checks the JWT client assertions of
// private_key_jwt client authentication (RFC 7523 §2.2 and §3, RFC 7521).
//
// Parse does every check that needs no key and reads no clock: size,
// three strict base64url segments, strict JSON (one object, no duplicate
// member at any depth, valid UTF-8), a header naming an allowed algorithm
// and nothing that would let the token choose its key or demand an
// extension (jku, jwk, x5u, x5c, crit, b64, cty, zip are refused), a
// "typ" that is absent, "JWT" or "client-authentication+jwt" (so an
// access token, typ at+jwt, is never an assertion), and claims of the
// right JSON types (NumericDates as numbers, never strings). [Check]
// applies the clock and the expected client and audience; [Verify]
// checks the signature with the client's registered key.
package assertion

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/big"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits.
const (
	// MaxSize caps the assertion text.
	MaxSize = 4 << 10
	// MaxLifetime caps exp − iat: an assertion is for one request.
	MaxLifetime = 5 * time.Minute
	// Leeway is the clock skew allowed on exp, nbf and iat.
	Leeway = 30 * time.Second
	// MaxJTI caps the length of "jti".
	MaxJTI = 128
)

// Type is the "typ" RFC 7523bis gives client assertions.
const Type = "client-authentication+jwt"

// Errors. Each is safe to describe to the client in general terms; none
// carries token text.
var (
	ErrMalformed   = errors.New("assertion: malformed")
	ErrHeader      = errors.New("assertion: header not acceptable")
	ErrAlgorithm   = errors.New("assertion: algorithm not allowed")
	ErrType        = errors.New("assertion: typ not acceptable")
	ErrClaims      = errors.New("assertion: claims missing or of the wrong type")
	ErrIssuer      = errors.New("assertion: iss and sub must both be the client id")
	ErrAudience    = errors.New("assertion: aud must be exactly the token endpoint")
	ErrExpired     = errors.New("assertion: expired")
	ErrNotYetValid = errors.New("assertion: not yet valid")
	ErrLifetime    = errors.New("assertion: lifetime too long")
	ErrSignature   = errors.New("assertion: signature does not verify")
	ErrKey         = errors.New("assertion: key does not fit the algorithm")
)

// Claims are an assertion's claims.
type Claims struct {
	Issuer, Subject, JTI        string
	Audience                    []string
	Expiry, IssuedAt, NotBefore time.Time
}

// Assertion is a parsed, not yet verified, client assertion.
type Assertion struct {
	Algorithm, KeyID string
	Claims
	signingInput, sig []byte
}

var b64 = base64.RawURLEncoding.Strict()

// Parse parses an assertion without verifying it.
func Parse(token string) (*Assertion, error) {
	if len(token) == 0 || len(token) > MaxSize {
		return nil, ErrMalformed
	}
	for i := 0; i < len(token); i++ {
		c := token[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return nil, ErrMalformed
		}
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return nil, ErrMalformed
	}
	hdr, err1 := b64.DecodeString(parts[0])
	pay, err2 := b64.DecodeString(parts[1])
	sig, err3 := b64.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, ErrMalformed
	}
	h, err := object(hdr)
	if err != nil {
		return nil, err
	}
	a := &Assertion{signingInput: []byte(token[:len(parts[0])+1+len(parts[1])]), sig: sig}
	for name, raw := range h {
		switch name {
		case "alg":
			if a.Algorithm, err = str(raw); err != nil {
				return nil, ErrHeader
			}
		case "kid":
			if a.KeyID, err = str(raw); err != nil || a.KeyID == "" || len(a.KeyID) > 128 {
				return nil, ErrHeader
			}
		case "typ":
			typ, err := str(raw)
			if err != nil {
				return nil, ErrHeader
			}
			switch strings.TrimPrefix(strings.ToLower(typ), "application/") {
			case "jwt", Type:
			default:
				return nil, ErrType
			}
		case "jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "crit", "b64", "cty", "zip", "enc":
			return nil, ErrHeader
		}
	}
	switch a.Algorithm {
	case "ES256", "EdDSA":
	default:
		return nil, ErrAlgorithm
	}
	if a.KeyID == "" {
		return nil, ErrHeader
	}
	c, err := object(pay)
	if err != nil {
		return nil, err
	}
	for name, raw := range c {
		var err error
		switch name {
		case "iss":
			a.Issuer, err = str(raw)
		case "sub":
			a.Subject, err = str(raw)
		case "jti":
			a.JTI, err = str(raw)
			if err == nil && !validJTI(a.JTI) {
				err = ErrClaims
			}
		case "aud":
			a.Audience, err = strs(raw)
		case "exp":
			a.Expiry, err = date(raw)
		case "iat":
			a.IssuedAt, err = date(raw)
		case "nbf":
			a.NotBefore, err = date(raw)
		}
		if err != nil {
			return nil, ErrClaims
		}
	}
	if a.Issuer == "" || a.Subject == "" || a.JTI == "" || len(a.Audience) == 0 || a.Expiry.IsZero() || a.IssuedAt.IsZero() {
		return nil, ErrClaims
	}
	return a, nil
}

func validJTI(s string) bool {
	if s == "" || len(s) > MaxJTI {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// Check applies the rules that need the expected client, the token
// endpoint and the clock: iss == sub == clientID, aud exactly [audience],
// exp in the future, nbf and iat not in the future, exp − iat at most
// MaxLifetime.
func (a *Assertion) Check(clientID, audience string, now time.Time) error {
	if a.Issuer != clientID || a.Subject != clientID {
		return ErrIssuer
	}
	if len(a.Audience) != 1 || a.Audience[0] != audience {
		return ErrAudience
	}
	if !now.Before(a.Expiry.Add(Leeway)) {
		return ErrExpired
	}
	if a.IssuedAt.After(now.Add(Leeway)) || !a.NotBefore.IsZero() && a.NotBefore.After(now.Add(Leeway)) {
		return ErrNotYetValid
	}
	if !a.Expiry.After(a.IssuedAt) || a.Expiry.Sub(a.IssuedAt) > MaxLifetime {
		return ErrLifetime
	}
	return nil
}

// Verify checks the signature with pub, which must fit the algorithm: a
// P-256 ECDSA key for ES256, an Ed25519 key for EdDSA.
func (a *Assertion) Verify(pub crypto.PublicKey) error {
	switch a.Algorithm {
	case "ES256":
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok || k.Curve != elliptic.P256() {
			return ErrKey
		}
		if len(a.sig) != 64 {
			return ErrSignature
		}
		h := sha256.Sum256(a.signingInput)
		r, s := new(big.Int).SetBytes(a.sig[:32]), new(big.Int).SetBytes(a.sig[32:])
		if !ecdsa.Verify(k, h[:], r, s) {
			return ErrSignature
		}
		return nil
	case "EdDSA":
		k, ok := pub.(ed25519.PublicKey)
		if !ok {
			return ErrKey
		}
		if len(a.sig) != ed25519.SignatureSize || !ed25519.Verify(k, a.signingInput, a.sig) {
			return ErrSignature
		}
		return nil
	}
	return ErrAlgorithm
}

// StrictObject decodes one JSON object into its members, refusing invalid
// UTF-8, trailing data and duplicate members at any depth (encoding/json
// alone would keep the last of two).
func StrictObject(b []byte) (map[string]json.RawMessage, error) { return object(b) }

func object(b []byte) (map[string]json.RawMessage, error) {
	if !utf8.Valid(b) {
		return nil, ErrMalformed
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, ErrMalformed
	}
	out := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, ErrMalformed
		}
		name, ok := tok.(string)
		if !ok {
			return nil, ErrMalformed
		}
		if _, dup := out[name]; dup {
			return nil, ErrMalformed
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, ErrMalformed
		}
		if err := noDuplicates(raw, 0); err != nil {
			return nil, err
		}
		out[name] = raw
	}
	if _, err := dec.Token(); err != nil {
		return nil, ErrMalformed
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, ErrMalformed
	}
	return out, nil
}

// noDuplicates walks a JSON value and refuses an object with a repeated
// member, at any depth (bounded).
func noDuplicates(raw []byte, depth int) error {
	if depth > 16 {
		return ErrMalformed
	}
	switch {
	case len(raw) > 0 && raw[0] == '{':
		dec := json.NewDecoder(bytes.NewReader(raw))
		if _, err := dec.Token(); err != nil {
			return ErrMalformed
		}
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return ErrMalformed
			}
			name, _ := tok.(string)
			if seen[name] {
				return ErrMalformed
			}
			seen[name] = true
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				return ErrMalformed
			}
			if err := noDuplicates(v, depth+1); err != nil {
				return err
			}
		}
	case len(raw) > 0 && raw[0] == '[':
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return ErrMalformed
		}
		for _, it := range items {
			if err := noDuplicates(it, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

func str(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", ErrClaims
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", ErrClaims
	}
	return s, nil
}

func strs(raw json.RawMessage) ([]string, error) {
	if s, err := str(raw); err == nil {
		return []string{s}, nil
	}
	if len(raw) == 0 || raw[0] != '[' {
		return nil, ErrClaims
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, ErrClaims
	}
	out := make([]string, 0, len(list))
	for _, it := range list {
		s, err := str(it)
		if err != nil {
			return nil, ErrClaims
		}
		out = append(out, s)
	}
	return out, nil
}

// date reads a NumericDate: a JSON number (never a string), at least 1
// and below year 10000.
func date(raw json.RawMessage) (time.Time, error) {
	if len(raw) == 0 || !(raw[0] >= '0' && raw[0] <= '9') {
		return time.Time{}, ErrClaims
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return time.Time{}, ErrClaims
	}
	f, err := n.Float64()
	if err != nil || f < 1 || f >= 253402300800 || math.IsNaN(f) {
		return time.Time{}, ErrClaims
	}
	sec := math.Floor(f)
	return time.Unix(int64(sec), int64((f-sec)*1e9)).UTC(), nil
}
