// Package strictjson decodes the reference system's request and queue
// bodies so that what one component checks is exactly what another
// executes.
//
// encoding/json alone lets one body mean two things: it matches member
// names case-insensitively ({"amount":1000,"AMOUNT":3} fills Amount with
// 3), lets the last of two duplicate members win while an inspector in
// front (a WAF, a canonicaliser) may read the first or all of them, and
// silently replaces invalid UTF-8 and unpaired UTF-16 surrogate escapes
// with U+FFFD, so two different byte strings decode to one value.
// [Decode] refuses all of these before anything is fingerprinted,
// checked or queued:
//
//   - exactly one JSON value, nothing after it;
//   - in every object, at any depth, no member name twice and no two names
//     equal under Unicode case folding;
//   - every member of a decoded struct named exactly (case-sensitively) as
//     one of its fields' JSON names, no unknown member;
//   - valid UTF-8 and no unpaired surrogate escape anywhere;
//   - every number within the range of an IEEE 754 double (I-JSON,
//     RFC 7493 §2.2): 1e400 is +Inf to one parser and an error to the
//     next;
//   - nesting at most [MaxDepth] levels.
//
// Bound the body before calling (http.MaxBytesReader): Decode reads all
// it is given.
//
//	var req struct {
//		From   string `json:"from"`
//		Amount int64  `json:"amount"`
//	}
//	if err := strictjson.Decode(body, &req); err != nil {
//		// 400: errors.Is(err, strictjson.ErrDuplicate) and the others
//	}
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxDepth bounds the nesting of arrays and objects.
const MaxDepth = 32

// Errors. Compare with errors.Is; the text never echoes the body.
var (
	ErrSyntax      = errors.New("strictjson: malformed JSON")
	ErrTrailing    = errors.New("strictjson: data after the value")
	ErrDuplicate   = errors.New("strictjson: duplicate member name")
	ErrCaseVariant = errors.New("strictjson: member names differ only in case")
	ErrUnknown     = errors.New("strictjson: unknown member")
	ErrInvalidText = errors.New("strictjson: invalid UTF-8 or unpaired surrogate")
	ErrDepth       = errors.New("strictjson: nested too deeply")
	ErrType        = errors.New("strictjson: member of the wrong type")
	ErrNotObject   = errors.New("strictjson: not a JSON object")
	ErrRange       = errors.New("strictjson: number out of range")
)

// Check reports whether b is one JSON value that satisfies every rule in
// the package documentation except the match against a struct.
func Check(b []byte) error {
	_, err := check(b, nil)
	return err
}

// check is Check; when top is not nil it also returns the member names
// of the top-level object, appended to top.
func check(b []byte, top []string) ([]string, error) {
	if !utf8.Valid(b) {
		return nil, ErrInvalidText
	}
	if err := checkSurrogates(b); err != nil {
		return nil, err
	}
	if !json.Valid(b) {
		return nil, syntaxOrTrailing(b)
	}
	return scanNames(b, top)
}

// syntaxOrTrailing tells why json.Valid refused b: one well-formed value
// followed by more data, or malformed JSON.
func syntaxOrTrailing(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	var v json.RawMessage
	if err := dec.Decode(&v); err != nil {
		return ErrSyntax
	}
	return ErrTrailing
}

// object is one open object's member names while scanning.
type object struct {
	exact, folded []string
	exactM        map[string]struct{}
	foldedM       map[string]struct{}
	expectKey     bool
}

// smallObject is how many members are compared pairwise before an object
// switches to maps (bounding the cost of a hostile object with thousands
// of members).
const smallObject = 16

func (o *object) add(name string) error {
	f := foldFast(name)
	if o.exactM == nil {
		for i := range o.exact {
			if o.exact[i] == name {
				return ErrDuplicate
			}
			if o.folded[i] == f {
				return ErrCaseVariant
			}
		}
		o.exact, o.folded = append(o.exact, name), append(o.folded, f)
		if len(o.exact) > smallObject {
			o.exactM, o.foldedM = make(map[string]struct{}, 2*smallObject), make(map[string]struct{}, 2*smallObject)
			for i := range o.exact {
				o.exactM[o.exact[i]], o.foldedM[o.folded[i]] = struct{}{}, struct{}{}
			}
		}
		return nil
	}
	if _, dup := o.exactM[name]; dup {
		return ErrDuplicate
	}
	if _, dup := o.foldedM[f]; dup {
		return ErrCaseVariant
	}
	o.exactM[name], o.foldedM[f] = struct{}{}, struct{}{}
	return nil
}

// scanNames walks b, which json.Valid accepted, checking every object's
// member names, every number's range and the nesting depth.
func scanNames(b []byte, top []string) ([]string, error) {
	var stack [MaxDepth]struct {
		obj bool
		o   object
	}
	depth := 0
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '{', '[':
			if depth == MaxDepth {
				return nil, ErrDepth
			}
			stack[depth].obj = c == '{'
			stack[depth].o = object{expectKey: c == '{'}
			depth++
		case '}', ']':
			depth--
		case ',':
			if depth > 0 && stack[depth-1].obj {
				stack[depth-1].o.expectKey = true
			}
		case '"':
			j := stringEnd(b, i)
			if depth > 0 && stack[depth-1].obj && stack[depth-1].o.expectKey {
				f := &stack[depth-1].o
				f.expectKey = false
				name, err := unquote(b[i : j+1])
				if err != nil {
					return nil, ErrSyntax
				}
				if err := f.add(name); err != nil {
					return nil, err
				}
				if depth == 1 && top != nil {
					top = append(top, name)
				}
			}
			i = j
		case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			j := numberEnd(b, i)
			if err := checkRange(b[i:j]); err != nil {
				return nil, err
			}
			i = j - 1
		}
	}
	return top, nil
}

// numberEnd returns the index just past the number literal that starts
// at b[i] (b is valid JSON).
func numberEnd(b []byte, i int) int {
	for ; i < len(b); i++ {
		switch c := b[i]; {
		case c >= '0' && c <= '9', c == '-', c == '+', c == '.', c == 'e', c == 'E':
		default:
			return i
		}
	}
	return i
}

// maxPlainDigits is how long a number without an exponent can be and
// still be below the largest double (1.8e308 has 309 integer digits).
const maxPlainDigits = 300

// checkRange refuses a number literal whose magnitude no double holds.
// Only a literal with an exponent or hundreds of digits can, so the
// common case is not parsed.
func checkRange(lit []byte) error {
	if len(lit) < maxPlainDigits && !bytes.ContainsAny(lit, "eE") {
		return nil
	}
	if _, err := strconv.ParseFloat(string(lit), 64); err != nil {
		return ErrRange
	}
	return nil
}

// stringEnd returns the index of the quote closing the string literal
// that opens at b[i] (b is valid JSON).
func stringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j
		}
	}
	return len(b) - 1
}

// unquote decodes a JSON string literal; literals without escapes (every
// member name a client should send) are sliced, not decoded.
func unquote(lit []byte) (string, error) {
	inner := lit[1 : len(lit)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner), nil
	}
	var s string
	err := json.Unmarshal(lit, &s)
	return s, err
}

// foldFast is fold with a fast path for ASCII names: the representative
// of an ASCII letter's class is its upper case (the Kelvin sign and the
// long s sort after it).
func foldFast(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return fold(s)
		}
	}
	upper := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'a' && c <= 'z' {
			upper = false
			break
		}
	}
	if upper {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// fold maps s to a representative of its class under simple Unicode case
// folding (the classes strings.EqualFold uses, which include the Kelvin
// sign and the long s that encoding/json also matches).
func fold(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		lo := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			lo = min(lo, f)
		}
		b.WriteRune(lo)
	}
	return b.String()
}

// checkSurrogates scans the string literals of b for \u escapes of UTF-16
// surrogates that are not a high surrogate followed directly by a low one.
func checkSurrogates(b []byte) error {
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !inString {
			if c == '"' {
				inString = true
			}
			continue
		}
		switch c {
		case '"':
			inString = false
		case '\\':
			if i+1 >= len(b) {
				return nil // the decoder reports the syntax error
			}
			if b[i+1] != 'u' {
				i++ // a two-byte escape such as \\ or \"
				continue
			}
			r, ok := hex4(b, i+2)
			if !ok {
				return nil // the decoder reports it
			}
			switch {
			case r >= 0xDC00 && r <= 0xDFFF:
				return ErrInvalidText // a low surrogate with no high one
			case r >= 0xD800 && r <= 0xDBFF:
				lo, ok := -1, i+6+1 < len(b) && b[i+6] == '\\' && b[i+7] == 'u'
				if ok {
					lo, ok = hex4(b, i+8)
				}
				if !ok || lo < 0xDC00 || lo > 0xDFFF {
					return ErrInvalidText
				}
				i += 11
			default:
				i += 5
			}
		}
	}
	return nil
}

func hex4(b []byte, at int) (int, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	v := 0
	for _, c := range b[at : at+4] {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | int(c-'0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | int(c-'a'+10)
		case c >= 'A' && c <= 'F':
			v = v<<4 | int(c-'A'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// Decode checks b ([Check]), then that it is an object whose members are
// named exactly as v's fields (v is a pointer to a struct; nested structs
// are checked the same way), and decodes it into v.
func Decode(b []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("strictjson: Decode needs a non-nil pointer to a struct, got %T", v)
	}
	trimmed := bytes.TrimLeft(b, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] != '{' {
		if err := Check(b); err != nil {
			return err
		}
		return ErrNotObject
	}
	st := shapeOf(rv.Elem().Type())
	var buf [8]string
	names, err := check(b, buf[:0])
	if err != nil {
		return err
	}
	if len(trimmed) == 0 {
		return ErrSyntax
	}
	if st.nested {
		// Nested structs: match every level's names.
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(b, &raw); err != nil {
			return ErrSyntax
		}
		if err := matchNames(raw, rv.Elem().Type()); err != nil {
			return err
		}
	} else {
		for _, n := range names {
			if _, ok := st.fields[n]; !ok {
				return ErrUnknown
			}
		}
	}
	// Every member names exactly one field (checked above, at every level),
	// so encoding/json's case-insensitive matching has nothing to choose.
	if err := json.Unmarshal(b, v); err != nil {
		return ErrType
	}
	return nil
}

// shape is what Decode needs to know of a struct type.
type shape struct {
	fields map[string]reflect.Type
	nested bool // a field is a struct or a slice of structs
}

var shapes sync.Map // reflect.Type → *shape

func shapeOf(t reflect.Type) *shape {
	if s, ok := shapes.Load(t); ok {
		return s.(*shape)
	}
	s := &shape{fields: jsonFields(t)}
	for _, ft := range s.fields {
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice || ft.Kind() == reflect.Array {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != reflect.TypeOf(time.Time{}) {
			s.nested = true
		}
	}
	shapes.Store(t, s)
	return s
}

// matchNames checks that every member of obj names a field of t exactly,
// and recurses into members whose field is a struct or a slice of them.
func matchNames(obj map[string]json.RawMessage, t reflect.Type) error {
	fields := jsonFields(t)
	for name, val := range obj {
		ft, ok := fields[name]
		if !ok {
			return ErrUnknown
		}
		if err := matchValue(val, ft); err != nil {
			return err
		}
	}
	return nil
}

func matchValue(val json.RawMessage, ft reflect.Type) error {
	for ft.Kind() == reflect.Pointer {
		ft = ft.Elem()
	}
	v := bytes.TrimLeft(val, " \t\r\n")
	switch {
	case ft.Kind() == reflect.Struct && len(v) > 0 && v[0] == '{':
		var inner map[string]json.RawMessage
		if err := json.Unmarshal(v, &inner); err != nil {
			return ErrSyntax
		}
		return matchNames(inner, ft)
	case ft.Kind() == reflect.Slice && len(v) > 0 && v[0] == '[':
		et := ft.Elem()
		for et.Kind() == reflect.Pointer {
			et = et.Elem()
		}
		if et.Kind() != reflect.Struct {
			return nil
		}
		var items []json.RawMessage
		if err := json.Unmarshal(v, &items); err != nil {
			return ErrSyntax
		}
		for _, it := range items {
			if err := matchValue(it, et); err != nil {
				return err
			}
		}
	}
	return nil
}

// jsonFields maps the exact JSON member names of t's exported fields to
// their types, as encoding/json names them (tag name, else field name;
// "-" skipped). Embedded structs are not used by the bodies decoded here
// and are refused as unknown.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() || f.Anonymous {
			continue
		}
		name := f.Name
		if tag, ok := f.Tag.Lookup("json"); ok {
			n, _, _ := strings.Cut(tag, ",")
			if n == "-" {
				continue
			}
			if n != "" {
				name = n
			}
		}
		out[name] = f.Type
	}
	return out
}
