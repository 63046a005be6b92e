package jwtverify

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// errJSON reports input that is not one strict JSON object.
var errJSON = errors.New("jwtverify: malformed JSON")

// errDuplicateKey reports an object that names the same member twice.
// encoding/json silently keeps the last one; two verifiers that disagree on
// which one counts are how duplicate-claim attacks work, so we refuse.
var errDuplicateKey = errors.New("jwtverify: duplicate JSON key")

// maxJSONDepth bounds nesting so a hostile document cannot exhaust the stack.
const maxJSONDepth = 32

// linearKeyLimit is the object size up to which duplicate keys are found by
// comparing pairs; larger objects use a map.
const linearKeyLimit = 16

// member is one top-level member of a JSON object. key is unescaped; val is
// the raw JSON text of the value, a substring of the input.
type member struct {
	key string
	val string
}

// members is a decoded top-level object: its members in document order.
type members []member

// get returns the raw value of the member named key.
func (ms members) get(key string) (string, bool) {
	for i := range ms {
		if ms[i].key == key {
			return ms[i].val, true
		}
	}
	return "", false
}

// parseObject checks that s is exactly one JSON object (RFC 8259, valid
// UTF-8, no duplicate key in any object at any depth, nesting at most
// maxJSONDepth) and returns its top-level members. Member keys and values
// are substrings of s, so the call allocates only the members slice.
func parseObject(s string) (members, error) {
	p := scanner{s: s}
	p.ws()
	if p.i >= len(p.s) || p.s[p.i] != '{' {
		return nil, errJSON
	}
	top := make(members, 0, 16)
	if err := p.object(&top); err != nil {
		return nil, err
	}
	p.ws()
	if p.i != len(p.s) {
		return nil, errJSON
	}
	return top, nil
}

// validJSON checks s the way parseObject does without keeping members.
func validJSON(s string) error {
	p := scanner{s: s}
	if err := p.value(); err != nil {
		return err
	}
	p.ws()
	if p.i != len(p.s) {
		return errJSON
	}
	return nil
}

type scanner struct {
	s     string
	i     int
	depth int
}

func (p *scanner) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *scanner) value() error {
	p.ws()
	if p.i >= len(p.s) {
		return errJSON
	}
	switch c := p.s[p.i]; {
	case c == '{':
		return p.object(nil)
	case c == '[':
		return p.array()
	case c == '"':
		_, _, err := p.str()
		return err
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	}
	return errJSON
}

func (p *scanner) literal(lit string) error {
	if !strings.HasPrefix(p.s[p.i:], lit) {
		return errJSON
	}
	p.i += len(lit)
	return nil
}

func (p *scanner) digits() int {
	n := 0
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}

func (p *scanner) number() error {
	if p.s[p.i] == '-' {
		p.i++
	}
	if p.i >= len(p.s) {
		return errJSON
	}
	if p.s[p.i] == '0' {
		p.i++
	} else if p.digits() == 0 {
		return errJSON
	}
	if p.i < len(p.s) && p.s[p.i] == '.' {
		p.i++
		if p.digits() == 0 {
			return errJSON
		}
	}
	if p.i < len(p.s) && (p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		p.i++
		if p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
			p.i++
		}
		if p.digits() == 0 {
			return errJSON
		}
	}
	return nil
}

// str scans a string starting at its opening quote. It returns the raw text
// including the quotes and whether it holds an escape.
func (p *scanner) str() (raw string, escaped bool, err error) {
	start := p.i
	p.i++
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return p.s[start:p.i], escaped, nil
		case c == '\\':
			escaped = true
			p.i++
			if p.i >= len(p.s) {
				return "", false, errJSON
			}
			switch p.s[p.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i++
			case 'u':
				if p.i+5 > len(p.s) {
					return "", false, errJSON
				}
				for _, h := range []byte(p.s[p.i+1 : p.i+5]) {
					if !isHex(h) {
						return "", false, errJSON
					}
				}
				p.i += 5
			default:
				return "", false, errJSON
			}
		case c < 0x20:
			return "", false, errJSON
		case c < utf8.RuneSelf:
			p.i++
		default:
			r, size := utf8.DecodeRuneInString(p.s[p.i:])
			if r == utf8.RuneError && size == 1 {
				return "", false, errJSON
			}
			p.i += size
		}
	}
	return "", false, errJSON
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func (p *scanner) object(top *members) error {
	p.depth++
	if p.depth > maxJSONDepth {
		return errJSON
	}
	p.i++ // '{'
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		p.depth--
		return nil
	}
	var (
		buf  [linearKeyLimit + 1]string
		keys = buf[:0]
		seen map[string]struct{}
	)
	for {
		p.ws()
		if p.i >= len(p.s) || p.s[p.i] != '"' {
			return errJSON
		}
		raw, escaped, err := p.str()
		if err != nil {
			return err
		}
		key := raw[1 : len(raw)-1]
		if escaped {
			if key, err = unquote(raw); err != nil {
				return err
			}
		}
		// Duplicate detection: pairwise for small objects, a map beyond.
		if seen == nil {
			for _, k := range keys {
				if k == key {
					return errDuplicateKey
				}
			}
			keys = append(keys, key)
			if len(keys) > linearKeyLimit {
				seen = make(map[string]struct{}, 2*len(keys))
				for _, k := range keys {
					seen[k] = struct{}{}
				}
			}
		} else {
			if _, dup := seen[key]; dup {
				return errDuplicateKey
			}
			seen[key] = struct{}{}
		}
		p.ws()
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return errJSON
		}
		p.i++
		p.ws()
		start := p.i
		if err := p.value(); err != nil {
			return err
		}
		if top != nil {
			*top = append(*top, member{key: key, val: p.s[start:p.i]})
		}
		p.ws()
		if p.i >= len(p.s) {
			return errJSON
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			p.depth--
			return nil
		default:
			return errJSON
		}
	}
}

func (p *scanner) array() error {
	p.depth++
	if p.depth > maxJSONDepth {
		return errJSON
	}
	p.i++ // '['
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == ']' {
		p.i++
		p.depth--
		return nil
	}
	for {
		if err := p.value(); err != nil {
			return err
		}
		p.ws()
		if p.i >= len(p.s) {
			return errJSON
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			p.depth--
			return nil
		default:
			return errJSON
		}
	}
}

// arrayElements returns the raw text of each element of raw, a JSON array
// that has already been validated. Anything else is errJSON.
func arrayElements(raw string) ([]string, error) {
	p := scanner{s: raw}
	p.ws()
	if p.i >= len(p.s) || p.s[p.i] != '[' {
		return nil, errJSON
	}
	p.i++
	var out []string
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == ']' {
		return out, nil
	}
	for {
		p.ws()
		start := p.i
		if err := p.value(); err != nil {
			return nil, err
		}
		out = append(out, p.s[start:p.i])
		p.ws()
		if p.i >= len(p.s) {
			return nil, errJSON
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case ']':
			return out, nil
		default:
			return nil, errJSON
		}
	}
}

// unquote decodes a raw JSON string (with quotes) that holds escapes.
func unquote(raw string) (string, error) {
	var s string
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return "", errJSON
	}
	return s, nil
}

// jsonString decodes a raw value that must be a JSON string.
func jsonString(raw string) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	body := raw[1 : len(raw)-1]
	if strings.IndexByte(body, '\\') < 0 {
		return body, true
	}
	s, err := unquote(raw)
	return s, err == nil
}

// jsonStrings decodes a raw value that is a JSON string or an array of
// strings (as "aud", "scp" and "roles" may be). Any other element is an
// error.
func jsonStrings(raw string) ([]string, bool) {
	if len(raw) == 0 {
		return nil, false
	}
	if raw[0] == '"' {
		s, ok := jsonString(raw)
		if !ok {
			return nil, false
		}
		return []string{s}, true
	}
	if raw[0] != '[' {
		return nil, false
	}
	p := scanner{s: raw, i: 1}
	var out []string
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == ']' {
		return out, true
	}
	for {
		p.ws()
		if p.i >= len(p.s) || p.s[p.i] != '"' {
			return nil, false
		}
		r, _, err := p.str()
		if err != nil {
			return nil, false
		}
		s, ok := jsonString(r)
		if !ok {
			return nil, false
		}
		out = append(out, s)
		p.ws()
		if p.i >= len(p.s) {
			return nil, false
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case ']':
			return out, true
		default:
			return nil, false
		}
	}
}

// maxNumericDate bounds NumericDate values to the year 5138, well past any
// real token and far from float/int overflow.
const maxNumericDate = 1e11

// jsonNumericDate decodes an RFC 7519 NumericDate: a non-negative JSON
// number of seconds since the epoch, possibly fractional.
func jsonNumericDate(raw string) (sec int64, nsec int64, ok bool) {
	if len(raw) == 0 || raw[0] == '"' || raw[0] == '-' {
		return 0, 0, false
	}
	f, err := strconv.ParseFloat(raw, 64)
	if err != nil || f < 0 || f >= maxNumericDate {
		return 0, 0, false
	}
	sec = int64(f)
	nsec = int64((f - float64(sec)) * 1e9)
	return sec, nsec, true
}
