// Package otpcode adds what github.com/pquerna/otp leaves to the caller:
// replay protection for TOTP codes and single-use recovery codes.
//
// TOTP (RFC 6238) codes are 6 digits, SHA-1, 30-second steps, the settings
// every authenticator app supports. A code is accepted for the current step
// and one step either side, and only if its step is later than the last
// step accepted for the account, so a code (or an older one) cannot be used
// twice (RFC 6238 §5.2).
//
// Recovery codes carry 80 random bits (16 base32 characters) and are stored
// as SHA-256 digests: with that much entropy a fast hash is enough, and a
// leaked digest list cannot be brute-forced.
package otpcode

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
	"github.com/pquerna/otp/totp"
)

// Period is the TOTP time step.
const Period = 30 * time.Second

// Skew is how many steps either side of the current one are accepted.
const Skew = 1

// RecoveryCodes is how many recovery codes an enrolment issues.
const RecoveryCodes = 10

var opts = hotp.ValidateOpts{Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// Enrollment is a freshly generated TOTP secret.
type Enrollment struct {
	Secret string // base32, shown to the user once
	URL    string // otpauth:// URL for QR codes
}

// Generate creates a TOTP secret for the account.
func Generate(issuer, account string) (Enrollment, error) {
	k, err := totp.Generate(totp.GenerateOpts{
		Issuer:      issuer,
		AccountName: account,
		Period:      uint(Period / time.Second),
		SecretSize:  20,
		Digits:      otp.DigitsSix,
		Algorithm:   otp.AlgorithmSHA1,
		Rand:        rand.Reader,
	})
	if err != nil {
		return Enrollment{}, err
	}
	return Enrollment{Secret: k.Secret(), URL: k.URL()}, nil
}

// ErrInvalid reports a wrong, malformed or replayed code.
var ErrInvalid = errors.New("otpcode: invalid code")

// Validate checks code against secret at time now. lastStep is the last
// step accepted for the account (0 if none). On success it returns the
// step that matched, which the caller must store as the new lastStep.
func Validate(code, secret string, now time.Time, lastStep uint64) (uint64, error) {
	code = strings.TrimSpace(code)
	if len(code) != 6 {
		return 0, ErrInvalid
	}
	for _, c := range code {
		if c < '0' || c > '9' {
			return 0, ErrInvalid
		}
	}
	step := uint64(now.Unix()) / uint64(Period/time.Second)
	// Check every candidate step so timing does not depend on which matched.
	var matched uint64
	for d := -Skew; d <= Skew; d++ {
		s := step + uint64(int64(d))
		ok, err := hotp.ValidateCustom(code, s, secret, opts)
		if err != nil {
			return 0, ErrInvalid
		}
		if ok && s > lastStep && s > matched {
			matched = s
		}
	}
	if matched == 0 {
		return 0, ErrInvalid
	}
	return matched, nil
}

// Code returns the TOTP code for secret at t (for tests and examples).
func Code(secret string, t time.Time) (string, error) {
	return totp.GenerateCodeCustom(secret, t, totp.ValidateOpts{
		Period: uint(Period / time.Second), Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1,
	})
}

var recoveryEnc = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewRecoveryCodes returns RecoveryCodes fresh codes (formatted
// "xxxx-xxxx-xxxx-xxxx", lower case) and their digests.
func NewRecoveryCodes() ([]string, [][32]byte, error) {
	codes := make([]string, RecoveryCodes)
	digests := make([][32]byte, RecoveryCodes)
	for i := range codes {
		var b [10]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, nil, err
		}
		s := strings.ToLower(recoveryEnc.EncodeToString(b[:]))
		codes[i] = s[0:4] + "-" + s[4:8] + "-" + s[8:12] + "-" + s[12:16]
		digests[i] = digestRecovery(codes[i])
	}
	return codes, digests, nil
}

// digestRecovery hashes the canonical form: lower case, no separators or
// spaces, so "ABCD EFGH-…" and "abcd-efgh-…" are the same code.
func digestRecovery(code string) [32]byte {
	var b strings.Builder
	for _, r := range strings.ToLower(code) {
		if r != '-' && r != ' ' {
			b.WriteRune(r)
		}
	}
	return sha256.Sum256([]byte(b.String()))
}

// MatchRecovery returns the index of the digest that code matches, or -1.
// Every digest is compared, in constant time.
func MatchRecovery(code string, digests [][32]byte) int {
	if len(code) > 64 {
		return -1
	}
	d := digestRecovery(code)
	found := -1
	for i := range digests {
		if subtle.ConstantTimeCompare(d[:], digests[i][:]) == 1 {
			found = i
		}
	}
	return found
}
