package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"unicode/utf8"
)

// Whatever Check accepts is valid JSON whose objects decode with as many
// members as the text has, and Decode never panics.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"from":"a","to":"b","amount":5}`, `{"amount":1000,"AMOUNT":3}`, `{"amount":1,"amount":2}`,
		`{"meta":{"note":"x"},"tags":[{"note":"y"}]}`, `{"from":"\ud83d\ude00"}`, `{"from":"\ud800"}`,
		`{"from":"\\ud800"}`, "{\"\u212aey\":1,\"key\":2}", `[1,{"a":{"b":[]}}]`, `{"a":1} {}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v transfer
		_ = Decode(b, &v)
		if Check(b) != nil {
			return
		}
		if !json.Valid(b) {
			t.Fatalf("Check accepted invalid JSON %q", b)
		}
		if bytes.ContainsRune(b, '\uFFFD') {
			return
		}
		var any1 any
		if err := json.Unmarshal(b, &any1); err != nil {
			t.Fatalf("Check accepted %q that does not unmarshal: %v", b, err)
		}
		re, _ := json.Marshal(any1)
		if bytes.ContainsRune(re, '\uFFFD') {
			t.Fatalf("Check accepted %q, which decodes with a replacement character", b)
		}
	})
}

// referenceCheck is the straightforward checker the fast scanner replaced:
// encoding/json's tokenizer, one token at a time. The fuzz target holds
// the two to the same verdicts.
func referenceCheck(b []byte) error {
	if !utf8.Valid(b) {
		return ErrInvalidText
	}
	if err := checkSurrogates(b); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := refWalk(dec, 0); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return ErrTrailing
	}
	return nil
}

func refWalk(dec *json.Decoder, depth int) error {
	tok, err := dec.Token()
	if err != nil {
		return ErrSyntax
	}
	if n, ok := tok.(json.Number); ok {
		if _, err := n.Float64(); err != nil {
			return ErrRange
		}
		return nil
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	if depth >= MaxDepth {
		return ErrDepth
	}
	switch d {
	case '[':
		for dec.More() {
			if err := refWalk(dec, depth+1); err != nil {
				return err
			}
		}
	case '{':
		exact, folded := map[string]bool{}, map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return ErrSyntax
			}
			name, ok := tok.(string)
			if !ok {
				return ErrSyntax
			}
			if exact[name] {
				return ErrDuplicate
			}
			if folded[fold(name)] {
				return ErrCaseVariant
			}
			exact[name], folded[fold(name)] = true, true
			if err := refWalk(dec, depth+1); err != nil {
				return err
			}
		}
	default:
		return ErrSyntax
	}
	if _, err := dec.Token(); err != nil {
		return ErrSyntax
	}
	return nil
}

// The fast checker and the reference agree on every input: both accept,
// or both refuse (the first fault found may differ when a body has
// several).
func FuzzCheckMatchesReference(f *testing.F) {
	for _, s := range []string{
		`{"from":"a","to":"b","amount":5}`, `{"amount":1000,"AMOUNT":3}`, `{"a":{"b":1,"b":2}}`,
		`[{"x":1},{"x":1}]`, `{"a\u0041":1,"aA":2}`, `{"k":1,"\u212a":2}`, `{"s":1,"\u017f":2}`,
		`{"a":"\\","a":1}`, `{"a":1} {}`, `{"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
		`"str"`, `1e5`, `1E700`, `[-1e309,1]`, `{"a":1e-400}`, `{"":1,"":2}`, `{"a":1,}`, `{"ß":1,"SS":2}`, `{"ǅ":1,"ǆ":2}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fast, ref := Check(b), referenceCheck(b)
		if (fast == nil) != (ref == nil) {
			t.Fatalf("Check(%q) = %v, reference = %v", b, fast, ref)
		}
	})
}

// Names with escapes, non-ASCII case classes and many members.
func TestScannerCases(t *testing.T) {
	many := `{`
	for i := range 40 {
		if i > 0 {
			many += ","
		}
		many += `"k` + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `":1`
	}
	for _, tc := range []struct {
		body string
		want error
	}{
		{`{"a\u0041":1,"aA":2}`, ErrDuplicate},
		{`{"aa":1,"a\u0041":2}`, ErrCaseVariant},
		{`{"\u212a":1,"k":2}`, ErrCaseVariant},
		{`{"ǅ":1,"ǆ":2}`, ErrCaseVariant},
		{`{"a":{"x":1},"b":{"x":1}}`, nil},
		{`[{"x":1},{"x":1}]`, nil},
		{`{"a":"b,\"c\":1","c":2}`, nil},
		{many + `}`, nil},
		{many + `,"KAA":2}`, ErrCaseVariant},
		{many + `,"kaa":2}`, ErrDuplicate},
	} {
		if err := Check([]byte(tc.body)); !errors.Is(err, tc.want) && (tc.want != nil || err != nil) {
			t.Errorf("Check(%s) = %v, want %v", tc.body, err, tc.want)
		}
		if err := referenceCheck([]byte(tc.body)); (err == nil) != (tc.want == nil) {
			t.Errorf("reference(%s) = %v, want %v", tc.body, err, tc.want)
		}
	}
}
