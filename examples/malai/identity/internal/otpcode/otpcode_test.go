package otpcode

import (
	"strings"
	"testing"
	"time"
)

func TestValidateReplay(t *testing.T) {
	enr, err := Generate("Malai", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enr.URL, "otpauth://totp/Malai:alice?") || len(enr.Secret) != 32 {
		t.Fatalf("enrolment: %q (secret %d chars)", enr.URL, len(enr.Secret))
	}
	now := time.Date(2026, 1, 1, 12, 0, 10, 0, time.UTC)
	code, err := Code(enr.Secret, now)
	if err != nil {
		t.Fatal(err)
	}
	step, err := Validate(code, enr.Secret, now, 0)
	if err != nil {
		t.Fatalf("valid code refused: %v", err)
	}
	if _, err := Validate(code, enr.Secret, now.Add(5*time.Second), step); err == nil {
		t.Fatal("replayed code accepted")
	}
	// An older code (previous step, within skew) is also refused once a
	// later step was used.
	old, _ := Code(enr.Secret, now.Add(-Period))
	if _, err := Validate(old, enr.Secret, now, step); err == nil {
		t.Fatal("code of an earlier step accepted after a later one")
	}
	next, _ := Code(enr.Secret, now.Add(Period))
	if s2, err := Validate(next, enr.Secret, now.Add(Period), step); err != nil || s2 != step+1 {
		t.Fatalf("next step refused: %v (step %d)", err, s2)
	}
	// Skew: one step late still accepted, two steps late not.
	late, _ := Code(enr.Secret, now)
	if _, err := Validate(late, enr.Secret, now.Add(Period), 0); err != nil {
		t.Fatal("code one step old refused")
	}
	if _, err := Validate(late, enr.Secret, now.Add(3*Period), 0); err == nil {
		t.Fatal("code three steps old accepted")
	}
	for _, bad := range []string{"", "12345", "1234567", "abcdef", "12 456"} {
		if _, err := Validate(bad, enr.Secret, now, 0); err == nil {
			t.Errorf("malformed code %q accepted", bad)
		}
	}
}

func TestRecoveryCodes(t *testing.T) {
	codes, digests, err := NewRecoveryCodes()
	if err != nil {
		t.Fatal(err)
	}
	if len(codes) != RecoveryCodes || len(digests) != RecoveryCodes {
		t.Fatalf("got %d codes", len(codes))
	}
	seen := map[string]bool{}
	for i, c := range codes {
		if len(c) != 19 || seen[c] {
			t.Fatalf("bad or duplicate code %q", c)
		}
		seen[c] = true
		if got := MatchRecovery(c, digests); got != i {
			t.Fatalf("MatchRecovery(code %d) = %d", i, got)
		}
	}
	// Case and separators do not matter.
	if MatchRecovery(strings.ToUpper(strings.ReplaceAll(codes[3], "-", " ")), digests) != 3 {
		t.Fatal("upper-case, space-separated code not matched")
	}
	if MatchRecovery("aaaa-bbbb-cccc-dddd", digests) != -1 || MatchRecovery(strings.Repeat("a", 100), digests) != -1 {
		t.Fatal("unknown code matched")
	}
}
