package strictjson

import (
	"errors"
	"strings"
	"testing"
)

type transfer struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Amount int64  `json:"amount"`
	Meta   *meta  `json:"meta,omitempty"`
	Tags   []meta `json:"tags,omitempty"`
	Skip   string `json:"-"`
	Bare   string
}

type meta struct {
	Note string `json:"note"`
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name string
		body string
		want error
	}{
		{"plain", `{"from":"a","to":"b","amount":5}`, nil},
		{"whitespace and order", " {\"amount\": 5 ,\n\"to\":\"b\",\"from\":\"a\"} ", nil},
		{"nested", `{"meta":{"note":"x"},"tags":[{"note":"y"}]}`, nil},
		{"field without tag", `{"Bare":"x"}`, nil},
		{"paired surrogate escape", `{"from":"\ud83d\ude00"}`, nil},
		{"escaped backslash before u", `{"from":"\\ud800"}`, nil},

		{"duplicate", `{"amount":1000,"amount":3}`, ErrDuplicate},
		{"case variant", `{"amount":1000,"AMOUNT":3}`, ErrCaseVariant},
		{"case variant only", `{"AMOUNT":3}`, ErrUnknown},
		{"kelvin sign variant", "{\"from\":\"a\",\"\u212aey\":1,\"key\":2}", ErrCaseVariant},
		{"long s variant of an exact name", "{\"amount\":1,\"from\":\"a\",\"to\":\"b\",\"tag\u017f\":1}", ErrUnknown},
		{"nested duplicate", `{"meta":{"note":"x","note":"y"}}`, ErrDuplicate},
		{"nested case variant in array", `{"tags":[{"note":"x","NOTE":"y"}]}`, ErrCaseVariant},
		{"nested unknown", `{"meta":{"Note":"x"}}`, ErrUnknown},
		{"unknown", `{"from":"a","admin":true}`, ErrUnknown},
		{"dash field", `{"-":"x"}`, ErrUnknown},
		{"skipped field by name", `{"Skip":"x"}`, ErrUnknown},
		{"trailing object", `{"from":"a"}{"from":"b"}`, ErrTrailing},
		{"trailing garbage", `{"from":"a"} x`, ErrTrailing},
		{"not an object", `["from"]`, ErrNotObject},
		{"scalar", `5`, ErrNotObject},
		{"empty", ``, ErrSyntax},
		{"truncated", `{"from":"a"`, ErrSyntax},
		{"invalid utf-8", "{\"from\":\"\xff\"}", ErrInvalidText},
		{"lone high surrogate", `{"from":"\ud800"}`, ErrInvalidText},
		{"lone low surrogate", `{"from":"\udc00x"}`, ErrInvalidText},
		{"high then non-low", `{"from":"\ud800\u0041"}`, ErrInvalidText},
		{"fraction amount", `{"amount":1.5}`, ErrType},
		{"exponent amount", `{"amount":1e3}`, ErrType},
		{"string amount", `{"amount":"5"}`, ErrType},
		{"overflowing amount", `{"amount":99999999999999999999}`, ErrType},
		{"too deep", `{"meta":` + deep(40) + `}`, ErrDepth},
		{"number beyond a double", `{"amount":1E700}`, ErrRange},
		{"negative number beyond a double", `{"from":"a","tags":[{"note":"x"}],"amount":-1e309}`, ErrRange},
		{"nested number beyond a double", `{"meta":{"note":[1.7976931348623159e308]}}`, ErrRange},
		{"integer literal beyond a double", `{"amount":1` + strings.Repeat("0", 400) + `}`, ErrRange},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var v transfer
			err := Decode([]byte(tc.body), &v)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Decode(%q) = %v, want %v", tc.body, err, tc.want)
			}
		})
	}
}

// Check holds every number to the range of a double (the body is then
// the same value to any JSON parser behind it) and lets through what
// only rounds: underflow to zero, the largest double, long fractions.
func TestCheckNumberRange(t *testing.T) {
	for _, tc := range []struct {
		body string
		want error
	}{
		{`1E700`, ErrRange},
		{`[0,1e309]`, ErrRange},
		{`{"a":{"b":-1.8e308}}`, ErrRange},
		{`1` + strings.Repeat("0", 309), ErrRange},
		{`{"a":1e-400}`, nil},
		{`1.7976931348623157e308`, nil},
		{`-1.7976931348623157E+308`, nil},
		{`1` + strings.Repeat("0", 300), nil},
		{`0.` + strings.Repeat("0", 400) + `1`, nil},
		{`{"s":"1e999","t":true,"n":null}`, nil},
	} {
		if err := Check([]byte(tc.body)); !errors.Is(err, tc.want) && (tc.want != nil || err != nil) {
			t.Errorf("Check(%.40s) = %v, want %v", tc.body, err, tc.want)
		}
		if err := referenceCheck([]byte(tc.body)); (err == nil) != (tc.want == nil) {
			t.Errorf("reference(%.40s) = %v, want %v", tc.body, err, tc.want)
		}
	}
}

func deep(n int) string {
	s := ""
	for range n {
		s += "["
	}
	for range n {
		s += "]"
	}
	return s
}

// The value checked is the value executed: the last duplicate can never
// win, because there is none.
func TestDecodeValues(t *testing.T) {
	var v transfer
	if err := Decode([]byte(`{"from":"acc-a","to":"acc-b","amount":1000}`), &v); err != nil {
		t.Fatal(err)
	}
	if v.From != "acc-a" || v.To != "acc-b" || v.Amount != 1000 {
		t.Fatalf("decoded %+v", v)
	}
	if err := Decode([]byte(`{}`), v); err == nil {
		t.Fatal("Decode into a non-pointer accepted")
	}
}
