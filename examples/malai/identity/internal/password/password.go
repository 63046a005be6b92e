// Package password holds the identity domain's password rules and its
// argon2id hashing.
//
// Two policies exist. [Page] is the rule the Malai security page promises:
// at least twelve characters with a lower-case letter, an upper-case letter,
// a digit and a symbol. [NIST] is the NIST SP 800-63B-4 profile for
// single-factor passwords: at least fifteen characters and no composition
// rules. Both cap the length at [MaxLength] code points, refuse passwords
// that contain the username or are a run of very few distinct characters,
// and normalise to Unicode NFKC before counting and hashing, as SP 800-63B-4
// recommends.
//
// Hashes are PHC strings ($argon2id$v=19$m=…,t=…,p=…$salt$key) so that the
// parameters travel with each hash and can be raised later.
package password

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
	"golang.org/x/text/unicode/norm"
)

// Policy selects a password rule set. The zero value is [Page].
type Policy int

const (
	// Page is the security page's rule: >= 12 characters with lower, upper,
	// digit and symbol.
	Page Policy = iota
	// NIST is the SP 800-63B-4 rule: >= 15 characters, no composition rules.
	NIST
)

// MaxLength is the longest password accepted, in code points. SP 800-63B-4
// asks verifiers to accept at least 64.
const MaxLength = 128

// Violation names one broken rule; the values are stable and reach clients.
type Violation string

// Violations reported by [Check].
const (
	TooShort         Violation = "too-short"
	TooLong          Violation = "too-long"
	MissingLower     Violation = "missing-lowercase"
	MissingUpper     Violation = "missing-uppercase"
	MissingDigit     Violation = "missing-digit"
	MissingSymbol    Violation = "missing-symbol"
	ContainsUsername Violation = "contains-username"
	Repetitive       Violation = "repetitive"
)

// MinLength returns the policy's minimum length in code points.
func (p Policy) MinLength() int {
	if p == NIST {
		return 15
	}
	return 12
}

// String names the policy.
func (p Policy) String() string {
	switch p {
	case Page:
		return "page"
	case NIST:
		return "nist-800-63b-4"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// Valid reports whether p is a known policy.
func (p Policy) Valid() bool { return p == Page || p == NIST }

// Normalize returns the NFKC form of pw, the form that is checked and hashed.
func Normalize(pw string) string { return norm.NFKC.String(pw) }

// Check returns the rules pw (already normalised) breaks for the username,
// in a stable order; nil means the password is acceptable to the policy.
// The compromised-password check is separate.
func (p Policy) Check(pw, username string) []Violation {
	var v []Violation
	n := utf8.RuneCountInString(pw)
	if n < p.MinLength() {
		v = append(v, TooShort)
	}
	if n > MaxLength {
		v = append(v, TooLong)
	}
	if p == Page {
		var lower, upper, digit, symbol bool
		for _, r := range pw {
			switch {
			case unicode.IsLower(r):
				lower = true
			case unicode.IsUpper(r):
				upper = true
			case unicode.IsDigit(r):
				digit = true
			case !unicode.IsLetter(r):
				symbol = true
			}
		}
		if !lower {
			v = append(v, MissingLower)
		}
		if !upper {
			v = append(v, MissingUpper)
		}
		if !digit {
			v = append(v, MissingDigit)
		}
		if !symbol {
			v = append(v, MissingSymbol)
		}
	}
	if len(username) >= 3 && strings.Contains(strings.ToLower(pw), strings.ToLower(username)) {
		v = append(v, ContainsUsername)
	}
	distinct := make(map[rune]struct{}, 8)
	for _, r := range pw {
		distinct[r] = struct{}{}
		if len(distinct) >= 5 {
			break
		}
	}
	if n > 0 && len(distinct) < 5 {
		v = append(v, Repetitive)
	}
	return v
}

// Params are argon2id cost parameters.
type Params struct {
	Time      uint32 // passes
	MemoryKiB uint32
	Threads   uint8
}

// Default is the OWASP Password Storage Cheat Sheet's argon2id baseline:
// 19 MiB, 2 passes, 1 lane.
var Default = Params{Time: 2, MemoryKiB: 19 * 1024, Threads: 1}

// Validate reports whether argon2 can run with p.
func (p Params) Validate() error {
	if p.Time == 0 || p.Threads == 0 {
		return errors.New("password: argon2 time and threads must be positive")
	}
	if p.MemoryKiB < 8*uint32(p.Threads) {
		return errors.New("password: argon2 memory must be at least 8 KiB per thread")
	}
	return nil
}

const (
	saltLen = 16
	keyLen  = 32
)

var b64 = base64.RawStdEncoding

// ErrMalformedHash reports a stored hash that is not an argon2id PHC string.
var ErrMalformedHash = errors.New("password: malformed hash")

// Hash hashes pw (already normalised) with a fresh random salt.
func Hash(pw string, p Params) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.MemoryKiB, p.Threads, keyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.MemoryKiB, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// Verify reports whether pw matches the PHC hash, comparing in constant
// time, and whether the hash used parameters other than want (so the caller
// can rehash after a successful sign-in).
func Verify(pw, hash string, want Params) (ok, stale bool, err error) {
	p, salt, key, err := parse(hash)
	if err != nil {
		return false, false, err
	}
	got := argon2.IDKey([]byte(pw), salt, p.Time, p.MemoryKiB, p.Threads, uint32(len(key)))
	ok = subtle.ConstantTimeCompare(got, key) == 1
	return ok, p != want, nil
}

func parse(hash string) (Params, []byte, []byte, error) {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return Params{}, nil, nil, ErrMalformedHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return Params{}, nil, nil, ErrMalformedHash
	}
	var p Params
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Time, &p.Threads); err != nil || p.Validate() != nil {
		return Params{}, nil, nil, ErrMalformedHash
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < 8 {
		return Params{}, nil, nil, ErrMalformedHash
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil || len(key) < 16 {
		return Params{}, nil, nil, ErrMalformedHash
	}
	return p, salt, key, nil
}
