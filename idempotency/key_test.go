package idempotency_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/malai-sec/malai/idempotency"
)

var keyCases = []struct {
	in, want string
	ok       bool
}{
	{`"abc"`, "abc", true},
	{`  "abc"  `, "abc", true},
	{`"8e03978e-40d5-43e8-bc93-6894a57f9324"`, "8e03978e-40d5-43e8-bc93-6894a57f9324", true},
	{`"a\"b\\c"`, `a"b\c`, true},
	{`"with space"`, "with space", true},
	{`"k";v=1`, "k", true},
	{`"k"; a; b=?0;c="x";d=:aGk=:;e=tok/1;f=-1.5;g=@1700000000;h=%"caf%c3%a9"`, "k", true},
	{`"` + strings.Repeat("a", 255) + `"`, strings.Repeat("a", 255), true},
	{`"` + strings.Repeat("a", 256) + `"`, "", false},
	{`""`, "", false},
	{``, "", false},
	{`abc`, "", false},
	{`"abc`, "", false},
	{`"abc" x`, "", false},
	{`"a", "b"`, "", false},
	{`"a\nb"`, "", false},
	{"\"a\x7fb\"", "", false},
	{"\"caf\u00e9\"", "", false},
	{"\t\"abc\"", "", false},
	{`"k";V=1`, "", false},
	{`"k";a=`, "", false},
	{`"k";a=1.2345`, "", false},
	{`"k";a=1234567890123456`, "", false},
	{`"k";a=:not base64!:`, "", false},
	{`"k";a=%"%C3%A9"`, "", false},
	{`"k";a=%"%ff"`, "", false},
	{`"k";a=?2`, "", false},
	{`:YWJj:`, "", false},
	{`42`, "", false},
}

func TestParseKey(t *testing.T) {
	for _, tc := range keyCases {
		got, err := idempotency.ParseKey(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseKey(%q) = %q, %v; want %q ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// Bare keys: what ParseBareKey adds to ParseKey, and what it still refuses.
var bareCases = []struct {
	in, want string
	ok       bool
}{
	{`abc`, "abc", true},
	{`8e03978e-40d5-43e8-bc93-6894a57f9324`, "8e03978e-40d5-43e8-bc93-6894a57f9324", true},
	{` tok/+=:._~!#$%&'()*<>?@[]^{|}- `, `tok/+=:._~!#$%&'()*<>?@[]^{|}-`, true},
	{`"abc"`, "abc", true}, // quoted: parsed as a structured-field string
	{`42`, "42", true},
	{strings.Repeat("a", 255), strings.Repeat("a", 255), true},
	{strings.Repeat("a", 256), "", false},
	{`with space`, "", false},
	{`a,b`, "", false},
	{`k;v=1`, "", false},
	{`a"b`, "", false},
	{`a\b`, "", false},
	{"a\x00b", "", false},
	{"café", "", false},
	{`"abc`, "", false},
	{``, "", false},
	{`   `, "", false},
}

func TestParseBareKey(t *testing.T) {
	for _, tc := range bareCases {
		got, err := idempotency.ParseBareKey(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseBareKey(%q) = %q, %v; want %q, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
		if _, err := idempotency.ParseKey(tc.in); err == nil && !strings.HasPrefix(strings.TrimSpace(tc.in), `"`) {
			t.Errorf("strict ParseKey accepted the bare %q", tc.in)
		}
	}
	// Everything the strict parser accepts, the lenient one accepts the same way.
	for _, tc := range keyCases {
		if !tc.ok {
			continue
		}
		if got, err := idempotency.ParseBareKey(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseBareKey(%q) = %q, %v; want %q like ParseKey", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseBareKey(f *testing.F) {
	for _, tc := range bareCases {
		f.Add(tc.in)
	}
	for _, tc := range keyCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		k, err := idempotency.ParseBareKey(in)
		if err != nil {
			if k != "" {
				t.Fatalf("error with a key %q", k)
			}
			return
		}
		if len(k) == 0 || len(k) > idempotency.MaxKeyLen {
			t.Fatalf("accepted key of length %d", len(k))
		}
		for i := 0; i < len(k); i++ {
			if k[i] < 0x20 || k[i] > 0x7e {
				t.Fatalf("accepted byte %#x", k[i])
			}
		}
		if strict, err := idempotency.ParseKey(in); err == nil && strict != k {
			t.Fatalf("strict and lenient parsers disagree on %q: %q vs %q", in, strict, k)
		}
		// A key can always be sent quoted and names the same record.
		if back, err := idempotency.ParseBareKey(idempotency.FormatKey(k)); err != nil || back != k {
			t.Fatalf("FormatKey round trip: %q -> %q, %v", k, back, err)
		}
	})
}

func FuzzParseKey(f *testing.F) {
	for _, tc := range keyCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		k, err := idempotency.ParseKey(in)
		if err != nil {
			if k != "" {
				t.Fatalf("error with a key %q", k)
			}
			return
		}
		if len(k) == 0 || len(k) > idempotency.MaxKeyLen {
			t.Fatalf("accepted key of length %d", len(k))
		}
		for i := 0; i < len(k); i++ {
			if k[i] < 0x20 || k[i] > 0x7e {
				t.Fatalf("accepted byte %#x", k[i])
			}
		}
		back, err := idempotency.ParseKey(idempotency.FormatKey(k))
		if err != nil || back != k {
			t.Fatalf("FormatKey round trip: %q -> %q, %v", k, back, err)
		}
	})
}

func TestRecordKeyUnambiguous(t *testing.T) {
	a := idempotency.RecordKey("alice", "POST", "POST /transfers", "k1")
	seen := map[string]string{a: "base"}
	for name, k := range map[string]string{
		"principal": idempotency.RecordKey("bob", "POST", "POST /transfers", "k1"),
		"method":    idempotency.RecordKey("alice", "PATCH", "POST /transfers", "k1"),
		"pattern":   idempotency.RecordKey("alice", "POST", "POST /accounts", "k1"),
		"key":       idempotency.RecordKey("alice", "POST", "POST /transfers", "k2"),
		"shifted":   idempotency.RecordKey("alicePOST", "", "POST /transfers", "k1"),
		"shifted2":  idempotency.RecordKey("alice", "POST", "POST /transfersk", "1"),
	} {
		if prev, dup := seen[k]; dup {
			t.Fatalf("%s collides with %s", name, prev)
		}
		seen[k] = name
	}
	if a != idempotency.RecordKey("alice", "POST", "POST /transfers", "k1") {
		t.Fatal("RecordKey is not deterministic")
	}
}

func TestFingerprint(t *testing.T) {
	h := http.Header{"X-Api-Version": {"2"}}
	base := idempotency.Fingerprint([]byte("body"), h, "X-Api-Version")
	if base == idempotency.Fingerprint([]byte("body"), http.Header{"X-Api-Version": {"3"}}, "X-Api-Version") {
		t.Fatal("header value ignored")
	}
	if base != idempotency.Fingerprint([]byte("body"), h, "x-api-version") {
		t.Fatal("header name case matters")
	}
	if base == idempotency.Fingerprint([]byte("body"), h) {
		t.Fatal("naming a header does not change the fingerprint")
	}
	if idempotency.Fingerprint([]byte("a"), nil) == idempotency.Fingerprint([]byte("b"), nil) {
		t.Fatal("body ignored")
	}
}

func TestStoreKeyMatchesRecordKey(t *testing.T) {
	// The HTTP path hashes without building the string; both must agree,
	// or a worker using RecordKey would miss the HTTP record.
	cases := [][4]string{{"alice", "POST", "POST /transfers", "k"}, {"", "", "", ""}, {strings.Repeat("p", 600), "POST", "/x", strings.Repeat("k", 255)}}
	for _, c := range cases {
		if idempotency.StoreKeyForTest(idempotency.RecordKey(c[0], c[1], c[2], c[3])) != idempotency.HTTPStoreKeyForTest(c[0], c[1], c[2], c[3]) {
			t.Fatalf("store keys differ for %q", c)
		}
	}
}
