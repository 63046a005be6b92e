package web

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/malai-sec/malai/idempotency"
)

const (
	// accessSlack refreshes an access token this long before it expires,
	// so a token never dies between the check and the service.
	accessSlack = 30 * time.Second
	// pendingTTL bounds a sign-in waiting for its second factor.
	pendingTTL = 5 * time.Minute
	// inFlightWait is how long a transfer submitted twice waits for the
	// first submission's outcome before telling the user it is running.
	inFlightWait = 5 * time.Second
)

var (
	accountRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{2,63}$`)
	usernameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$`)
	codeRE     = regexp.MustCompile(`^[0-9]{6}$`)
	keyRE      = regexp.MustCompile(`^[A-Za-z0-9_-]{22}$`)
)

func (a *App) home(w http.ResponseWriter, r *http.Request) {
	h, err := a.current(r)
	if err != nil {
		a.unavailable(w, r, err)
		return
	}
	if h != nil && h.sess.signedIn() {
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

// formPage renders a form page, making sure a session (for the CSRF
// token) exists first.
func (a *App) formPage(w http.ResponseWriter, r *http.Request, name string, p *page) {
	if _, err := a.ensure(w, r); err != nil {
		a.unavailable(w, r, err)
		return
	}
	a.render(w, r, name, p)
}

// --- sign-up ---

// rules are the sign-up password rules as the page shows them; the
// identity service applies the same ones and names a broken rule by id.
var rules = []struct{ ID, Text string }{
	{"too-short", "At least 12 characters"},
	{"missing-lowercase", "A lower-case letter"},
	{"missing-uppercase", "An upper-case letter"},
	{"missing-digit", "A digit"},
	{"missing-symbol", "A symbol or space"},
	{"contains-username", "Does not contain your username"},
	{"repetitive", "At least 5 different characters"},
}

type signUpData struct {
	Rules  []ruleState
	Breach string
}

type ruleState struct {
	ID, Text string
	Broken   bool
}

func ruleStates(broken []string) []ruleState {
	out := make([]ruleState, 0, len(rules))
	for _, rl := range rules {
		b := false
		for _, v := range broken {
			b = b || v == rl.ID
		}
		out = append(out, ruleState{rl.ID, rl.Text, b})
	}
	return out
}

func (a *App) signUpPage(w http.ResponseWriter, r *http.Request) {
	a.formPage(w, r, "signup", &page{Title: "Create an account", Nav: "signup", Data: signUpData{Rules: ruleStates(nil)}})
}

func (a *App) signUp(w http.ResponseWriter, r *http.Request) {
	user := strings.TrimSpace(r.PostForm.Get("username"))
	pw, confirm := r.PostForm.Get("password"), r.PostForm.Get("confirm")
	p := &page{Title: "Create an account", Nav: "signup", Form: map[string]string{"username": user}}
	data := signUpData{Rules: ruleStates(nil)}
	if !usernameRE.MatchString(user) {
		p.fail("username", "Use 3 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit.")
	}
	if pw == "" {
		p.fail("password", "Choose a password.")
	} else if pw != confirm {
		p.fail("confirm", "The two passwords differ.")
	}
	if len(p.Errors) == 0 {
		_, err := a.up.do(r.Context(), call{method: http.MethodPost, base: a.up.identity, path: "/v1/users",
			body: map[string]string{"username": user, "password": pw}, clientIP: a.clientIP(r)})
		var ae *apiError
		switch {
		case err == nil:
		case errors.As(err, &ae) && ae.slug() == "password-policy":
			data.Rules = ruleStates(ae.Violations)
			p.fail("password", "The password breaks the rules marked below.")
		case errors.As(err, &ae) && ae.slug() == "password-compromised":
			data.Breach = "found"
			p.fail("password", "This password appears in a list of passwords leaked in data breaches. Choose another one.")
		case errors.As(err, &ae) && ae.slug() == "username-taken":
			p.fail("username", "This username is taken. Choose another one.")
		case errors.As(err, &ae) && ae.slug() == "invalid-username":
			p.fail("username", "Use 3 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit.")
		case errors.As(err, &ae):
			p.fail("username", "The account could not be created ("+ae.Title+").")
		default:
			a.unavailable(w, r, err)
			return
		}
	}
	if len(p.Errors) > 0 {
		p.Data = data
		a.render(w, r, "signup", p)
		return
	}
	t, err := a.up.signIn(r.Context(), a.clientIP(r), map[string]string{"username": user, "password": pw}, a.sessions.now())
	if err != nil {
		a.log.LogAttrs(r.Context(), slog.LevelWarn, "web: sign-in after sign-up failed", slog.String("error", err.Error()))
		a.flashAndRedirect(w, r, "ok", "Your account is ready. Sign in to continue.", "/signin")
		return
	}
	if err := a.establish(w, r, strings.ToLower(user), t, false,
		"Account created. Your password was checked against a corpus of passwords leaked in breaches and was not in it."); err != nil {
		a.unavailable(w, r, err)
		return
	}
	http.Redirect(w, r, "/mfa", http.StatusSeeOther)
}

// --- sign-in ---

func (a *App) signInPage(w http.ResponseWriter, r *http.Request) {
	p := &page{Title: "Sign in", Nav: "signin"}
	if r.URL.Query().Get("signed_out") == "1" {
		p.Flash = []flash{{"ok", "You are signed out."}}
	}
	a.formPage(w, r, "signin", p)
}

func (a *App) signIn(w http.ResponseWriter, r *http.Request) {
	user := strings.ToLower(strings.TrimSpace(r.PostForm.Get("username")))
	pw := r.PostForm.Get("password")
	p := &page{Title: "Sign in", Nav: "signin", Form: map[string]string{"username": user}}
	if user == "" {
		p.fail("username", "Enter your username.")
	}
	if pw == "" {
		p.fail("password", "Enter your password.")
	}
	if len(p.Errors) > 0 {
		a.render(w, r, "signin", p)
		return
	}
	t, err := a.up.signIn(r.Context(), a.clientIP(r), map[string]string{"username": user, "password": pw}, a.sessions.now())
	var ae *apiError
	switch {
	case err == nil:
		if err := a.establish(w, r, user, t, false, ""); err != nil {
			a.unavailable(w, r, err)
			return
		}
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	case errors.As(err, &ae) && ae.slug() == "mfa-required":
		if err := a.beginChallenge(r, user, ae.MFAToken); err != nil {
			a.unavailable(w, r, err)
			return
		}
		http.Redirect(w, r, "/signin/mfa", http.StatusSeeOther)
		return
	case errors.As(err, &ae):
		p.fail("password", signInRefusal(ae))
		p.Status = ae.Status
		a.render(w, r, "signin", p)
		return
	}
	a.unavailable(w, r, err)
}

func signInRefusal(ae *apiError) string {
	switch ae.slug() {
	case "invalid-credentials":
		return "The username or the password is not right."
	case "sign-in-blocked":
		return "Sign-in is blocked for now after suspicious activity. Try again later."
	case "password-reset-required":
		return "This password appears in a breach corpus and must be reset before you can sign in."
	case "rate-limited":
		return "Too many attempts. Wait a moment and try again."
	}
	if ae.Detail != "" {
		return ae.Detail
	}
	return "Sign-in was refused (" + ae.Title + ")."
}

// beginChallenge records a sign-in waiting for its second factor: only
// identity's one-use mfa_token, which completes the sign-in with a code.
// The password is never kept; an mfa-required answer without a token is
// a broken identity and fails closed.
func (a *App) beginChallenge(r *http.Request, user, mfaToken string) error {
	if mfaToken == "" {
		return errors.New("web: identity asked for a second factor without an mfa_token")
	}
	h, err := a.current(r)
	if err != nil {
		return err
	}
	if h == nil {
		return errNoSession
	}
	pend := &pendingMFA{User: user, Token: mfaToken, Expires: a.sessions.now().Add(pendingTTL)}
	return a.sessions.update(r.Context(), h, func(s *session) error { s.Pending = pend; return nil })
}

func (a *App) pending(r *http.Request) (*handle, *pendingMFA) {
	h, _ := a.current(r)
	if h == nil || h.sess.Pending == nil || !a.sessions.now().Before(h.sess.Pending.Expires) {
		return h, nil
	}
	return h, h.sess.Pending
}

func (a *App) mfaChallengePage(w http.ResponseWriter, r *http.Request) {
	if _, pend := a.pending(r); pend == nil {
		http.Redirect(w, r, "/signin", http.StatusSeeOther)
		return
	}
	a.render(w, r, "mfa_challenge", &page{Title: "Second factor", Nav: "signin"})
}

func (a *App) mfaChallenge(w http.ResponseWriter, r *http.Request) {
	h, pend := a.pending(r)
	if pend == nil {
		a.flashAndRedirect(w, r, "error", "The sign-in took too long. Start again.", "/signin")
		return
	}
	code := strings.ReplaceAll(strings.TrimSpace(r.PostForm.Get("code")), " ", "")
	p := &page{Title: "Second factor", Nav: "signin"}
	if code == "" {
		p.fail("code", "Enter the 6-digit code from your authenticator app, or a recovery code.")
		a.render(w, r, "mfa_challenge", p)
		return
	}
	body := map[string]string{"mfa_token": pend.Token}
	if codeRE.MatchString(code) {
		body["totp_code"] = code
	} else {
		body["recovery_code"] = code
	}
	t, err := a.up.signIn(r.Context(), a.clientIP(r), body, a.sessions.now())
	var ae *apiError
	switch {
	case err == nil:
		usedRecovery := body["recovery_code"] != ""
		msg := ""
		if usedRecovery {
			msg = "You signed in with a recovery code; it cannot be used again."
		}
		if err := a.establish(w, r, pend.User, t, true, msg); err != nil {
			a.unavailable(w, r, err)
			return
		}
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	case errors.As(err, &ae) && (ae.slug() == "invalid-credentials" || ae.slug() == "invalid-otp-code" || ae.slug() == "mfa-required"):
		if ae.MFAToken != "" {
			// Identity spends an mfa_token per attempt and answers a
			// wrong code with a fresh one.
			next := ae.MFAToken
			_ = a.sessions.update(r.Context(), h, func(s *session) error {
				if s.Pending != nil {
					s.Pending.Token = next
				}
				return nil
			})
		}
		p.fail("code", "That code is not right. Codes change every 30 seconds; enter the current one.")
		p.Status = http.StatusUnauthorized
		a.render(w, r, "mfa_challenge", p)
		return
	case errors.As(err, &ae):
		_ = a.sessions.update(r.Context(), h, func(s *session) error { s.Pending = nil; return nil })
		a.flashAndRedirect(w, r, "error", signInRefusal(ae), "/signin")
		return
	}
	a.unavailable(w, r, err)
}

// establish turns the request's session into a signed-in one under a new
// id (no session fixation) and a new CSRF token.
func (a *App) establish(w http.ResponseWriter, r *http.Request, user string, t tokens, mfa bool, msg string) error {
	h, err := a.current(r)
	if err != nil {
		return err
	}
	now := a.sessions.now()
	if h == nil {
		if h, err = a.sessions.create(r.Context(), w); err != nil {
			return err
		}
	}
	h.sess = &session{Created: now, LastSeen: now, User: user, SignedIn: now,
		Access: t.access, AccessExp: t.expires, Refresh: t.refresh, MFA: mfa}
	if msg != "" {
		h.sess.addFlash("ok", msg)
	}
	if err := a.sessions.rotate(r.Context(), w, h); err != nil {
		return err
	}
	a.log.LogAttrs(r.Context(), slog.LevelInfo, "web: signed in", slog.String("user", user), slog.Bool("mfa", mfa))
	return nil
}

func (a *App) flashAndRedirect(w http.ResponseWriter, r *http.Request, kind, text, to string) {
	if h, _ := a.current(r); h != nil {
		_ = a.sessions.update(r.Context(), h, func(s *session) error { s.addFlash(kind, text); return nil })
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// --- tokens ---

// token returns a live access token for the signed-in session, refreshing
// it under the session's lease when it is about to expire. force refreshes
// even a token that looks live (a service refused it).
func (a *App) token(r *http.Request, h *handle, force bool) (string, error) {
	now := a.sessions.now()
	if !force && h.sess.Access != "" && now.Before(h.sess.AccessExp.Add(-accessSlack)) {
		return h.sess.Access, nil
	}
	stale := h.sess.Access
	var tok string
	signedOut := false
	err := a.sessions.update(r.Context(), h, func(s *session) error {
		if !s.signedIn() {
			signedOut = true
			return nil
		}
		// Another request may have refreshed while this one waited.
		if s.Access != stale && now.Before(s.AccessExp.Add(-accessSlack)) {
			tok = s.Access
			return nil
		}
		t, err := a.up.refresh(r.Context(), a.clientIP(r), s.Refresh, now)
		if err != nil {
			var ae *apiError
			if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
				// The refresh session ended (expired, revoked, reused).
				*s = session{Created: s.Created, LastSeen: s.LastSeen, CSRF: s.CSRF}
				signedOut = true
				return nil
			}
			return err
		}
		s.Access, s.AccessExp, s.Refresh = t.access, t.expires, t.refresh
		tok = t.access
		return nil
	})
	if err != nil {
		return "", err
	}
	if signedOut {
		return "", errSignedOut
	}
	return tok, nil
}

// withToken runs fn with the session's access token; when a service
// answers 401 invalid-token (the token was revoked or its key rotated)
// it refreshes once and runs fn again. fn must not have had an effect
// when it returns 401, which holds because every service checks the token
// before anything else.
func (a *App) withToken(r *http.Request, h *handle, fn func(tok string) error) error {
	tok, err := a.token(r, h, false)
	if err != nil {
		return err
	}
	err = fn(tok)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
		if tok, err = a.token(r, h, true); err != nil {
			return err
		}
		return fn(tok)
	}
	return err
}

// signedInHandle is the session of a route behind requireSignedIn.
func (a *App) signedInHandle(r *http.Request) *handle {
	h, _ := a.current(r)
	return h
}

// handleSessionErr answers the errors every signed-in page can meet.
func (a *App) handleSessionErr(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, errSignedOut) || errors.Is(err, errNoSession) {
		a.flashAndRedirect(w, r, "error", "Your session has ended. Sign in again.", "/signin")
		return
	}
	a.unavailable(w, r, err)
}

// --- account ---

type accountView struct {
	account
	Transfers []transferRecord
	NoHistory bool
}

type jobView struct {
	job
	Status string
	Detail string
}

type accountData struct {
	Accounts []accountView
	Jobs     []jobView
}

func (a *App) accountPage(w http.ResponseWriter, r *http.Request) {
	h := a.signedInHandle(r)
	var data accountData
	err := a.withToken(r, h, func(tok string) error {
		accts, err := a.up.accounts(r.Context(), tok)
		if err != nil {
			return err
		}
		data.Accounts = data.Accounts[:0]
		for _, ac := range accts {
			v := accountView{account: ac}
			trs, err := a.up.transfers(r.Context(), tok, ac.ID)
			var ae *apiError
			switch {
			case err == nil:
				v.Transfers = trs
			case errors.As(err, &ae) && ae.Status == http.StatusUnauthorized:
				return err
			case errors.As(err, &ae) || errors.Is(err, errUpstream):
				v.NoHistory = true
			}
			data.Accounts = append(data.Accounts, v)
		}
		data.Jobs = data.Jobs[:0]
		for i := len(h.sess.Jobs) - 1; i >= 0; i-- {
			data.Jobs = append(data.Jobs, a.jobView(r.Context(), tok, h.sess.Jobs[i]))
		}
		return nil
	})
	if err != nil {
		a.handleSessionErr(w, r, err)
		return
	}
	a.render(w, r, "account", &page{Title: "Your accounts", Nav: "account", Data: data})
}

func (a *App) jobView(ctx context.Context, tok string, j job) jobView {
	v := jobView{job: j, Status: "queued"}
	if j.Location == "" {
		v.Detail = "Queued. This server does not report job progress."
		return v
	}
	st, err := a.up.job(ctx, tok, j.Location)
	if err != nil {
		v.Status, v.Detail = "unknown", "The job's status could not be read just now."
		return v
	}
	v.Status = st.Status
	v.Detail = jobDetail(st)
	return v
}

func jobDetail(st jobState) string {
	switch st.Status {
	case "queued":
		return "Waiting for a worker."
	case "running":
		return "Being applied."
	case "succeeded":
		var tr struct {
			Transfer string `json:"transfer"`
		}
		if st.Result != nil {
			_ = json.Unmarshal(st.Result.Body, &tr)
		}
		if tr.Transfer != "" {
			return "Applied as " + tr.Transfer + "."
		}
		return "Applied."
	case "failed":
		var pr apiError
		if st.Result != nil {
			_ = json.Unmarshal(st.Result.Body, &pr)
		}
		if pr.Title != "" {
			return "Refused: " + pr.Title + "."
		}
		return "Refused."
	}
	return ""
}

func (a *App) jobStatus(w http.ResponseWriter, r *http.Request) {
	h := a.signedInHandle(r)
	id := r.PathValue("id")
	var found *job
	for i := range h.sess.Jobs {
		if h.sess.Jobs[i].ID == id {
			found = &h.sess.Jobs[i]
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if found == nil {
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"status":"unknown"}`))
		return
	}
	var v jobView
	err := a.withToken(r, h, func(tok string) error { v = a.jobView(r.Context(), tok, *found); return nil })
	if err != nil {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"status":"signed-out"}`))
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]string{"status": v.Status, "detail": v.Detail})
}

func (a *App) openAccount(w http.ResponseWriter, r *http.Request) {
	h := a.signedInHandle(r)
	id := strings.ToLower(strings.TrimSpace(r.PostForm.Get("id")))
	if !accountRE.MatchString(id) {
		a.flashAndRedirect(w, r, "error", "Account names are 3 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit.", "/account")
		return
	}
	err := a.withToken(r, h, func(tok string) error {
		_, err := a.up.do(r.Context(), call{method: http.MethodPost, base: a.up.ledger, path: "/v1/accounts", token: tok,
			body: map[string]string{"id": id}})
		return err
	})
	var ae *apiError
	switch {
	case err == nil:
		a.flashAndRedirect(w, r, "ok", "Account "+id+" is open.", "/account")
	case errors.As(err, &ae) && ae.Status == http.StatusConflict:
		a.flashAndRedirect(w, r, "error", "An account called "+id+" already exists. Choose another name.", "/account")
	case errors.As(err, &ae) && ae.Status != http.StatusUnauthorized:
		a.flashAndRedirect(w, r, "error", "The account could not be opened ("+ae.Title+").", "/account")
	default:
		a.handleSessionErr(w, r, err)
	}
}

// --- transfers ---

func newKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

type transferData struct {
	Accounts []account
	Key      string
	Retry    bool
}

func (a *App) transferPage(w http.ResponseWriter, r *http.Request) {
	a.renderTransfer(w, r, &page{Form: map[string]string{"from": r.URL.Query().Get("from")}}, newKey(), false)
}

// renderTransfer shows the form with key as its Idempotency-Key: a fresh
// key for a new form, the same key when the outcome of a submission is
// unknown, so that submitting again cannot apply it twice.
func (a *App) renderTransfer(w http.ResponseWriter, r *http.Request, p *page, key string, retry bool) {
	h := a.signedInHandle(r)
	var accts []account
	err := a.withToken(r, h, func(tok string) (err error) { accts, err = a.up.accounts(r.Context(), tok); return err })
	if err != nil {
		a.handleSessionErr(w, r, err)
		return
	}
	p.Title, p.Nav = "Make a transfer", "transfer"
	p.Data = transferData{Accounts: accts, Key: key, Retry: retry}
	a.render(w, r, "transfer", p)
}

func (a *App) transfer(w http.ResponseWriter, r *http.Request) {
	h := a.signedInHandle(r)
	f := r.PostForm
	from, to := f.Get("from"), strings.ToLower(strings.TrimSpace(f.Get("to")))
	amountText := strings.ReplaceAll(strings.TrimSpace(f.Get("amount")), ",", "")
	async := f.Get("async") == "on"
	key := f.Get("idempotency_key")
	p := &page{Form: map[string]string{"from": from, "to": to, "amount": amountText}}
	if async {
		p.Form["async"] = "on"
	}
	if !keyRE.MatchString(key) || len(f["idempotency_key"]) != 1 {
		a.flashAndRedirect(w, r, "error", "The transfer form was damaged; nothing was sent. Fill it in again.", "/transfer")
		return
	}
	amount, err := strconv.ParseInt(amountText, 10, 64)
	if err != nil || amount <= 0 {
		p.fail("amount", "Enter a whole, positive amount.")
	}
	if !accountRE.MatchString(from) {
		p.fail("from", "Choose one of your accounts.")
	}
	if !accountRE.MatchString(to) {
		p.fail("to", "Enter the account to pay: 3 to 64 of a-z, 0-9, '-' and '_'.")
	} else if to == from {
		p.fail("to", "Choose an account other than the one you pay from.")
	}
	if len(p.Errors) > 0 {
		a.renderTransfer(w, r, p, newKey(), false)
		return
	}
	req := transferReq{From: from, To: to, Amount: amount}
	var res result
	err = a.withToken(r, h, func(tok string) error {
		deadline := time.Now().Add(inFlightWait)
		wait := 100 * time.Millisecond
		for {
			res, err = a.up.transfer(r.Context(), tok, key, async, req)
			// The same key is running (a double click, a retry that
			// overtook the first): wait for its outcome instead of
			// showing the conflict.
			if !problemIs(err, "idempotency-in-flight") || time.Now().After(deadline) {
				return err
			}
			select {
			case <-time.After(wait):
			case <-r.Context().Done():
				return r.Context().Err()
			}
			wait = min(2*wait, time.Second)
		}
	})
	var ae *apiError
	switch {
	case err == nil && async:
		loc := res.header.Get("Location")
		if !strings.HasPrefix(loc, "/v1/jobs/") || strings.ContainsAny(loc, "?#") {
			loc = ""
		}
		j := job{ID: key, Location: loc, From: from, To: to, Amount: amount, Queued: a.sessions.now()}
		if err := a.sessions.update(r.Context(), h, func(s *session) error {
			for _, old := range s.Jobs {
				if old.ID == j.ID {
					s.addFlash("ok", "This transfer was already queued; it runs once.")
					return nil
				}
			}
			s.Jobs = append(s.Jobs, j)
			if len(s.Jobs) > maxJobs {
				s.Jobs = s.Jobs[len(s.Jobs)-maxJobs:]
			}
			s.addFlash("ok", "Transfer of "+formatAmount(amount)+" from "+from+" to "+to+" queued. Its status is shown below.")
			return nil
		}); err != nil {
			a.handleSessionErr(w, r, err)
			return
		}
		http.Redirect(w, r, "/account", http.StatusSeeOther)
	case err == nil:
		var posted struct {
			Transfer string `json:"transfer"`
		}
		_ = json.Unmarshal(res.body, &posted)
		msg := "Transfer " + posted.Transfer + " of " + formatAmount(amount) + " from " + from + " to " + to + " is done."
		if res.header.Get(idempotency.HeaderReplayed) == "true" {
			msg += " (It had already been applied: a repeated submission applies once.)"
		}
		a.flashAndRedirect(w, r, "ok", msg, "/account")
	case problemIs(err, "idempotency-in-flight"):
		p.Flash = []flash{{"ok", "The transfer is still being applied. Submit again to see its outcome; it will not be applied twice."}}
		a.renderTransfer(w, r, p, key, true)
	case errors.As(err, &ae) && ae.Status == http.StatusUnauthorized:
		a.handleSessionErr(w, r, errSignedOut)
	case errors.As(err, &ae):
		switch ae.slug() {
		case "insufficient-funds":
			p.fail("amount", "The account does not hold enough for this transfer.")
		case "not-found":
			p.fail("to", "There is no account with this name.")
		case "invalid-transfer":
			p.fail("amount", "Check the accounts and the amount.")
		default:
			p.fail("amount", "The transfer was refused ("+ae.Title+").")
		}
		a.renderTransfer(w, r, p, newKey(), false)
	case errors.Is(err, errSignedOut), errors.Is(err, errNoSession):
		a.handleSessionErr(w, r, err)
	default:
		// Outcome unknown: keep the key, so submitting again is safe.
		a.log.LogAttrs(r.Context(), slog.LevelWarn, "web: transfer outcome unknown", slog.String("error", err.Error()))
		p.Flash = []flash{{"error", "We could not confirm the transfer. Submit again: the same transfer is applied at most once."}}
		p.Status = http.StatusServiceUnavailable
		a.renderTransfer(w, r, p, key, true)
	}
}

// --- sign-out ---

func (a *App) signOut(w http.ResponseWriter, r *http.Request) {
	h, err := a.current(r)
	if err != nil {
		a.unavailable(w, r, err)
		return
	}
	if h != nil && h.sess.Refresh != "" {
		if err := a.up.signOut(r.Context(), a.clientIP(r), h.sess.Refresh); err != nil {
			// The local session ends anyway; the refresh session expires
			// by itself. Say so in the log.
			a.log.LogAttrs(r.Context(), slog.LevelWarn, "web: refresh session not revoked at sign-out", slog.String("error", err.Error()))
		}
	}
	if err := a.sessions.destroy(r.Context(), w, h); err != nil {
		a.log.LogAttrs(r.Context(), slog.LevelWarn, "web: session record not deleted", slog.String("error", err.Error()))
	}
	if h != nil && h.sess.User != "" {
		a.log.LogAttrs(r.Context(), slog.LevelInfo, "web: signed out", slog.String("user", h.sess.User))
	}
	http.Redirect(w, r, "/signin?signed_out=1", http.StatusSeeOther)
}
