// Package strictjson decodes the identity service's request bodies: one
// JSON object whose members are all strings, with exact (case-sensitive)
// names from a fixed set, no duplicates, no unknown members, no trailing
// data and no text that is not valid UTF-8.
//
// encoding/json alone is not strict enough for credentials: it matches
// member names case-insensitively, lets the last of two duplicate members
// win, and silently replaces invalid UTF-8 with U+FFFD, so two different
// byte strings could become the same password.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"unicode/utf8"
)

// Errors returned by [Decode]. A body that exceeds an http.MaxBytesReader
// limit returns the reader's *http.MaxBytesError, wrapped.
var (
	ErrSyntax      = errors.New("strictjson: malformed JSON")
	ErrNotObject   = errors.New("strictjson: body is not a JSON object")
	ErrUnknown     = errors.New("strictjson: unknown member")
	ErrDuplicate   = errors.New("strictjson: duplicate member")
	ErrNotString   = errors.New("strictjson: member is not a string")
	ErrInvalidText = errors.New("strictjson: string is not valid UTF-8")
	ErrTrailing    = errors.New("strictjson: data after the object")
)

// Decode reads one object from r into fields, a map from member name to the
// string it fills. Members absent from the body leave their string as is.
func Decode(r io.Reader, fields map[string]*string) error {
	dec := json.NewDecoder(r)
	tok, err := dec.Token()
	if err != nil {
		return syntax(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return ErrNotObject
	}
	seen := make(map[string]bool, len(fields))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return syntax(err)
		}
		name, ok := tok.(string)
		if !ok {
			return ErrSyntax
		}
		target, ok := fields[name]
		if !ok {
			return ErrUnknown
		}
		if seen[name] {
			return ErrDuplicate
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return syntax(err)
		}
		if len(raw) == 0 || raw[0] != '"' {
			return ErrNotString
		}
		if !utf8.Valid(raw) || bytes.Contains(raw, []byte(`\u`)) && hasLoneSurrogate(raw) {
			return ErrInvalidText
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return ErrSyntax
		}
		*target = s
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return syntax(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return syntax(err)
		}
		return ErrTrailing
	}
	return nil
}

// syntax maps decoder errors to ErrSyntax and passes reader errors (a
// body size limit, a broken connection) through.
func syntax(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrSyntax
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return ErrSyntax
	}
	return err
}

// hasLoneSurrogate reports whether a JSON string literal contains a \u
// escape for a UTF-16 surrogate that is not part of a valid pair; such an
// escape decodes to U+FFFD.
func hasLoneSurrogate(raw []byte) bool {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return false
	}
	if !strings.ContainsRune(s, utf8.RuneError) {
		return false
	}
	// U+FFFD is in the output: legitimate only if the input spelled it.
	return !bytes.Contains(raw, []byte("\uFFFD")) && !bytes.Contains(bytes.ToLower(raw), []byte(`\ufffd`))
}
