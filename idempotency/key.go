package idempotency

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"net/http"
	"strings"
	"unicode/utf8"
)

// Header names.
const (
	// HeaderKey is the request header carrying the key.
	HeaderKey = "Idempotency-Key"
	// HeaderReplayed is set to "true" on a replayed response.
	HeaderReplayed = "Idempotent-Replayed"
)

// MaxKeyLen is the longest key accepted, in characters.
const MaxKeyLen = 255

// ParseKey parses an Idempotency-Key field value: a Structured Field Item
// (RFC 9651) whose bare item is a String of 1 to [MaxKeyLen] characters.
// Parameters are parsed and ignored, as the RFC requires of unknown ones.
// It returns the unescaped key or [ErrKeyInvalid].
func ParseKey(v string) (string, error) {
	p := sfParser{s: v}
	p.skipSP()
	key, ok := p.str()
	if !ok || len(key) == 0 || len(key) > MaxKeyLen {
		return "", ErrKeyInvalid
	}
	if !p.params() {
		return "", ErrKeyInvalid
	}
	p.skipSP()
	if p.i != len(p.s) {
		return "", ErrKeyInvalid
	}
	return key, nil
}

// ParseBareKey parses an Idempotency-Key the way [ParseKey] does, and also
// accepts a bare value, as most clients send one: 1 to [MaxKeyLen] visible
// ASCII characters (0x21-0x7E) without '"', '\\', ',' or ';'. A value
// that starts with '"' must be a valid structured-field string. The quoted
// and the bare spelling of a key return the same key.
func ParseBareKey(v string) (string, error) {
	v = strings.Trim(v, " \t")
	if strings.HasPrefix(v, `"`) {
		return ParseKey(v)
	}
	if len(v) == 0 || len(v) > MaxKeyLen {
		return "", ErrKeyInvalid
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' || c == ',' || c == ';' {
			return "", ErrKeyInvalid
		}
	}
	return v, nil
}

// FormatKey serialises key as a structured-field string, the inverse of
// [ParseKey]. Clients and queue producers use it to send a key.
func FormatKey(key string) string {
	var b strings.Builder
	b.Grow(len(key) + 2)
	b.WriteByte('"')
	for i := 0; i < len(key); i++ {
		if key[i] == '"' || key[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(key[i])
	}
	b.WriteByte('"')
	return b.String()
}

type sfParser struct {
	s string
	i int
}

func (p *sfParser) skipSP() {
	for p.i < len(p.s) && p.s[p.i] == ' ' {
		p.i++
	}
}

func (p *sfParser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

// str parses an sf-string (RFC 9651 §4.2.5). It avoids allocating when the
// string has no escapes.
func (p *sfParser) str() (string, bool) {
	if p.peek() != '"' {
		return "", false
	}
	p.i++
	start := p.i
	var buf []byte
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '\\':
			if p.i+1 >= len(p.s) || (p.s[p.i+1] != '"' && p.s[p.i+1] != '\\') {
				return "", false
			}
			if buf == nil {
				buf = append(make([]byte, 0, len(p.s)), p.s[start:p.i]...)
			}
			buf = append(buf, p.s[p.i+1])
			p.i += 2
		case c == '"':
			p.i++
			if buf != nil {
				return string(buf), true
			}
			return p.s[start : p.i-1], true
		case c < 0x20 || c > 0x7e:
			return "", false
		default:
			if buf != nil {
				buf = append(buf, c)
			}
			p.i++
		}
	}
	return "", false
}

// params parses *( ";" *SP key [ "=" bare-item ] ) and discards it.
func (p *sfParser) params() bool {
	for p.peek() == ';' {
		p.i++
		p.skipSP()
		if !p.paramKey() {
			return false
		}
		if p.peek() == '=' {
			p.i++
			if !p.bareItem() {
				return false
			}
		}
	}
	return true
}

func isLCAlpha(c byte) bool { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool   { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool   { return isLCAlpha(c) || (c >= 'A' && c <= 'Z') }

func (p *sfParser) paramKey() bool {
	c := p.peek()
	if !isLCAlpha(c) && c != '*' {
		return false
	}
	p.i++
	for p.i < len(p.s) {
		c := p.s[p.i]
		if !isLCAlpha(c) && !isDigit(c) && c != '_' && c != '-' && c != '.' && c != '*' {
			break
		}
		p.i++
	}
	return true
}

func (p *sfParser) bareItem() bool {
	c := p.peek()
	switch {
	case c == '-' || isDigit(c):
		return p.number()
	case c == '"':
		_, ok := p.str()
		return ok
	case c == '*' || isAlpha(c):
		p.i++
		for p.i < len(p.s) && (isTChar(p.s[p.i]) || p.s[p.i] == ':' || p.s[p.i] == '/') {
			p.i++
		}
		return true
	case c == ':':
		return p.byteSeq()
	case c == '?':
		if p.i+1 < len(p.s) && (p.s[p.i+1] == '0' || p.s[p.i+1] == '1') {
			p.i += 2
			return true
		}
		return false
	case c == '@':
		p.i++
		return p.number() // a Date is an Integer (RFC 9651 §4.2.9)
	case c == '%':
		return p.displayString()
	}
	return false
}

// number parses an Integer or Decimal (RFC 9651 §4.2.4).
func (p *sfParser) number() bool {
	if p.peek() == '-' {
		p.i++
	}
	intDigits, fracDigits, dot := 0, 0, false
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case isDigit(c):
			if dot {
				fracDigits++
			} else {
				intDigits++
			}
		case c == '.' && !dot:
			if intDigits > 12 {
				return false
			}
			dot = true
		default:
			goto done
		}
		p.i++
	}
done:
	if intDigits == 0 {
		return false
	}
	if !dot {
		return intDigits <= 15
	}
	return fracDigits >= 1 && fracDigits <= 3
}

func (p *sfParser) byteSeq() bool {
	p.i++ // ':'
	start := p.i
	for p.i < len(p.s) && p.s[p.i] != ':' {
		c := p.s[p.i]
		if !isAlpha(c) && !isDigit(c) && c != '+' && c != '/' && c != '=' {
			return false
		}
		p.i++
	}
	if p.i >= len(p.s) {
		return false
	}
	_, err := base64.StdEncoding.DecodeString(p.s[start:p.i])
	p.i++
	return err == nil
}

func (p *sfParser) displayString() bool {
	p.i++ // '%'
	if p.peek() != '"' {
		return false
	}
	p.i++
	var buf []byte
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '%':
			if p.i+2 >= len(p.s) {
				return false
			}
			h, ok1 := lowerHex(p.s[p.i+1])
			l, ok2 := lowerHex(p.s[p.i+2])
			if !ok1 || !ok2 {
				return false
			}
			buf = append(buf, h<<4|l)
			p.i += 3
		case c == '"':
			p.i++
			return utf8.Valid(buf)
		case c < 0x20 || c > 0x7e:
			return false
		default:
			buf = append(buf, c)
			p.i++
		}
	}
	return false
}

func lowerHex(c byte) (byte, bool) {
	switch {
	case isDigit(c):
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

func isTChar(c byte) bool {
	if isAlpha(c) || isDigit(c) {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// RecordKey derives the record key the HTTP middleware uses for a request:
// the verified caller (principal), the method, the route pattern as the
// server matched it (r.Pattern, for example "POST /transfers") and the
// Idempotency-Key. A queue worker that must meet the same record as an
// HTTP retry calls RecordKey with the same four values and passes the
// result to [Runner.Do]. The parts are length-prefixed, so no choice of
// values makes two different tuples collide.
func RecordKey(principal, method, pattern, key string) string {
	return string(appendRecordKey(nil, principal, method, pattern, key))
}

func appendRecordKey(b []byte, principal, method, pattern, key string) []byte {
	b = append(b, "http/v1"...)
	for _, s := range [...]string{principal, method, pattern, key} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// storeKey is what stores see: a hash of the record key, so an
// Idempotency-Key never appears in clear in a store, log or metric.
func storeKey(recordKey string) string {
	var buf [512]byte
	return hashKey(append(buf[:0], recordKey...))
}

// httpStoreKey is storeKey(RecordKey(...)) without the intermediate string.
func httpStoreKey(principal, method, pattern, key string) string {
	var buf [512]byte
	return hashKey(appendRecordKey(buf[:0], principal, method, pattern, key))
}

func hashKey(b []byte) string {
	sum := sha256.Sum256(b)
	var out [43]byte // base64.RawURLEncoding.EncodedLen(32)
	base64.RawURLEncoding.Encode(out[:], sum[:])
	return string(out[:])
}

// Fingerprint is the SHA-256 fingerprint of a request payload: the body
// and, when names are given, the values of those request headers (in the
// order given). The middleware calls it with the (canonicalised) request
// body and Config.FingerprintHeaders; a worker that shares a record with
// HTTP calls it with the same body bytes and no header.
func Fingerprint(body []byte, header http.Header, names ...string) [32]byte {
	if len(names) == 0 {
		return sha256.Sum256(body)
	}
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	write := func(b []byte) {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))])
		h.Write(b)
	}
	write(body)
	for _, name := range names {
		vals := header.Values(name)
		write([]byte(http.CanonicalHeaderKey(name)))
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(vals)))])
		for _, v := range vals {
			write([]byte(v))
		}
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}
