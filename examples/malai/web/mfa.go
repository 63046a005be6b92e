package web

import (
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strings"

	goqr "github.com/piglig/go-qr"
)

// qrSVG renders text as an inline SVG QR code (error correction M, a
// four-module quiet zone). The markup holds only numbers and fixed
// strings, so it is safe to put in the page as is.
func qrSVG(text string) (template.HTML, error) {
	q, err := goqr.EncodeText(text, goqr.Medium)
	if err != nil {
		return "", err
	}
	b, err := q.ToSVGBytes(goqr.NewQrCodeImgConfig(8, 32))
	if err != nil {
		return "", err
	}
	svg := strings.Replace(string(b), "<svg ", `<svg role="img" aria-labelledby="qr-title" width="264" height="264" `, 1)
	svg = strings.Replace(svg, ">", `><title id="qr-title">QR code of the authenticator set-up link</title>`, 1)
	return template.HTML(svg), nil
}

type mfaData struct {
	Enrolled bool
	QR       template.HTML
	Secret   string
	Issuer   string
	Account  string
}

// formatSecret groups a base32 secret in fours for typing.
func formatSecret(s string) string {
	var b strings.Builder
	for i, c := range s {
		if i > 0 && i%4 == 0 {
			b.WriteByte(' ')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func (a *App) mfaPage(w http.ResponseWriter, r *http.Request) {
	a.renderMFA(w, r, &page{})
}

func (a *App) renderMFA(w http.ResponseWriter, r *http.Request, p *page) {
	h := a.signedInHandle(r)
	d := mfaData{Enrolled: h.sess.MFA}
	if e := h.sess.Enrol; e != nil {
		qr, err := qrSVG(e.URL)
		if err != nil {
			a.unavailable(w, r, err)
			return
		}
		d.QR, d.Secret = qr, formatSecret(e.Secret)
		if u, err := url.Parse(e.URL); err == nil {
			d.Issuer = u.Query().Get("issuer")
			d.Account = strings.TrimPrefix(u.Path, "/")
		}
	}
	p.Title, p.Nav, p.Data = "Two-step sign-in", "security", d
	a.render(w, r, "mfa", p)
}

func (a *App) mfaEnrol(w http.ResponseWriter, r *http.Request) {
	h := a.signedInHandle(r)
	var enr struct {
		Secret string `json:"secret"`
		URL    string `json:"otpauth_url"`
	}
	p := &page{}
	body := reauthBody(r)
	err := a.withToken(r, h, func(tok string) error {
		_, err := a.up.decode(r.Context(), call{method: http.MethodPost, base: a.up.identity, path: pathTOTP, token: tok, body: body, clientIP: a.clientIP(r)}, &enr)
		return err
	})
	var ae *apiError
	switch {
	case err == nil && strings.HasPrefix(enr.URL, "otpauth://totp/") && enr.Secret != "":
		if err := a.sessions.update(r.Context(), h, func(s *session) error {
			s.Enrol = &enrolment{Secret: enr.Secret, URL: enr.URL}
			return nil
		}); err != nil {
			a.handleSessionErr(w, r, err)
			return
		}
		http.Redirect(w, r, "/mfa", http.StatusSeeOther)
		return
	case err == nil:
		a.unavailable(w, r, errors.New("web: enrolment answer without a secret"))
		return
	case errors.As(err, &ae) && ae.slug() == "mfa-already-enrolled":
		_ = a.sessions.update(r.Context(), h, func(s *session) error { s.MFA = true; return nil })
		a.flashAndRedirect(w, r, "ok", "Two-step sign-in is already on for this account.", "/security")
		return
	case errors.As(err, &ae) && reauthRefused(ae):
		p.fail("password", reauthText(ae))
		p.Status = http.StatusUnauthorized
		a.renderMFA(w, r, p)
		return
	}
	a.handleSessionErr(w, r, err)
}

func (a *App) mfaConfirm(w http.ResponseWriter, r *http.Request) {
	h := a.signedInHandle(r)
	code := strings.ReplaceAll(strings.TrimSpace(r.PostForm.Get("code")), " ", "")
	p := &page{}
	if h.sess.Enrol == nil {
		a.flashAndRedirect(w, r, "error", "Start the set-up again.", "/mfa")
		return
	}
	if !codeRE.MatchString(code) {
		p.fail("code", "Enter the 6-digit code your authenticator app shows.")
		a.renderMFA(w, r, p)
		return
	}
	var out struct {
		Codes []string `json:"recovery_codes"`
	}
	err := a.withToken(r, h, func(tok string) error {
		_, err := a.up.decode(r.Context(), call{method: http.MethodPost, base: a.up.identity, path: pathTOTPConfirm, token: tok,
			body: map[string]string{"code": code}, clientIP: a.clientIP(r)}, &out)
		return err
	})
	var ae *apiError
	switch {
	case err == nil && len(out.Codes) > 0:
	case err == nil:
		a.unavailable(w, r, errors.New("web: confirmation answer without recovery codes"))
		return
	case errors.As(err, &ae) && ae.slug() == "invalid-otp-code":
		p.fail("code", "That code is not right. Check that the device's clock is correct and enter the current code.")
		a.renderMFA(w, r, p)
		return
	case errors.As(err, &ae) && (ae.slug() == "mfa-not-pending" || ae.slug() == "mfa-already-enrolled"):
		_ = a.sessions.update(r.Context(), h, func(s *session) error { s.Enrol = nil; return nil })
		a.flashAndRedirect(w, r, "error", "This set-up is no longer pending. Start again.", "/mfa")
		return
	default:
		a.handleSessionErr(w, r, err)
		return
	}
	// A change of authentication strength: new session id and CSRF token.
	h.sess.Enrol, h.sess.MFA = nil, true
	if err := a.sessions.rotate(r.Context(), w, h); err != nil {
		a.unavailable(w, r, err)
		return
	}
	a.showRecoveryCodes(w, r, h, out.Codes, "Two-step sign-in is on")
}

// showRecoveryCodes renders the codes in the response only: they are not
// kept in the session, and the page is no-store, so they are shown once.
func (a *App) showRecoveryCodes(w http.ResponseWriter, r *http.Request, h *handle, codes []string, title string) {
	a.render(w, r, "recovery", &page{Title: title, Nav: "security", CSRF: h.sess.CSRF, Data: codes})
}
