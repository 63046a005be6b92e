package password

import (
	"slices"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name   string
		policy Policy
		pw     string
		user   string
		want   []Violation
	}{
		{"page ok", Page, "Tr1cky-Harbour", "alice", nil},
		{"page 12 exactly", Page, "Abcdefgh1!xy", "alice", nil},
		{"page 11", Page, "Abcdefg1!xy", "alice", []Violation{TooShort}},
		{"page no upper", Page, "tr1cky-harbour", "alice", []Violation{MissingUpper}},
		{"page no lower", Page, "TR1CKY-HARBOUR", "alice", []Violation{MissingLower}},
		{"page no digit", Page, "Tricky-Harbour", "alice", []Violation{MissingDigit}},
		{"page no symbol", Page, "Tr1ckyHarbour", "alice", []Violation{MissingSymbol}},
		{"page long lowercase passphrase fails composition", Page, "correct horse battery staple", "alice",
			[]Violation{MissingUpper, MissingDigit}},
		{"page unicode letters count as letters", Page, "Ünïcödé-pässwörd9", "alice", nil},
		{"page contains username", Page, "Alice-Harbour-1", "alice", []Violation{ContainsUsername}},
		{"page too long", Page, "Aa1!" + strings.Repeat("xyzw", 32), "alice", []Violation{TooLong}},
		{"page repetitive", Page, "Aa1!Aa1!Aa1!", "alice", []Violation{Repetitive}},
		{"nist ok passphrase without composition", NIST, "correct horse battery staple", "alice", nil},
		{"nist 15 exactly", NIST, "abcdefghijklmno", "alice", nil},
		{"nist 14", NIST, "abcdefghijklmn", "alice", []Violation{TooShort}},
		{"nist page-valid 12 is too short", NIST, "Tr1cky-Harb!", "alice", []Violation{TooShort}},
		{"nist counts code points not bytes", NIST, "ééééébcdefghijk", "alice", nil},
		{"nist contains username", NIST, "my name is alice and more", "alice", []Violation{ContainsUsername}},
		{"nist repetitive", NIST, "aaaaaaaaaaaaaaaaaaaa", "alice", []Violation{Repetitive}},
		{"nist empty", NIST, "", "alice", []Violation{TooShort}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.policy.Check(Normalize(tt.pw), tt.user)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Check(%q) = %v, want %v", tt.pw, got, tt.want)
			}
		})
	}
}

func TestNormalizeNFKC(t *testing.T) {
	// "ﬁ" (U+FB01) and "fi" must be the same password.
	if Normalize("ﬁsh-Password-1") != Normalize("fish-Password-1") {
		t.Fatal("NFKC normalisation not applied")
	}
}

var fast = Params{Time: 1, MemoryKiB: 64, Threads: 1}

func TestHashVerify(t *testing.T) {
	h, err := Hash("Tr1cky-Harbour", fast)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("unexpected PHC prefix: %s", h)
	}
	h2, _ := Hash("Tr1cky-Harbour", fast)
	if h == h2 {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
	ok, stale, err := Verify("Tr1cky-Harbour", h, fast)
	if err != nil || !ok || stale {
		t.Fatalf("Verify(right) = %v, %v, %v", ok, stale, err)
	}
	ok, _, err = Verify("Tr1cky-HarbouR", h, fast)
	if err != nil || ok {
		t.Fatalf("Verify(wrong) = %v, %v", ok, err)
	}
	_, stale, _ = Verify("Tr1cky-Harbour", h, Params{Time: 2, MemoryKiB: 64, Threads: 1})
	if !stale {
		t.Fatal("changed parameters not reported as stale")
	}
}

func TestVerifyMalformed(t *testing.T) {
	for _, h := range []string{
		"", "plain", "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=18$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=0,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=64,t=1,p=1$!!$a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5",
	} {
		if _, _, err := Verify("x", h, fast); err == nil {
			t.Errorf("Verify accepted malformed hash %q", h)
		}
	}
}

func TestParamsValidate(t *testing.T) {
	if Default.Validate() != nil {
		t.Fatal("default params invalid")
	}
	for _, p := range []Params{{}, {Time: 1, MemoryKiB: 4, Threads: 1}, {Time: 1, MemoryKiB: 64}} {
		if p.Validate() == nil {
			t.Errorf("Validate(%+v) = nil", p)
		}
	}
}
