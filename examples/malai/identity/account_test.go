package identity

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMFAEnrolmentWithATokenAlone is the stolen-token enrolment, written
// as the attack: the thief holds only the access token. Every step that
// would attach an authenticator, remove one or mint recovery codes is
// refused without the password (and the current code once MFA is on).
func TestMFAEnrolmentWithATokenAlone(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW)
	stolen := h.signInOK(creds("alice", strongPW)).token
	wantProblem(t, h.do(http.MethodPost, "/v1/mfa/totp", "application/json", `{}`, withBearer(stolen)), http.StatusForbidden, "reauthentication-failed")
	wantProblem(t, h.do(http.MethodPost, "/v1/mfa/totp", "", "", withBearer(stolen)), http.StatusUnsupportedMediaType, "unsupported-media-type")
	wantProblem(t, h.postJSON("/v1/mfa/totp", map[string]string{"password": "Guessed-Password-1!"}, withBearer(stolen)), http.StatusForbidden, "reauthentication-failed")
	wantProblem(t, h.postJSON("/v1/mfa/totp/confirm", map[string]string{"code": "123456"}, withBearer(stolen)), http.StatusConflict, "mfa-not-pending")
	wantProblem(t, h.postJSON("/v1/account/password", map[string]string{"password": "", "new_password": otherPW}, withBearer(stolen)), http.StatusForbidden, "reauthentication-failed")
	// Guessing the password through the re-authentication check is
	// throttled like a sign-in.
	var throttled bool
	for range 8 {
		w := h.postJSON("/v1/mfa/totp", map[string]string{"password": "Guessed-Password-1!"}, withBearer(stolen))
		if w.Code == http.StatusTooManyRequests {
			throttled = true
			break
		}
	}
	if !throttled {
		t.Fatal("password guessing through re-authentication was not throttled")
	}
	if contains(h.auditTypes(), AuditMFAEnrolled) {
		t.Fatal("an enrolment happened")
	}

	// The owner, with her password, enrols; now the thief cannot disable
	// it or mint codes even with the password, lacking the second factor.
	owner := h.signInOK(creds("alice", strongPW))
	secret, _ := h.enrollTOTP(owner, strongPW)
	h.clock.Advance(10 * time.Second) // past the thief's re-authentication delay
	wantProblem(t, h.postJSON("/v1/mfa/totp/disable", map[string]string{"password": strongPW}, withBearer(stolen)), http.StatusUnauthorized, "mfa-required")
	wantProblem(t, h.postJSON("/v1/mfa/recovery-codes", map[string]string{"password": strongPW, "totp_code": "000000"}, withBearer(stolen)), http.StatusForbidden, "reauthentication-failed")
	wantProblem(t, h.postJSON("/v1/mfa/totp", map[string]string{"password": strongPW}, withBearer(stolen)), http.StatusConflict, "mfa-already-enrolled")
	// With both factors the owner regenerates codes and disables MFA.
	w := h.postJSON("/v1/mfa/recovery-codes", map[string]string{"password": strongPW, "totp_code": h.code(secret)}, withBearer(owner.token))
	if w.Code != http.StatusOK {
		t.Fatalf("regenerate: %d %s", w.Code, w.Body)
	}
	var rc RecoveryCodes
	_ = json.Unmarshal(w.Body.Bytes(), &rc)
	if len(rc.Codes) != 10 {
		t.Fatalf("%d codes", len(rc.Codes))
	}
	w = h.postJSON("/v1/mfa/totp/disable", map[string]string{"password": strongPW, "recovery_code": rc.Codes[0].Reveal()}, withBearer(owner.token))
	if w.Code != http.StatusNoContent {
		t.Fatalf("disable: %d %s", w.Code, w.Body)
	}
	types := h.auditTypes()
	for _, want := range []string{AuditMFAEnrolled, AuditRecoveryRenewed, AuditMFADisabled} {
		if !contains(types, want) {
			t.Fatalf("audit chain %v lacks %s", types, want)
		}
	}
}

// TestEnrolmentBoundToItsSession: only the session that re-authenticated
// to start an enrolment may confirm it, and only within ReauthMaxAge.
func TestEnrolmentBoundToItsSession(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW)
	a := h.signInOK(creds("alice", strongPW))
	b := h.signInOK(creds("alice", strongPW))
	w := h.postJSON("/v1/mfa/totp", map[string]string{"password": strongPW}, withBearer(a.token))
	if w.Code != http.StatusCreated {
		t.Fatalf("start: %d %s", w.Code, w.Body)
	}
	var enr TOTPEnrollment
	_ = json.Unmarshal(w.Body.Bytes(), &enr)
	wantProblem(t, h.postJSON("/v1/mfa/totp/confirm", map[string]string{"code": h.code(enr.Secret.Reveal())}, withBearer(b.token)), http.StatusConflict, "mfa-not-pending")
	wantProblem(t, h.postJSON("/v1/mfa/totp/confirm", map[string]string{"code": "000000"}, withBearer(a.token)), http.StatusUnprocessableEntity, "invalid-otp-code")
	h.clock.Advance(ReauthMaxAge)
	a.token = h.refresh(a).token
	wantProblem(t, h.postJSON("/v1/mfa/totp/confirm", map[string]string{"code": h.code(enr.Secret.Reveal())}, withBearer(a.token)), http.StatusConflict, "mfa-not-pending")
}

// refresh rotates a session's refresh cookie.
func (h *harness) refresh(s session) session {
	h.t.Helper()
	w := h.do(http.MethodPost, RefreshPath, "", "", withRefresh(s.refresh), browser())
	if w.Code != http.StatusOK {
		h.t.Fatalf("refresh: %d %s", w.Code, w.Body)
	}
	return session{token: decodeToken(h.t, w).AccessToken, refresh: cookieValue(h.t, w, RefreshCookie), device: s.device}
}

// TestPasswordChange: the current password is required; a change revokes
// every other session, keeps this one, and the old password stops
// working.
func TestPasswordChange(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW)
	here := h.signInOK(creds("alice", strongPW))
	other := h.signInOK(creds("alice", strongPW), fromIP("192.0.2.11"))
	wantProblem(t, h.postJSON("/v1/account/password", map[string]string{"password": "Not-" + strongPW, "new_password": otherPW}, withBearer(here.token)),
		http.StatusForbidden, "reauthentication-failed")
	wantProblem(t, h.postJSON("/v1/account/password", map[string]string{"password": strongPW, "new_password": "short"}, withBearer(here.token)),
		http.StatusUnprocessableEntity, "password-policy")
	w := h.postJSON("/v1/account/password", map[string]string{"password": strongPW, "new_password": otherPW}, withBearer(here.token))
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"sessions_revoked":1`) {
		t.Fatalf("change: %d %s", w.Code, w.Body)
	}
	wantProblem(t, h.do(http.MethodPost, RefreshPath, "", "", withRefresh(other.refresh), browser()), http.StatusUnauthorized, "invalid-refresh")
	wantProblem(t, h.do(http.MethodGet, "/v1/account", "", "", withBearer(other.token)), http.StatusUnauthorized, "invalid-token")
	h.refresh(here)
	wantProblem(t, h.signIn(creds("alice", strongPW)), http.StatusUnauthorized, "invalid-credentials")
	h.signInOK(creds("alice", otherPW))
	if !contains(h.auditTypes(), AuditPasswordChanged) {
		t.Fatal("no audit event")
	}
}

func TestSessionListAndRevoke(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW)
	h.signUp("bob", strongPW)
	a := h.signInOK(creds("alice", strongPW), withHeader("User-Agent", "Laptop\x01Browser"))
	h.clock.Advance(time.Second)
	b := h.signInOK(creds("alice", strongPW), fromIP("192.0.2.11"))
	bob := h.signInOK(creds("bob", strongPW))
	w := h.do(http.MethodGet, SignInPath, "", "", withBearer(a.token))
	var list struct{ Sessions []SessionInfo }
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil || w.Code != 200 {
		t.Fatalf("list: %d %s", w.Code, w.Body)
	}
	if len(list.Sessions) != 2 || !list.Sessions[0].Current || list.Sessions[1].Current || list.Sessions[0].UserAgent != "LaptopBrowser" {
		t.Fatalf("sessions %+v", list.Sessions)
	}
	other := list.Sessions[1].ID
	// Bob cannot revoke Alice's session.
	wantProblem(t, h.do(http.MethodDelete, SignInPath+"/"+other, "", "", withBearer(bob.token)), http.StatusNotFound, "not-found")
	if w := h.do(http.MethodPost, SignInPath+"/"+other+"/revoke", "", "", withBearer(a.token)); w.Code != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", w.Code, w.Body)
	}
	wantProblem(t, h.do(http.MethodDelete, SignInPath+"/"+other, "", "", withBearer(a.token)), http.StatusNotFound, "not-found")
	wantProblem(t, h.do(http.MethodPost, RefreshPath, "", "", withRefresh(b.refresh), browser()), http.StatusUnauthorized, "invalid-refresh")
	wantProblem(t, h.do(http.MethodGet, SignInPath, "", "", withBearer(b.token)), http.StatusUnauthorized, "invalid-token")
	if !contains(h.auditTypes(), AuditSessionRevoked) {
		t.Fatal("no audit event")
	}
}

// TestRefreshCSRF: refresh and sign-out need the custom header and an
// allowed Origin; a cross-site form post has neither.
func TestRefreshCSRF(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW)
	s := h.signInOK(creds("alice", strongPW))
	for _, tc := range []struct {
		name string
		opts []reqOpt
	}{
		{"no header, no origin", nil},
		{"cross-site form", []reqOpt{withHeader("Origin", "https://evil.example")}},
		{"header from another origin", []reqOpt{withHeader("Origin", "https://evil.example"), withHeader(CSRFHeader, "1")}},
		{"origin null", []reqOpt{withHeader("Origin", "null"), withHeader(CSRFHeader, "1")}},
		{"same origin without the header", []reqOpt{withHeader("Origin", testOrigin)}},
		{"header with another value", []reqOpt{withHeader("Origin", testOrigin), withHeader(CSRFHeader, "yes")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, m := range []string{http.MethodPost, http.MethodDelete} {
				opts := append([]reqOpt{withRefresh(s.refresh)}, tc.opts...)
				wantProblem(t, h.do(m, RefreshPath, "", "", opts...), http.StatusForbidden, "cross-site-request")
			}
		})
	}
	s = h.refresh(s) // the session survived every refused attempt
	for _, signOut := range []struct{ method, path string }{{http.MethodDelete, RefreshPath}, {http.MethodPost, SignOutPath}} {
		wantProblem(t, h.do(signOut.method, signOut.path, "", "", withRefresh(s.refresh), withHeader("Origin", "https://evil.example"), withHeader(CSRFHeader, "1")), http.StatusForbidden, "cross-site-request")
		w := h.do(signOut.method, signOut.path, "", "", withRefresh(s.refresh), browser())
		if w.Code != http.StatusNoContent {
			t.Fatalf("sign-out %s %s: %d %s", signOut.method, signOut.path, w.Code, w.Body)
		}
		wantProblem(t, h.do(http.MethodPost, RefreshPath, "", "", withRefresh(s.refresh), browser()), http.StatusUnauthorized, "invalid-refresh")
		s = h.signInOK(creds("alice", strongPW))
	}
	if !contains(h.auditTypes(), AuditSignOut) {
		t.Fatal("sign-out not audited")
	}
}

func TestRefreshRotationAndReuse(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW)
	s := h.signInOK(creds("alice", strongPW))
	first := s.refresh
	s = h.refresh(s)
	if s.refresh == first {
		t.Fatal("refresh token not rotated")
	}
	// The old token again: reuse, the family is revoked.
	wantProblem(t, h.do(http.MethodPost, RefreshPath, "", "", withRefresh(first), browser()), http.StatusUnauthorized, "invalid-refresh")
	wantProblem(t, h.do(http.MethodPost, RefreshPath, "", "", withRefresh(s.refresh), browser()), http.StatusUnauthorized, "invalid-refresh")
	if !contains(h.auditTypes(), AuditRefreshReused) {
		t.Fatal("reuse not audited")
	}
	// Idle expiry.
	s = h.signInOK(creds("alice", strongPW))
	h.clock.Advance(DefaultRefreshTTL)
	wantProblem(t, h.do(http.MethodPost, RefreshPath, "", "", withRefresh(s.refresh), browser()), http.StatusUnauthorized, "invalid-refresh")
	// Two cookies, an oversized one, none.
	wantProblem(t, h.do(http.MethodPost, RefreshPath, "", "", withRefresh("a"), withRefresh("b"), browser()), http.StatusUnauthorized, "invalid-refresh")
	wantProblem(t, h.do(http.MethodPost, RefreshPath, "", "", withRefresh(strings.Repeat("a", 200)), browser()), http.StatusUnauthorized, "invalid-refresh")
	wantProblem(t, h.do(http.MethodPost, RefreshPath, "", "", browser()), http.StatusUnauthorized, "invalid-refresh")
}

func TestCookieAttributes(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW)
	w := h.signIn(creds("alice", strongPW))
	seen := map[string]bool{}
	for _, c := range w.Result().Cookies() {
		seen[c.Name] = true
		if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Domain != "" {
			t.Fatalf("cookie %s attributes %+v", c.Name, c)
		}
		switch c.Name {
		case RefreshCookie:
			if c.Path != RefreshPath {
				t.Fatalf("refresh cookie path %q", c.Path)
			}
		case DeviceCookie:
			if c.Path != SignInPath {
				t.Fatalf("device cookie path %q", c.Path)
			}
		}
	}
	if !seen[RefreshCookie] || !seen[DeviceCookie] {
		t.Fatalf("cookies %v", seen)
	}
}
