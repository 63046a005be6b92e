package web

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/malai-sec/malai/examples/malai/web/internal/sessionstore"
	"github.com/malai-sec/malai/headers"
	"github.com/malai-sec/malai/internal/fakeclock"
	"github.com/malai-sec/malai/keyring"
)

func TestSameOrigin(t *testing.T) {
	a := &App{origins: map[string]bool{}}
	pinned := &App{origins: map[string]bool{"https://bank.example": true}}
	tests := []struct {
		name   string
		app    *App
		host   string
		header map[string][]string
		want   bool
	}{
		{"own origin", a, "bank.example:8443", map[string][]string{"Origin": {"https://bank.example:8443"}}, true},
		{"own origin, other case", a, "Bank.Example:8443", map[string][]string{"Origin": {"https://bank.example:8443"}}, true},
		{"other port of the same host (same site)", a, "bank.example:8443", map[string][]string{"Origin": {"https://bank.example:9443"}}, false},
		{"plain http of the same host", a, "bank.example", map[string][]string{"Origin": {"http://bank.example"}}, false},
		{"other site", a, "bank.example", map[string][]string{"Origin": {"https://evil.example"}}, false},
		{"two Origin fields", a, "bank.example", map[string][]string{"Origin": {"https://bank.example", "https://bank.example"}}, false},
		{"null origin, same-origin fetch", a, "bank.example", map[string][]string{"Origin": {"null"}, "Sec-Fetch-Site": {"same-origin"}}, true},
		{"null origin, cross-site", a, "bank.example", map[string][]string{"Origin": {"null"}, "Sec-Fetch-Site": {"cross-site"}}, false},
		{"null origin alone", a, "bank.example", map[string][]string{"Origin": {"null"}}, false},
		{"no origin, same-site fetch", a, "bank.example", map[string][]string{"Sec-Fetch-Site": {"same-site"}}, false},
		{"nothing at all", a, "bank.example", nil, false},
		{"configured origin", pinned, "10.0.0.7:8443", map[string][]string{"Origin": {"https://bank.example"}}, true},
		{"configured origin refuses the Host's", pinned, "10.0.0.7:8443", map[string][]string{"Origin": {"https://10.0.0.7:8443"}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "https://"+tc.host+"/transfer", nil)
			r.Host = tc.host
			for k, v := range tc.header {
				r.Header[k] = v
			}
			if got := tc.app.sameOrigin(r); got != tc.want {
				t.Fatalf("sameOrigin = %v, want %v", got, tc.want)
			}
		})
	}
}

// newTestStore opens a bolt session store on now (nil: the real clock)
// and a fresh key ring.
func newTestStore(t *testing.T, now func() time.Time) (*sessionstore.Bolt, *keyring.Ring) {
	t.Helper()
	st, err := sessionstore.OpenBolt(filepath.Join(t.TempDir(), "s.db"), now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	k, _ := keyring.NewKey()
	ring, err := keyring.NewRing("k1", map[string]keyring.Key{"k1": k})
	if err != nil {
		t.Fatal(err)
	}
	return st, ring
}

func newTestSessions(t *testing.T) (*sessions, *fakeclock.Clock, *sessionstore.Bolt) {
	t.Helper()
	clk := fakeclock.New(time.Unix(1_800_000_000, 0))
	st, ring := newTestStore(t, clk.Now)
	return &sessions{store: st, ring: ring, now: clk.Now, idle: 15 * time.Minute, absolute: 8 * time.Hour, log: discard()}, clk, st
}

func TestSessionRecordIsSealedAndTimesOut(t *testing.T) {
	ctx := context.Background()
	m, clk, st := newTestSessions(t)
	rec := httptest.NewRecorder()
	h, err := m.create(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	c := rec.Result().Cookies()
	if len(c) != 1 || c[0].Name != CookieName || !c[0].HttpOnly || !c[0].Secure || c[0].SameSite != http.SameSiteStrictMode || c[0].Path != "/" || c[0].Domain != "" {
		t.Fatalf("cookie %+v", c)
	}
	if !regexp.MustCompile("^(?:" + CookieFormat + ")$").MatchString(c[0].Value) {
		t.Fatalf("cookie value %q is not of CookieFormat", c[0].Value)
	}
	h.sess.User, h.sess.Access, h.sess.Refresh = "alice", "eyJhbGciOiJFUzI1NiJ9.access-token", "refresh-token-value"
	if err := m.save(ctx, h); err != nil {
		t.Fatal(err)
	}
	raw, ok, _ := st.Get(ctx, h.key)
	if !ok || bytes.Contains(raw, []byte("access-token")) || bytes.Contains(raw, []byte("refresh-token-value")) || bytes.Contains(raw, []byte("alice")) {
		t.Fatal("the stored record shows its contents")
	}
	if _, ok, _ := st.Get(ctx, h.id); ok {
		t.Fatal("the record is stored under the cookie value itself")
	}
	// Moved under another key, the record does not open.
	_ = st.Set(ctx, storeKey("other"), raw, time.Hour)
	if _, err := m.load(ctx, "other"); !errors.Is(err, errNoSession) {
		t.Fatalf("a moved record opened: %v", err)
	}

	// Idle: used within the idle timeout it lives on; left alone it ends.
	for range 3 {
		clk.Advance(10 * time.Minute)
		if err := m.update(ctx, h, func(*session) error { return nil }); err != nil {
			t.Fatalf("session ended while in use: %v", err)
		}
	}
	clk.Advance(16 * time.Minute)
	if _, err := m.load(ctx, h.id); !errors.Is(err, errNoSession) {
		t.Fatalf("idle session still loads: %v", err)
	}

	// Absolute: however active, it ends 8 hours after it began.
	h2, _ := m.create(ctx, httptest.NewRecorder())
	h2.sess.User, h2.sess.Refresh = "alice", "r"
	_ = m.save(ctx, h2)
	for i := 0; i < 8*6; i++ {
		clk.Advance(10 * time.Minute)
		err := m.update(ctx, h2, func(*session) error { return nil })
		if i < 8*6-1 && err != nil {
			t.Fatalf("ended after %d minutes: %v", (i+1)*10, err)
		}
		if i == 8*6-1 && !errors.Is(err, errNoSession) {
			t.Fatalf("session alive after 8 hours: %v", err)
		}
	}
}

func TestRotateRetiresTheOldID(t *testing.T) {
	ctx := context.Background()
	m, _, _ := newTestSessions(t)
	h, _ := m.create(ctx, httptest.NewRecorder())
	oldID, oldCSRF := h.id, h.sess.CSRF
	rec := httptest.NewRecorder()
	if err := m.rotate(ctx, rec, h); err != nil {
		t.Fatal(err)
	}
	if h.id == oldID || h.sess.CSRF == oldCSRF {
		t.Fatal("rotation kept the id or the CSRF token")
	}
	if _, err := m.load(ctx, oldID); !errors.Is(err, errNoSession) {
		t.Fatal("the pre-rotation id still works (session fixation)")
	}
	if _, err := m.load(ctx, h.id); err != nil {
		t.Fatal(err)
	}
}

func FuzzCookieID(f *testing.F) {
	for _, s := range []string{"", "abc", "i_o2tVHL-HfGfLS5HYQjmAKELI76iZ9r-A-bF16dEu4", "====", "a; b=c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Cookie", CookieName+"="+v)
		id, ok := cookieID(r)
		if ok && (len(id) != 43 || storeKey(id) == "") {
			t.Fatalf("accepted %q", id)
		}
	})
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestReauthBodyTellsRecoveryCodesFromTOTP(t *testing.T) {
	tests := []struct {
		name, form string
		want       map[string]string
	}{
		{"password only", "password=pw", map[string]string{"password": "pw"}},
		{"TOTP code", "password=pw&code=123456", map[string]string{"password": "pw", "totp_code": "123456"}},
		{"TOTP code with spaces", "password=pw&code=+123+456+", map[string]string{"password": "pw", "totp_code": "123456"}},
		{"recovery code", "password=pw&code=abcd-efgh-ijkl-mnop", map[string]string{"password": "pw", "recovery_code": "abcd-efgh-ijkl-mnop"}},
		{"five digits is no TOTP code", "password=pw&code=12345", map[string]string{"password": "pw", "recovery_code": "12345"}},
		{"nothing", "", map[string]string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/security/mfa/disable", strings.NewReader(tc.form))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if err := r.ParseForm(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, reauthBody(r)); diff != "" {
				t.Fatalf("reauthBody (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCSPReportsRecordedAndAwaited(t *testing.T) {
	a := &App{reportCh: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.WaitCSPReports(ctx, 70) }()
	for i := range 70 {
		a.recordReports([]headers.Report{{Sample: strconv.Itoa(i)}})
	}
	if err := <-done; err != nil {
		t.Fatalf("WaitCSPReports: %v", err)
	}
	got := a.RecentCSPReports()
	if a.CSPReports() != 70 || len(got) != maxRecentReports || got[0].Sample != "6" || got[len(got)-1].Sample != "69" {
		t.Fatalf("%d reports counted, %d kept, first %q", a.CSPReports(), len(got), got[0].Sample)
	}
	short, stop := context.WithCancel(context.Background())
	stop()
	if err := a.WaitCSPReports(short, 71); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait for a report that never comes: %v", err)
	}
}

// TestSignedInPostAsksIdentityFirst: a session signed out elsewhere (its
// access token still unexpired) moves no money, and an identity that does
// not answer fails the post closed; a live session reaches the ledger.
func TestSignedInPostAsksIdentityFirst(t *testing.T) {
	problem401 := `{"type":"https://malai.example/problems/invalid-token","title":"Invalid token","status":401}`
	tests := []struct {
		name         string
		account      int // identity's status for GET /v1/account
		wantStatus   int
		wantLocation string
		reachLedger  bool
		signedOut    bool
	}{
		{"revoked session", http.StatusUnauthorized, http.StatusSeeOther, "/signin", false, true},
		{"identity failing", http.StatusServiceUnavailable, http.StatusServiceUnavailable, "", false, false},
		{"live session", http.StatusOK, 0, "", true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ledgerCalls atomic.Int32
			identity := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case r.URL.Path == "/v1/account" && tc.account == http.StatusOK:
					w.Header().Set("Content-Type", "application/json")
					_, _ = io.WriteString(w, `{"id":"u1","username":"alice","mfa":false}`)
				case r.URL.Path == "/v1/account" && tc.account != http.StatusUnauthorized:
					w.WriteHeader(tc.account)
				default: // /v1/account 401, and the refresh of a revoked session
					w.Header().Set("Content-Type", "application/problem+json")
					w.WriteHeader(http.StatusUnauthorized)
					_, _ = io.WriteString(w, problem401)
				}
			}))
			defer identity.Close()
			ledger := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ledgerCalls.Add(1)
				w.WriteHeader(http.StatusServiceUnavailable)
			}))
			defer ledger.Close()
			a := newTestApp(t, identity.URL, ledger.URL)
			ctx := context.Background()
			h, err := a.sessions.create(ctx, httptest.NewRecorder())
			if err != nil {
				t.Fatal(err)
			}
			h.sess.User, h.sess.Access, h.sess.Refresh = "alice", "access-token", "refresh-token"
			h.sess.AccessExp = a.sessions.now().Add(4 * time.Minute)
			if err := a.sessions.save(ctx, h); err != nil {
				t.Fatal(err)
			}
			form := "csrf=" + h.sess.CSRF + "&from=acct-a&to=acct-b&amount=5&idempotency_key=AAAAAAAAAAAAAAAAAAAAAA"
			r := httptest.NewRequest(http.MethodPost, "https://bank.example/transfer", strings.NewReader(form))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Header.Set("Origin", "https://bank.example")
			r.AddCookie(&http.Cookie{Name: CookieName, Value: h.id})
			rec := httptest.NewRecorder()
			a.Handler().ServeHTTP(rec, r)
			if tc.wantStatus != 0 && rec.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.wantStatus, rec.Body.String())
			}
			if loc := rec.Header().Get("Location"); tc.wantLocation != "" && loc != tc.wantLocation {
				t.Fatalf("Location %q, want %q", loc, tc.wantLocation)
			}
			if got := ledgerCalls.Load(); (got > 0) != tc.reachLedger {
				t.Fatalf("the ledger was called %d times; want called: %v", got, tc.reachLedger)
			}
			after, err := a.sessions.load(ctx, h.id)
			if err != nil {
				t.Fatal(err)
			}
			if after.sess.signedIn() == tc.signedOut {
				t.Fatalf("signed in after the post: %v, want %v", after.sess.signedIn(), !tc.signedOut)
			}
		})
	}
}

func newTestApp(t *testing.T, identityURL, ledgerURL string) *App {
	t.Helper()
	st, ring := newTestStore(t, nil)
	idU, _ := url.Parse(identityURL)
	ldU, _ := url.Parse(ledgerURL)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	a, err := New(Config{IdentityURL: idU, LedgerURL: ldU, Transport: tr, Store: st, Ring: ring, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	return a
}
