package jwtverify

import (
	"encoding/base64"
	"strings"
)

// DefaultMaxTokenSize is the token size cap when [Config.MaxTokenSize] is 0.
const DefaultMaxTokenSize = 8 << 10

var b64 = base64.RawURLEncoding.Strict()

// maxKIDLen bounds "kid": real key ids are short, and unknown kids are
// remembered for the cooldown, so their size bounds that memory.
const maxKIDLen = 256

// rawToken is a compact JWS split and pre-parsed, before any signature check.
type rawToken struct {
	signingInput []byte // header "." payload, as signed
	sig          []byte
	alg, kid     string
	typ          string
	hasTyp       bool
	payload      string // decoded claims JSON
	claims       members
}

// parseToken performs every check that needs no key: size, exactly three
// segments, strict unpadded base64url, strict JSON without duplicate keys
// in header and payload, the header members that are never trusted, and a
// string "alg". It does not look at claim values.
func parseToken(tok string, maxSize int) (*rawToken, *Error) {
	if len(tok) > maxSize {
		return nil, errTooLarge
	}
	// Only the base64url alphabet and dots: the decoder would otherwise
	// skip CR and LF, letting two different strings carry one token.
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return nil, errMalformed
		}
	}
	d1 := strings.IndexByte(tok, '.')
	if d1 <= 0 {
		return nil, errMalformed
	}
	d2 := strings.IndexByte(tok[d1+1:], '.')
	if d2 <= 0 {
		return nil, errMalformed
	}
	d2 += d1 + 1
	if d2 == len(tok)-1 || strings.IndexByte(tok[d2+1:], '.') >= 0 {
		return nil, errMalformed
	}
	tb := []byte(tok)
	h64, p64, s64 := tb[:d1], tb[d1+1:d2], tb[d2+1:]

	// One buffer for all three decoded segments.
	buf := make([]byte, b64.DecodedLen(len(h64))+b64.DecodedLen(len(p64))+b64.DecodedLen(len(s64)))
	hn, err := b64.Decode(buf, h64)
	if err != nil {
		return nil, errMalformed
	}
	hdr := buf[:hn]
	rest := buf[hn:]
	pn, err := b64.Decode(rest, p64)
	if err != nil {
		return nil, errMalformed
	}
	pay := rest[:pn]
	sn, err := b64.Decode(rest[pn:], s64)
	if err != nil || sn == 0 {
		return nil, errMalformed
	}

	t := &rawToken{signingInput: tb[:d2], sig: rest[pn : pn+sn]}
	if e := t.header(string(hdr)); e != nil {
		return nil, e
	}
	t.payload = string(pay)
	t.claims, err = parseObject(t.payload)
	if err != nil {
		if err == errDuplicateKey {
			return nil, errDuplicate
		}
		return nil, errMalformed
	}
	return t, nil
}

// header decodes the JOSE header. Members that would let the token choose
// its own key (jku, x5u, jwk, x5c), extensions we cannot honour (crit, b64)
// and nested tokens (cty) are refused outright rather than ignored.
func (t *rawToken) header(s string) *Error {
	ms, err := parseObject(s)
	if err != nil {
		if err == errDuplicateKey {
			return errDuplicate
		}
		return errMalformed
	}
	var hasAlg bool
	for _, m := range ms {
		var ok bool
		switch m.key {
		case "alg":
			t.alg, ok = jsonString(m.val)
			hasAlg = true
		case "kid":
			t.kid, ok = jsonString(m.val)
		case "typ":
			t.typ, ok = jsonString(m.val)
			t.hasTyp = true
		case "jku", "x5u", "jwk", "x5c", "crit", "b64", "cty":
			return errUntrusted
		default:
			ok = true
		}
		if !ok {
			return errMalformed
		}
	}
	if !hasAlg || t.alg == "" || len(t.kid) > maxKIDLen {
		return errMalformed
	}
	return nil
}
