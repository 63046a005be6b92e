package identity

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/malai-sec/malai/examples/malai/identity/internal/lockout"
	"github.com/malai-sec/malai/examples/malai/identity/internal/otpcode"
	"github.com/malai-sec/malai/examples/malai/identity/store"
)

// TOTPEnrollment is the body of a successful POST /v1/mfa/totp, for
// clients to decode. The secret is shown this once.
type TOTPEnrollment struct {
	Secret Secret `json:"secret"`
	URL    Secret `json:"otpauth_url"`
}

// RecoveryCodes is the body of a successful POST /v1/mfa/totp/confirm or
// POST /v1/mfa/recovery-codes: single-use codes, shown once, stored only
// as digests.
type RecoveryCodes struct {
	Codes []Secret `json:"recovery_codes"`
}

// reauth is the proof an account-security change needs beyond the bearer
// token: the current password and, when the account has a second factor,
// a current TOTP code or an unused recovery code.
type reauth struct {
	Password, TOTPCode, RecoveryCode Secret
}

func (s *Service) checkReauth(ctx context.Context, c caller, p reauth) error {
	if s.cfg.Faults.NoReauth {
		return nil
	}
	// Counted per session: a stolen token is one session's budget, and the
	// owner's own session is not slowed by the thief's guesses.
	key := "r:" + c.user.ID + ":" + c.session
	now := s.cfg.Now()
	t, err := s.st.CountEvents(ctx, []store.Query{{Key: key, Since: now.Add(-s.lock.Window)}})
	if err != nil {
		return storeErr(err)
	}
	if v := s.lock.Reauth(t[0], now); v.Decision == lockout.Throttle {
		s.decision(ctx, slog.LevelWarn, "reauth-throttled", key, []slog.Attr{slog.String("sub", UserSubject(c.user.ID))},
			map[string]any{"sub": UserSubject(c.user.ID), "reasons": v.Reasons, "retry_after_s": int(v.RetryAfter.Seconds())})
		return &ThrottleError{RetryAfter: v.RetryAfter, Reasons: v.Reasons}
	}
	ok, _, err := s.verifyPassword(ctx, p.Password.Reveal(), c.user.PasswordHash)
	if errors.Is(err, ErrUnavailable) {
		return err
	}
	if err != nil || !ok {
		dctx, cancel := durable(ctx)
		defer cancel()
		if err := s.st.AddEvents(dctx, []store.Event{{Key: key, Member: c.session, At: now}}); err != nil {
			s.log.ErrorContext(ctx, "identity: recording a re-authentication failure", "error", err.Error())
		}
		s.log.LogAttrs(ctx, slog.LevelWarn, "identity: re-authentication failed", slog.String("sub", UserSubject(c.user.ID)))
		return ErrReauthenticate
	}
	if c.user.TOTP == nil {
		return nil
	}
	if p.TOTPCode == "" && p.RecoveryCode == "" {
		return ErrMFARequired
	}
	device := ""
	if sess, ok := s.session(ctx, c.user.ID, c.session); ok {
		device = sess.DeviceID
	}
	if _, err := s.secondFactor(ctx, c.user.ID, device, p.TOTPCode.Reveal(), p.RecoveryCode.Reveal()); err != nil {
		if errors.Is(err, ErrInvalidCode) {
			return ErrReauthenticate
		}
		return err
	}
	return nil
}

func (s *Service) session(ctx context.Context, userID, sid string) (store.Session, bool) {
	ss, err := s.st.Sessions(ctx, userID)
	if err != nil {
		return store.Session{}, false
	}
	for _, x := range ss {
		if x.ID == sid {
			return x, true
		}
	}
	return store.Session{}, false
}

// decodeReauth reads a body of the re-authentication members plus extra.
func decodeReauth(w http.ResponseWriter, r *http.Request, extra map[string]*string) (reauth, error) {
	var pw, code, rc string
	fields := map[string]*string{"password": &pw, "totp_code": &code, "recovery_code": &rc}
	for k, v := range extra {
		fields[k] = v
	}
	err := decodeJSON(w, r, fields)
	return reauth{Password: Secret(pw), TOTPCode: Secret(code), RecoveryCode: Secret(rc)}, err
}

// AccountInfo is the body of GET /v1/account.
type AccountInfo struct {
	ID                string    `json:"id"`
	Subject           string    `json:"sub"`
	Username          string    `json:"username"`
	Roles             []string  `json:"roles"`
	Created           time.Time `json:"created_at"`
	PasswordChanged   time.Time `json:"password_changed_at"`
	MFA               bool      `json:"mfa"`
	RecoveryCodesLeft int       `json:"recovery_codes_left"`
}

func (s *Service) serveAccount(w http.ResponseWriter, r *http.Request, c caller) {
	u := c.user
	roles := u.Roles
	if roles == nil {
		roles = []string{}
	}
	b, _ := json.Marshal(AccountInfo{ID: u.ID, Subject: UserSubject(u.ID), Username: s.username(u), Roles: roles,
		Created: u.Created.UTC(), PasswordChanged: u.PasswordChanged.UTC(), MFA: u.TOTP != nil, RecoveryCodesLeft: len(u.Recovery)})
	writeJSON(w, http.StatusOK, b)
}

func (s *Service) servePasswordChange(w http.ResponseWriter, r *http.Request, c caller) {
	var newPW string
	p, err := decodeReauth(w, r, map[string]*string{"new_password": &newPW})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.checkReauth(r.Context(), c, p); err != nil {
		s.fail(w, r, err)
		return
	}
	hash, err := s.newPasswordHash(r.Context(), s.username(c.user), newPW)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := durable(r.Context())
	defer cancel()
	now := s.cfg.Now()
	if _, err := s.updateUser(ctx, c.user.ID, func(u *store.User) error {
		u.PasswordHash, u.MustReset, u.PasswordChanged = hash, false, now
		return nil
	}); err != nil {
		s.fail(w, r, err)
		return
	}
	n, err := s.st.RevokeSessions(ctx, c.user.ID, c.session)
	if err != nil {
		s.fail(w, r, storeErr(err))
		return
	}
	s.auditEvent(r.Context(), AuditPasswordChanged, map[string]any{"sub": UserSubject(c.user.ID), "session": c.session, "sessions_revoked": n})
	b, _ := json.Marshal(map[string]int{"sessions_revoked": n})
	writeJSON(w, http.StatusOK, b)
}

func (s *Service) serveTOTPEnroll(w http.ResponseWriter, r *http.Request, c caller) {
	p, err := decodeReauth(w, r, nil)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if c.user.TOTP != nil {
		s.fail(w, r, ErrMFAAlreadyEnrolled)
		return
	}
	if err := s.checkReauth(r.Context(), c, p); err != nil {
		s.fail(w, r, err)
		return
	}
	enr, err := otpcode.Generate(s.cfg.TOTPIssuer, s.username(c.user))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sealed, err := s.ring.Seal(nil, []byte(enr.Secret), totpAAD(c.user.ID))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := durable(r.Context())
	defer cancel()
	now := s.cfg.Now()
	if _, err := s.updateUser(ctx, c.user.ID, func(u *store.User) error {
		if u.TOTP != nil {
			return ErrMFAAlreadyEnrolled
		}
		// A second start replaces the first.
		u.TOTPPending, u.TOTPPendingAt, u.TOTPPendingSession = sealed, now, c.session
		return nil
	}); err != nil {
		s.fail(w, r, err)
		return
	}
	b, _ := json.Marshal(map[string]string{"secret": enr.Secret, "otpauth_url": enr.URL})
	writeJSON(w, http.StatusCreated, b)
}

func (s *Service) serveTOTPConfirm(w http.ResponseWriter, r *http.Request, c caller) {
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
	ctx, cancel := durable(r.Context())
	defer cancel()
	now := s.cfg.Now()
	_, err = s.updateUser(ctx, c.user.ID, func(u *store.User) error {
		switch {
		case u.TOTP != nil:
			return ErrMFAAlreadyEnrolled
		case u.TOTPPending == nil || u.TOTPPendingSession != c.session || now.Sub(u.TOTPPendingAt) > ReauthMaxAge:
			// Only the session that re-authenticated to start the
			// enrolment may finish it, and only soon after.
			return ErrMFANotPending
		}
		secret, err := s.openTOTP(u.ID, u.TOTPPending)
		if err != nil {
			return err
		}
		step, err := otpcode.Validate(code, secret, now, u.TOTPLastStep)
		if err != nil {
			return ErrInvalidCode
		}
		u.TOTP, u.TOTPPending, u.TOTPPendingSession, u.TOTPLastStep = u.TOTPPending, nil, "", step
		u.TOTPPendingAt = time.Time{}
		u.Recovery = toDigests(digests)
		return nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.auditEvent(r.Context(), AuditMFAEnrolled, map[string]any{"sub": UserSubject(c.user.ID), "session": c.session, "factor": "totp"})
	b, _ := json.Marshal(map[string][]string{"recovery_codes": codes})
	writeJSON(w, http.StatusOK, b)
}

func toDigests(in [][32]byte) []store.Digest {
	out := make([]store.Digest, len(in))
	for i, d := range in {
		out[i] = d
	}
	return out
}

// reauthenticatedMFA reads a re-authentication body for a change to an
// enrolled second factor and checks it; false means the answer is sent.
func (s *Service) reauthenticatedMFA(w http.ResponseWriter, r *http.Request, c caller) bool {
	p, err := decodeReauth(w, r, nil)
	if err == nil && c.user.TOTP == nil {
		err = ErrMFANotEnrolled
	}
	if err == nil {
		err = s.checkReauth(r.Context(), c, p)
	}
	if err != nil {
		s.fail(w, r, err)
		return false
	}
	return true
}

func (s *Service) serveTOTPDisable(w http.ResponseWriter, r *http.Request, c caller) {
	if !s.reauthenticatedMFA(w, r, c) {
		return
	}
	ctx, cancel := durable(r.Context())
	defer cancel()
	if _, err := s.updateUser(ctx, c.user.ID, func(u *store.User) error {
		u.TOTP, u.Recovery, u.TOTPPending, u.TOTPPendingSession = nil, nil, nil, ""
		return nil
	}); err != nil {
		s.fail(w, r, err)
		return
	}
	s.auditEvent(r.Context(), AuditMFADisabled, map[string]any{"sub": UserSubject(c.user.ID), "session": c.session})
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) serveRecoveryCodes(w http.ResponseWriter, r *http.Request, c caller) {
	if !s.reauthenticatedMFA(w, r, c) {
		return
	}
	codes, digests, err := otpcode.NewRecoveryCodes()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := durable(r.Context())
	defer cancel()
	if _, err := s.updateUser(ctx, c.user.ID, func(u *store.User) error {
		if u.TOTP == nil {
			return ErrMFANotEnrolled
		}
		u.Recovery = toDigests(digests)
		return nil
	}); err != nil {
		s.fail(w, r, err)
		return
	}
	s.auditEvent(r.Context(), AuditRecoveryRenewed, map[string]any{"sub": UserSubject(c.user.ID), "session": c.session})
	b, _ := json.Marshal(map[string][]string{"recovery_codes": codes})
	writeJSON(w, http.StatusOK, b)
}
