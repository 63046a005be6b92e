package identity

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/malai-sec/malai/examples/malai/identity/internal/lockout"
)

const wrongPW = "Wrong-Password-1!"

// refusedDecisions returns the reasons of the sign-in refusals in the
// audit chain.
func (h *harness) refusedDecisions() []string {
	var out []string
	for _, e := range h.auditEvents() {
		if e.Type != AuditSignInRefused {
			continue
		}
		var p struct {
			Outcome string   `json:"outcome"`
			Reasons []string `json:"reasons"`
		}
		_ = json.Unmarshal(e.Payload, &p)
		out = append(out, p.Outcome+":"+strings.Join(p.Reasons, ","))
	}
	return out
}

func retryAfter(t *testing.T, code int, hdr http.Header) time.Duration {
	t.Helper()
	if code != http.StatusTooManyRequests {
		return 0
	}
	n, err := strconv.Atoi(hdr.Get("Retry-After"))
	if err != nil || n < 1 {
		t.Fatalf("429 with Retry-After %q", hdr.Get("Retry-After"))
	}
	return time.Duration(n) * time.Second
}

// TestAimedLockoutSparesTheOwner is the aimed lockout, written as the
// attack: five wrong passwords from each of four networks. The attacker
// is throttled; the owner, on the device she signed in from before,
// signs in at once from her usual network, from one of the attacker's
// networks and from a new one.
func TestAimedLockoutSparesTheOwner(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW, fromIP("192.0.2.10"))
	owner := h.signInOK(creds("alice", strongPW), fromIP("192.0.2.10"))

	throttled := 0
	for n := range 4 {
		for range 5 {
			w := h.signIn(creds("alice", wrongPW), fromIP(fmt.Sprintf("198.51.100.%d", 1+n)))
			switch w.Code {
			case http.StatusUnauthorized:
			case http.StatusTooManyRequests:
				throttled++
				retryAfter(t, w.Code, w.Header())
			default:
				t.Fatalf("attacker got %d %s", w.Code, w.Body)
			}
		}
	}
	if throttled == 0 {
		t.Fatal("20 failures from 4 networks were never throttled")
	}
	for _, ip := range []string{"192.0.2.10", "198.51.100.1", "203.0.113.200"} {
		w := h.signIn(creds("alice", strongPW), fromIP(ip), withDevice(owner.device))
		if w.Code != http.StatusOK {
			t.Fatalf("owner on her known device from %s: %d %s", ip, w.Code, w.Body)
		}
	}
	// Without the device cookie the owner waits like anyone else: a
	// progressive delay, never a block that the attacker can keep renewing
	// for free (refused attempts do not count).
	w := h.signIn(creds("alice", strongPW), fromIP("203.0.113.201"))
	wantProblem(t, w, http.StatusTooManyRequests, "sign-in-throttled")
	// A device cookie of another account, or a forged one, is no pass.
	h.signUp("mallory", otherPW)
	m := h.signInOK(creds("mallory", otherPW), fromIP("203.0.113.9"))
	for _, c := range []string{m.device, owner.device + "x", strings.Replace(owner.device, "v1.", "v1.A", 1)} {
		wantProblem(t, h.signIn(creds("alice", wrongPW), fromIP("198.51.100.1"), withDevice(c)), http.StatusTooManyRequests, "sign-in-throttled")
	}
	decisions := strings.Join(h.refusedDecisions(), " ")
	if !strings.Contains(decisions, lockout.ReasonAccount) || !strings.Contains(decisions, lockout.ReasonPair) {
		t.Fatalf("audit chain lacks the lockout decisions: %s", decisions)
	}
	if !strings.Contains(h.logs.String(), `"outcome":"throttled"`) {
		t.Fatal("throttle decisions not logged")
	}
}

// TestThrottleIsAProgressiveDelay: the wait doubles with every failure
// past the limit, attempts refused during the wait do not lengthen it,
// and it is capped.
func TestThrottleIsAProgressiveDelay(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW)
	var waits []time.Duration
	for range 20 {
		w := h.signIn(creds("alice", wrongPW), fromIP("198.51.100.7"))
		if d := retryAfter(t, w.Code, w.Header()); d > 0 {
			// Hammering during the wait changes nothing.
			for range 3 {
				w2 := h.signIn(creds("alice", wrongPW), fromIP("198.51.100.7"))
				if retryAfter(t, w2.Code, w2.Header()) != d {
					t.Fatal("a refused attempt changed the wait")
				}
			}
			waits = append(waits, d)
			h.clock.Advance(d)
		}
	}
	if len(waits) < 5 || waits[0] != time.Second || waits[1] != 2*time.Second || waits[2] != 4*time.Second {
		t.Fatalf("waits %v, want 1s, 2s, 4s, …", waits)
	}
}

// TestSprayingDetectedAndSlowed: one password tried once against each of
// thirty accounts from thirty networks. No per-account or per-network
// count moves, but the password's count does: after five accounts every
// further attempt with it waits, each wait longer, and the decision is in
// the logs and the audit chain.
func TestSprayingDetectedAndSlowed(t *testing.T) {
	h := newHarness(t, nil)
	for i := range 30 {
		if _, err := h.svc.CreateUser(t.Context(), fmt.Sprintf("user%02d", i), strongPW+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	sprayed := "Spring-Harvest-2026!"
	tried, throttled := 0, 0
	for i := range 30 {
		w := h.signIn(creds(fmt.Sprintf("user%02d", i), sprayed), fromIP(fmt.Sprintf("203.0.113.%d", 10+i)))
		switch w.Code {
		case http.StatusUnauthorized:
			tried++
		case http.StatusTooManyRequests:
			throttled++
		default:
			t.Fatalf("attempt %d: %d %s", i, w.Code, w.Body)
		}
	}
	if tried > 6 || throttled < 24 {
		t.Fatalf("spraying: %d attempts checked, %d throttled", tried, throttled)
	}
	decisions := strings.Join(h.refusedDecisions(), " ")
	if !strings.Contains(decisions, lockout.ReasonSpray) {
		t.Fatalf("audit chain lacks the spraying decision: %s", decisions)
	}
	// A few passwords each is still spraying: a second password is counted
	// on its own.
	for i := range 10 {
		h.signIn(creds(fmt.Sprintf("user%02d", i), "Autumn-Leaves-2026!"), fromIP(fmt.Sprintf("203.0.113.%d", 100+i)))
	}
	wantProblem(t, h.signIn(creds("user20", "Autumn-Leaves-2026!"), fromIP("203.0.113.150")), http.StatusTooManyRequests, "sign-in-throttled")
	// The slow-down does not touch other passwords or known devices.
	if w := h.signIn(creds("user29", strongPW+"29"), fromIP("203.0.113.151")); w.Code != http.StatusOK {
		t.Fatalf("a legitimate sign-in during the spray: %d %s", w.Code, w.Body)
	}
}

// TestDistributedGuessingOneAccount: thirty networks, one guess each, one
// account. The per-network counts stay at one; the account's count
// across networks throttles the guessing.
func TestDistributedGuessingOneAccount(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW)
	throttled := 0
	for i := range 30 {
		w := h.signIn(creds("alice", fmt.Sprintf("Guess-Number-%02d!", i)), fromIP(fmt.Sprintf("198.51.100.%d", 10+i)))
		if w.Code == http.StatusTooManyRequests {
			throttled++
		}
	}
	if throttled < 20 {
		t.Fatalf("distributed guessing: only %d of 30 throttled", throttled)
	}
}

// TestCredentialStuffingOneNetwork: one network trying many accounts is
// throttled as a network.
func TestCredentialStuffingOneNetwork(t *testing.T) {
	h := newHarness(t, nil)
	throttled := 0
	for i := range 30 {
		w := h.signIn(creds(fmt.Sprintf("victim%02d", i), fmt.Sprintf("Leaked-Pass-%02d!", i)), fromIP("198.51.100.99"))
		if w.Code == http.StatusTooManyRequests {
			throttled++
		}
	}
	if throttled < 15 {
		t.Fatalf("stuffing from one network: only %d of 30 throttled", throttled)
	}
	if !strings.Contains(strings.Join(h.refusedDecisions(), " "), lockout.ReasonStuffing) {
		t.Fatal("no credential-stuffing decision audited")
	}
}

// TestHighRiskUnknownDeviceBlocked: while the account is under attack, a
// right password from an unknown device on a network the account never
// used is refused (as a wrong password) when the account has no second
// factor, and needs the second factor when it has one.
func TestHighRiskUnknownDeviceBlocked(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW)
	h.signUp("bob", strongPW)
	bob := h.signInOK(creds("bob", strongPW), fromIP("192.0.2.10"))
	secret, _ := h.enrollTOTP(bob, strongPW)
	for _, name := range []string{"alice", "bob"} {
		for i := range 6 {
			h.signIn(creds(name, wrongPW), fromIP(fmt.Sprintf("198.51.100.%d", 1+i)))
		}
	}
	h.clock.Advance(2 * time.Minute) // past the progressive delay
	wantProblem(t, h.signIn(creds("alice", strongPW), fromIP("203.0.113.77")), http.StatusUnauthorized, "invalid-credentials")
	if !strings.Contains(strings.Join(h.refusedDecisions(), " "), "blocked-after-password") {
		t.Fatal("the high-risk refusal is not audited")
	}
	h.clock.Advance(2 * time.Minute)
	p := wantProblem(t, h.signIn(creds("bob", strongPW), fromIP("203.0.113.78")), http.StatusUnauthorized, "mfa-required")
	w := h.postJSON(SignInPath+"/mfa", map[string]string{"mfa_token": p.MFAToken, "totp_code": h.code(secret)}, fromIP("203.0.113.78"))
	if w.Code != http.StatusOK {
		t.Fatalf("high risk with a second factor: %d %s", w.Code, w.Body)
	}
	// A few typos from one's own network are no attack: a new network
	// alone never blocks.
	h.signUp("carol", strongPW)
	for range 3 {
		h.signIn(creds("carol", wrongPW), fromIP("192.0.2.30"))
	}
	if w := h.signIn(creds("carol", strongPW), fromIP("203.0.113.79")); w.Code != http.StatusOK {
		t.Fatalf("three typos then a new network: %d %s", w.Code, w.Body)
	}
}

// TestTOTPGuessingBounded: with the password known, one-time-code
// guesses are bounded per account with exponential back-off, and the
// owner's known device has a budget of its own.
func TestTOTPGuessingBounded(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW)
	owner := h.signInOK(creds("alice", strongPW))
	secret, _ := h.enrollTOTP(owner, strongPW)
	var waits []time.Duration
	checked := 0
	for range 12 {
		w := h.signIn(map[string]string{"username": "alice", "password": strongPW, "totp_code": "000000"}, fromIP("198.51.100.5"))
		if d := retryAfter(t, w.Code, w.Header()); d > 0 {
			waits = append(waits, d)
			h.clock.Advance(d)
			continue
		}
		wantProblem(t, w, http.StatusUnauthorized, "invalid-credentials")
		checked++
	}
	if len(waits) < 3 || waits[0] != 30*time.Second || waits[1] != time.Minute || waits[2] != 2*time.Minute {
		t.Fatalf("code waits %v, want 30s, 1m, 2m, …", waits)
	}
	// One more wrong code right now, so the back-off is running.
	for {
		w := h.signIn(map[string]string{"username": "alice", "password": strongPW, "totp_code": "000000"}, fromIP("198.51.100.5"))
		if d := retryAfter(t, w.Code, w.Header()); d > 0 {
			h.clock.Advance(d)
			continue
		}
		break
	}
	// Through the two-step route too: the same budget.
	p := wantProblem(t, h.signIn(creds("alice", strongPW), fromIP("198.51.100.5")), http.StatusUnauthorized, "mfa-required")
	wantProblem(t, h.postJSON(SignInPath+"/mfa", map[string]string{"mfa_token": p.MFAToken, "totp_code": "000000"}, fromIP("198.51.100.5")),
		http.StatusTooManyRequests, "sign-in-throttled")
	// The owner, on her device, is not held back by the attacker's guesses.
	w := h.signIn(map[string]string{"username": "alice", "password": strongPW, "totp_code": h.code(secret)}, withDevice(owner.device))
	if w.Code != http.StatusOK {
		t.Fatalf("owner's code during the guessing: %d %s", w.Code, w.Body)
	}
	if !strings.Contains(strings.Join(h.refusedDecisions(), " "), lockout.ReasonCodes) {
		t.Fatal("code throttling not audited")
	}
}

// TestTwoStepMFA: a right password on an MFA account yields a one-use
// mfa_token instead of a session; the token with a code signs in, a
// mistyped code can be corrected, and the token cannot be used twice.
func TestTwoStepMFA(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW)
	s := h.signInOK(creds("alice", strongPW))
	secret, codes := h.enrollTOTP(s, strongPW)
	w := h.signIn(creds("alice", strongPW))
	p := wantProblem(t, w, http.StatusUnauthorized, "mfa-required")
	if p.MFAToken == "" || len(w.Result().Cookies()) != 0 {
		t.Fatalf("mfa-required: token %q cookies %v", p.MFAToken, w.Result().Cookies())
	}
	// A wrong code: refused, with a fresh token; the first is spent.
	retry := wantProblem(t, h.postJSON(SignInPath+"/mfa", map[string]string{"mfa_token": p.MFAToken, "totp_code": "123456"}), http.StatusUnauthorized, "invalid-credentials")
	if retry.MFAToken == "" || retry.MFAToken == p.MFAToken {
		t.Fatalf("a wrong code got no fresh mfa_token: %+v", retry)
	}
	wantProblem(t, h.postJSON(SignInPath+"/mfa", map[string]string{"mfa_token": p.MFAToken, "totp_code": h.code(secret)}), http.StatusUnauthorized, "invalid-mfa-token")
	ok := h.postJSON(SignInPath+"/mfa", map[string]string{"mfa_token": retry.MFAToken, "totp_code": h.code(secret)})
	if ok.Code != http.StatusOK {
		t.Fatalf("mfa step: %d %s", ok.Code, ok.Body)
	}
	p = retry
	if amr := claimsOf(t, decodeToken(t, ok).AccessToken)[ClaimAMR]; fmt.Sprint(amr) != "[pwd otp mfa]" {
		t.Fatalf("amr %v", amr)
	}
	wantProblem(t, h.postJSON(SignInPath+"/mfa", map[string]string{"mfa_token": p.MFAToken, "recovery_code": codes[0]}), http.StatusUnauthorized, "invalid-mfa-token")
	// A forged or expired token is refused.
	wantProblem(t, h.postJSON(SignInPath+"/mfa", map[string]string{"mfa_token": p.MFAToken + "x", "recovery_code": codes[0]}), http.StatusUnauthorized, "invalid-mfa-token")
	p = wantProblem(t, h.signIn(creds("alice", strongPW)), http.StatusUnauthorized, "mfa-required")
	h.clock.Advance(MFATokenTTL)
	wantProblem(t, h.postJSON(SignInPath+"/mfa", map[string]string{"mfa_token": p.MFAToken, "recovery_code": codes[0]}), http.StatusUnauthorized, "invalid-mfa-token")
	// A recovery code is single-use.
	p = wantProblem(t, h.signIn(creds("alice", strongPW)), http.StatusUnauthorized, "mfa-required")
	if w := h.postJSON(SignInPath+"/mfa", map[string]string{"mfa_token": p.MFAToken, "recovery_code": strings.ToUpper(codes[1])}); w.Code != http.StatusOK {
		t.Fatalf("recovery code: %d %s", w.Code, w.Body)
	}
	w = h.signIn(map[string]string{"username": "alice", "password": strongPW, "recovery_code": codes[1]})
	wantProblem(t, w, http.StatusUnauthorized, "invalid-credentials")
}

// TestTOTPReplayRefused: one code, one sign-in, even raced.
func TestTOTPReplayRefused(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW)
	s := h.signInOK(creds("alice", strongPW))
	secret, _ := h.enrollTOTP(s, strongPW)
	code := h.code(secret)
	body := map[string]string{"username": "alice", "password": strongPW, "totp_code": code}
	results := make(chan int, 6)
	for range 6 {
		go func() { results <- h.signIn(body, withDevice(s.device)).Code }()
	}
	ok := 0
	for range 6 {
		if <-results == http.StatusOK {
			ok++
		}
	}
	if ok != 1 {
		t.Fatalf("one TOTP code signed in %d times", ok)
	}
}
