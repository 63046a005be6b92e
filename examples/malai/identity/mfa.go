package identity

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/malai-sec/malai/examples/malai/identity/internal/otpcode"
)

// TOTPEnrollment is the body of a successful POST /v1/mfa/totp, for
// clients to decode. The secret is shown this once; the service keeps it
// only to check codes.
type TOTPEnrollment struct {
	Secret Secret `json:"secret"`
	URL    Secret `json:"otpauth_url"`
}

// RecoveryCodes is the body of a successful POST /v1/mfa/totp/confirm,
// for clients to decode: single-use codes, shown once, stored only as
// digests.
type RecoveryCodes struct {
	Codes []Secret `json:"recovery_codes"`
}

// enrolClaims checks the bearer token and that its sign-in is recent.
func (s *Service) enrolClaims(r *http.Request) (userClaims, error) {
	c, err := s.verifyUserToken(r)
	if err != nil {
		return userClaims{}, err
	}
	if s.cfg.Now().Sub(c.authTime) > MFAEnrollMaxAuthAge {
		return userClaims{}, ErrReauthenticate
	}
	return c, nil
}

func (s *Service) serveTOTPEnroll(w http.ResponseWriter, r *http.Request) {
	c, err := s.enrolClaims(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	enr, err := otpcode.Generate(s.cfg.TOTPIssuer, c.username)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.mu.Lock()
	u := s.users[c.username]
	switch {
	case u == nil:
		err = ErrInvalidToken
	case u.totpSecret != "":
		err = ErrMFAAlreadyEnrolled
	default:
		u.totpPending = enr.Secret // a second start replaces the first
	}
	s.mu.Unlock()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	b, _ := json.Marshal(map[string]string{"secret": enr.Secret, "otpauth_url": enr.URL})
	writeJSON(w, http.StatusCreated, b)
}

func (s *Service) serveTOTPConfirm(w http.ResponseWriter, r *http.Request) {
	c, err := s.enrolClaims(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var code string
	if err := decodeJSON(w, r, map[string]*string{"code": &code}); err != nil {
		s.fail(w, r, err)
		return
	}
	codes, digests, err := otpcode.NewRecoveryCodes()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	now := s.cfg.Now()
	s.mu.Lock()
	u := s.users[c.username]
	switch {
	case u == nil:
		err = ErrInvalidToken
	case u.totpSecret != "":
		err = ErrMFAAlreadyEnrolled
	case u.totpPending == "":
		err = ErrMFANotPending
	default:
		var step uint64
		step, err = otpcode.Validate(code, u.totpPending, now, u.totpLastStep)
		if err != nil {
			err = ErrInvalidCode
			break
		}
		u.totpSecret, u.totpPending, u.totpLastStep = u.totpPending, "", step
		u.recovery = digests
	}
	s.mu.Unlock()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.LogAttrs(r.Context(), slog.LevelInfo, "identity: TOTP enrolled", slog.String("user", c.username))
	b, _ := json.Marshal(map[string][]string{"recovery_codes": codes})
	writeJSON(w, http.StatusOK, b)
}
