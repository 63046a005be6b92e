package web

import (
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Identity's account-security routes, all with the user's token.
const (
	pathTOTP        = "/v1/mfa/totp"
	pathTOTPConfirm = "/v1/mfa/totp/confirm"
	pathRecovery    = "/v1/mfa/recovery-codes"
	pathPassword    = "/v1/account/password"
	pathSessionList = "/v1/sessions"
)

var sessionIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// reauthBody is the re-authentication a security change sends: the
// current password, and when the account has a second factor a current
// code from the authenticator app (six digits) or an unused recovery code
// (anything else), as at sign-in.
func reauthBody(r *http.Request) map[string]string {
	b := map[string]string{}
	if pw := r.PostForm.Get("password"); pw != "" {
		b["password"] = pw
	}
	if c := strings.ReplaceAll(strings.TrimSpace(r.PostForm.Get("code")), " ", ""); codeRE.MatchString(c) {
		b["totp_code"] = c
	} else if c != "" {
		b["recovery_code"] = c
	}
	return b
}

func reauthRefused(ae *apiError) bool {
	switch ae.slug() {
	case "reauthentication-required", "reauthentication-failed", "invalid-credentials", "invalid-otp-code", "mfa-required":
		return true
	}
	return false
}

func reauthText(ae *apiError) string {
	switch ae.slug() {
	case "invalid-otp-code", "mfa-required":
		return "Enter your password and the current code from your authenticator app."
	case "reauthentication-required", "reauthentication-failed":
		return "Confirm it is you: enter your current password (and code, if two-step sign-in is on)."
	}
	return "The password or the code is not right."
}

// sessionInfo is one refresh session as identity lists it.
type sessionInfo struct {
	ID        string    `json:"id"`
	Created   time.Time `json:"created_at"`
	LastUsed  time.Time `json:"last_used_at"`
	Current   bool      `json:"current"`
	UserAgent string    `json:"user_agent"`
	Network   string    `json:"network"`
}

type securityData struct {
	MFA        bool
	Rules      []ruleState
	Sessions   []sessionInfo
	NoSessions bool
}

func (a *App) securityPage(w http.ResponseWriter, r *http.Request) {
	a.renderSecurity(w, r, &page{}, nil)
}

func (a *App) renderSecurity(w http.ResponseWriter, r *http.Request, p *page, broken []string) {
	h := a.signedInHandle(r)
	d := securityData{MFA: h.sess.MFA, Rules: ruleStates(broken)}
	err := a.withToken(r, h, func(tok string) error {
		var out struct {
			Sessions []sessionInfo `json:"sessions"`
		}
		_, err := a.up.decode(r.Context(), call{method: http.MethodGet, base: a.up.identity, path: pathSessionList, token: tok}, &out)
		var ae *apiError
		if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
			return err
		}
		d.Sessions, d.NoSessions = out.Sessions, err != nil
		return nil
	})
	if err != nil {
		a.handleSessionErr(w, r, err)
		return
	}
	p.Title, p.Nav, p.Data = "Security", "security", d
	a.render(w, r, "security", p)
}

func (a *App) changePassword(w http.ResponseWriter, r *http.Request) {
	h := a.signedInHandle(r)
	cur, next, confirm := r.PostForm.Get("password"), r.PostForm.Get("new_password"), r.PostForm.Get("confirm")
	p := &page{}
	if cur == "" {
		p.fail("password", "Enter your current password.")
	}
	if next == "" {
		p.fail("new_password", "Choose a new password.")
	} else if next != confirm {
		p.fail("confirm", "The two new passwords differ.")
	}
	if len(p.Errors) > 0 {
		a.renderSecurity(w, r, p, nil)
		return
	}
	body := reauthBody(r)
	body["new_password"] = next
	var res result
	err := a.withToken(r, h, func(tok string) (err error) {
		res, err = a.up.do(r.Context(), call{method: http.MethodPost, base: a.up.identity, path: pathPassword, token: tok, body: body, clientIP: a.clientIP(r)})
		return err
	})
	var ae *apiError
	switch {
	case err == nil:
	case errors.As(err, &ae) && ae.slug() == "password-policy":
		p.fail("new_password", "The new password breaks the rules marked below.")
		a.renderSecurity(w, r, p, ae.Violations)
		return
	case errors.As(err, &ae) && ae.slug() == "password-compromised":
		p.fail("new_password", "This password appears in a list of passwords leaked in data breaches. Choose another one.")
		a.renderSecurity(w, r, p, nil)
		return
	case errors.As(err, &ae) && reauthRefused(ae):
		p.fail("password", reauthText(ae))
		p.Status = http.StatusUnauthorized
		a.renderSecurity(w, r, p, nil)
		return
	case errors.As(err, &ae) && ae.Status != http.StatusUnauthorized:
		p.fail("new_password", "The password was not changed ("+ae.Title+").")
		a.renderSecurity(w, r, p, nil)
		return
	default:
		a.handleSessionErr(w, r, err)
		return
	}
	// Identity may hand this session new tokens with the change.
	if t, terr := tokensFrom(res, a.sessions.now()); terr == nil {
		h.sess.Access, h.sess.AccessExp, h.sess.Refresh = t.access, t.expires, t.refresh
	}
	h.sess.addFlash("ok", "Your password is changed. Every other session of your account was signed out.")
	if err := a.sessions.rotate(r.Context(), w, h); err != nil {
		a.unavailable(w, r, err)
		return
	}
	http.Redirect(w, r, "/security", http.StatusSeeOther)
}

func (a *App) disableMFA(w http.ResponseWriter, r *http.Request) {
	h := a.signedInHandle(r)
	p := &page{}
	err := a.withToken(r, h, func(tok string) error {
		_, err := a.up.do(r.Context(), call{method: http.MethodPost, base: a.up.identity, path: pathTOTP + "/disable", token: tok, body: reauthBody(r), clientIP: a.clientIP(r)})
		return err
	})
	var ae *apiError
	switch {
	case err == nil:
	case errors.As(err, &ae) && reauthRefused(ae):
		p.fail("off-password", reauthText(ae))
		p.Status = http.StatusUnauthorized
		a.renderSecurity(w, r, p, nil)
		return
	case errors.As(err, &ae) && ae.Status != http.StatusUnauthorized:
		a.flashAndRedirect(w, r, "error", "Two-step sign-in was not turned off ("+ae.Title+").", "/security")
		return
	default:
		a.handleSessionErr(w, r, err)
		return
	}
	h.sess.MFA = false
	h.sess.addFlash("ok", "Two-step sign-in is off. Your recovery codes no longer work.")
	if err := a.sessions.rotate(r.Context(), w, h); err != nil {
		a.unavailable(w, r, err)
		return
	}
	http.Redirect(w, r, "/security", http.StatusSeeOther)
}

func (a *App) regenerateRecovery(w http.ResponseWriter, r *http.Request) {
	h := a.signedInHandle(r)
	p := &page{}
	var out struct {
		Codes []string `json:"recovery_codes"`
	}
	err := a.withToken(r, h, func(tok string) error {
		_, err := a.up.decode(r.Context(), call{method: http.MethodPost, base: a.up.identity, path: pathRecovery, token: tok, body: reauthBody(r), clientIP: a.clientIP(r)}, &out)
		return err
	})
	var ae *apiError
	switch {
	case err == nil && len(out.Codes) > 0:
		a.showRecoveryCodes(w, r, h, out.Codes, "New recovery codes")
	case err == nil:
		a.unavailable(w, r, errors.New("web: answer without recovery codes"))
	case errors.As(err, &ae) && reauthRefused(ae):
		p.fail("rc-password", reauthText(ae))
		p.Status = http.StatusUnauthorized
		a.renderSecurity(w, r, p, nil)
	case errors.As(err, &ae) && ae.Status != http.StatusUnauthorized:
		a.flashAndRedirect(w, r, "error", "No new codes were made ("+ae.Title+").", "/security")
	default:
		a.handleSessionErr(w, r, err)
	}
}

func (a *App) revokeSession(w http.ResponseWriter, r *http.Request) {
	h := a.signedInHandle(r)
	id := r.PostForm.Get("session")
	if !sessionIDRE.MatchString(id) {
		a.flashAndRedirect(w, r, "error", "Choose a session to sign out.", "/security")
		return
	}
	err := a.withToken(r, h, func(tok string) error {
		_, err := a.up.do(r.Context(), call{method: http.MethodDelete, base: a.up.identity, path: pathSessionList + "/" + url.PathEscape(id), token: tok, clientIP: a.clientIP(r)})
		return err
	})
	var ae *apiError
	switch {
	case err == nil:
		a.flashAndRedirect(w, r, "ok", "That session is signed out.", "/security")
	case errors.As(err, &ae) && ae.Status != http.StatusUnauthorized:
		a.flashAndRedirect(w, r, "error", "The session was not signed out ("+ae.Title+").", "/security")
	default:
		a.handleSessionErr(w, r, err)
	}
}
