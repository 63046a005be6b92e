package identity

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/malai-sec/malai/examples/malai/identity/clientauth"
)

// The fault switches exist so that an evidence check can show it fails
// without its defence; these tests show each switch really turns its
// defence off (and nothing else), so a check that passes with the switch
// on is a check that proves nothing.

func TestFaultNoReauth(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Faults.NoReauth = true })
	h.signUp("alice", strongPW)
	stolen := h.signInOK(creds("alice", strongPW)).token
	if w := h.do(http.MethodPost, "/v1/mfa/totp", "application/json", `{}`, withBearer(stolen)); w.Code != http.StatusCreated {
		t.Fatalf("with NoReauth a token alone should enrol: %d %s", w.Code, w.Body)
	}
}

func TestFaultHardLockout(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Faults.HardLockout = true })
	h.signUp("alice", strongPW)
	owner := h.signInOK(creds("alice", strongPW))
	for n := range 4 {
		for range 5 {
			h.signIn(creds("alice", wrongPW), fromIP(fmt.Sprintf("198.51.100.%d", 1+n)))
		}
	}
	if w := h.signIn(creds("alice", strongPW), withDevice(owner.device)); w.Code == http.StatusOK {
		t.Fatal("with HardLockout the owner on her device should be locked out")
	}
}

func TestFaultNoSprayDetection(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Faults.NoSprayDetection = true })
	throttled := 0
	for i := range 30 {
		w := h.signIn(creds(fmt.Sprintf("user%02d", i), "Spring-Harvest-2026!"), fromIP(fmt.Sprintf("203.0.113.%d", 10+i)))
		if w.Code == http.StatusTooManyRequests {
			throttled++
		}
	}
	if throttled != 0 {
		t.Fatalf("with NoSprayDetection the spray should pass unthrottled: %d throttled", throttled)
	}
}

func TestFaultNoAssertionReplayCheck(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Faults.NoAssertionReplayCheck = true })
	key, _ := clientauth.NewKey()
	if _, err := h.svc.RegisterClientKey(context.Background(), "worker", key.PublicJWK()); err != nil {
		t.Fatal(err)
	}
	a, _ := key.Assertion("worker", testIssuer+TokenPath, h.clock.Now())
	form := url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {AssertionType}, "client_assertion": {a}}
	for i := range 2 {
		if code, e, _ := h.tokenForm(form, withHeader("X-Test-Peer", "worker")); code != 200 {
			t.Fatalf("use %d with NoAssertionReplayCheck: %d %+v", i, code, e)
		}
	}
}

func TestFaultNoTokenCheck(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Faults.NoTokenCheck = true })
	sub := h.signUp("alice", strongPW)
	s := h.signInOK(creds("alice", strongPW))
	sid := claimsOf(t, s.token)[ClaimSession].(string)
	forged := badClaimTokens(h, sub, sid)["wrong issuer"]
	if w := h.do(http.MethodGet, "/v1/account", "", "", withBearer(forged)); w.Code != http.StatusOK {
		t.Fatalf("with NoTokenCheck a forged token should pass identity's own check: %d", w.Code)
	}
}

// TestFaultShortPasswords: eight characters pass, seven and the other
// rules still do not.
func TestFaultShortPasswords(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Faults.ShortPasswords = true })
	h.signUp("alice", "Ab1!wxyz")
	wantProblem(t, h.postJSON("/v1/users", map[string]string{"username": "bob", "password": "Ab1!wxy"}), http.StatusUnprocessableEntity, "password-policy")
	wantProblem(t, h.postJSON("/v1/users", map[string]string{"username": "carol", "password": "Abc1wxyz"}), http.StatusUnprocessableEntity, "password-policy")
}

// TestFaultNoSymbolRequired: no symbol passes, short still does not.
func TestFaultNoSymbolRequired(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Faults.NoSymbolRequired = true })
	h.signUp("alice", "Quartzlantern42")
	wantProblem(t, h.postJSON("/v1/users", map[string]string{"username": "bob", "password": "Quartzlan42"}), http.StatusUnprocessableEntity, "password-policy")
}

// TestFaultNoBreachCorpus: a breached password is accepted at sign-up
// and signs in without a reset.
func TestFaultNoBreachCorpus(t *testing.T) {
	const breached = "P@ssword12345!"
	if hit, err := OfflineCorpus().Breached(context.Background(), breached); err != nil || !hit {
		t.Fatalf("the corpus should know %q: %v %v", breached, hit, err)
	}
	h := newHarness(t, func(c *Config) { c.Faults.NoBreachCorpus = true })
	h.signUp("alice", breached)
	h.signInOK(creds("alice", breached))
}

// TestFaultNoRiskEngine: failures from many networks leave the account
// unthrottled, and the right password from a new network signs in.
func TestFaultNoRiskEngine(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Faults.NoRiskEngine = true })
	h.signUp("alice", strongPW)
	for i := range 12 {
		if w := h.signIn(creds("alice", fmt.Sprintf("Wrong-Password-99!%d", i)), fromIP(fmt.Sprintf("198.51.100.%d", 1+i))); w.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d with NoRiskEngine: %d %s", i, w.Code, w.Body)
		}
	}
	h.signInOK(creds("alice", strongPW), fromIP("203.0.113.77"))
}

// TestFaultNoTokenClass: a user token states no token_class, and
// identity's own verifier refuses it (the class claim is required).
func TestFaultNoTokenClass(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Faults.NoTokenClass = true })
	h.signUp("alice", strongPW)
	s := h.signInOK(creds("alice", strongPW))
	if c, ok := claimsOf(t, s.token)[ClaimTokenClass]; ok {
		t.Fatalf("with NoTokenClass the user token states token_class %v", c)
	}
	if w := h.do(http.MethodGet, "/v1/account", "", "", withBearer(s.token)); w.Code != http.StatusUnauthorized {
		t.Fatalf("a classless user token on identity's own route: %d %s, want 401", w.Code, w.Body)
	}
}
