package correlation

import (
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"
)

var idCases = []struct {
	name string
	in   string
	ok   bool
}{
	{"ulid", "01JD8Z6X8W2Q4K0V3N5R7T9Y1B", true},
	{"uuid", "3f2b8c1e-9a4d-4e7b-8f6a-1c2d3e4f5a6b", true},
	{"dots and underscores", "svc.gw_0001", true},
	{"min length", "abcdefgh", true},
	{"max length", strings.Repeat("a", MaxIDLength), true},
	{"too short", "abcdefg", false},
	{"oversized", strings.Repeat("a", MaxIDLength+1), false},
	{"empty", "", false},
	{"space", "abc def ghi", false},
	{"newline injection", "abcdefgh\nlevel=ERROR", false},
	{"quote", `abcdefgh"x`, false},
	{"equals", "abcdefgh=x", false},
	{"slash", "host/abcdefgh-01", false},
	{"non-ascii", "abcdéfghij", false},
	{"nul", "abcdefgh\x00", false},
	{"header folding", "abcdefgh\r\n X-Evil: 1", false},
}

func TestValidID(t *testing.T) {
	for _, tc := range idCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := ValidID(tc.in); got != tc.ok {
				t.Fatalf("ValidID(%q) = %v, want %v", tc.in, got, tc.ok)
			}
		})
	}
}

func TestNewIDFormatAndOrder(t *testing.T) {
	base := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	var ids []string
	seen := map[string]bool{}
	for i := range 200 {
		id := NewID(base.Add(time.Duration(i) * time.Millisecond))
		if len(id) != IDLength || !ValidID(id) {
			t.Fatalf("NewID = %q: length %d, valid %v", id, len(id), ValidID(id))
		}
		for _, c := range id {
			if !strings.ContainsRune(crockford, c) {
				t.Fatalf("NewID = %q has %q outside the Crockford alphabet", id, c)
			}
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
		ids = append(ids, id)
	}
	if !sort.StringsAreSorted(ids) {
		t.Fatal("ids of increasing milliseconds do not sort in order")
	}
	// The timestamp is the first 10 characters (48 bits): check it
	// against a known ULID encoding of 1469918176385 ms.
	got := NewID(time.UnixMilli(1469918176385))[:10]
	if got != "01ARYZ6S41" {
		t.Fatalf("timestamp part = %q, want 01ARYZ6S41", got)
	}
}

func FuzzValidID(f *testing.F) {
	for _, tc := range idCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !ValidID(s) {
			return
		}
		if len(s) < MinIDLength || len(s) > MaxIDLength {
			t.Fatalf("accepted %q of length %d", s, len(s))
		}
		if strings.IndexFunc(s, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
		}) >= 0 {
			t.Fatalf("accepted %q with a character outside the set", s)
		}
	})
}

func TestHeaderKeyCanonical(t *testing.T) {
	if got := http.CanonicalHeaderKey(HeaderName); got != headerKey {
		t.Fatalf("canonical %q != headerKey %q", got, headerKey)
	}
}
