package identity

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/malai-sec/malai/examples/malai/identity/clientauth"
	"github.com/malai-sec/malai/examples/malai/identity/internal/pgtest"
	"github.com/malai-sec/malai/examples/malai/identity/store"
	"github.com/malai-sec/malai/examples/malai/identity/store/boltstore"
	"github.com/malai-sec/malai/examples/malai/identity/store/pgstore"
	"github.com/malai-sec/malai/internal/servicetest"
)

func pgFactory(t testing.TB) func() store.Store {
	pg := pgtest.New(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := pgstore.Migrate(ctx, conn, pgstore.MigrateConfig{Schema: pg.Name}); err != nil {
		t.Fatal(err)
	}
	return func() store.Store {
		st, err := pgstore.New(ctx, pgstore.Config{DSN: pg.URL, Schema: pg.Name})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
}

var engines = []struct {
	name string
	f    storeFactory
}{
	{"bbolt", boltFactory},
	{"postgres", pgFactory},
}

// TestRestartThenReRegister is the account takeover after a restart,
// written as the attack: alice signs up and signs in; the service
// restarts on the same data; an attacker signs up "alice" again. The
// name is refused, alice's password, subject, second factor, sessions
// and signing keys are all still hers, and after the account is deleted
// the name stays refused, so nothing of hers can pass to anyone else.
func TestRestartThenReRegister(t *testing.T) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			h := newHarnessOn(t, e.f, nil)
			sub := h.signUp("alice", strongPW)
			s := h.signInOK(creds("alice", strongPW))
			secret, _ := h.enrollTOTP(s, strongPW)
			jwks := string(h.svc.JWKS())

			h.restart()

			wantProblem(t, h.postJSON("/v1/users", map[string]string{"username": "alice", "password": otherPW}), http.StatusConflict, "username-taken")
			wantProblem(t, h.postJSON("/v1/users", map[string]string{"username": "ALICE", "password": otherPW}), http.StatusConflict, "username-taken")
			wantProblem(t, h.signIn(creds("alice", otherPW), fromIP("203.0.113.66")), http.StatusUnauthorized, "invalid-credentials")
			if string(h.svc.JWKS()) != jwks {
				t.Fatal("the signing keys changed across the restart")
			}
			// The access token issued before the restart still verifies.
			if w := h.do(http.MethodGet, "/v1/account", "", "", withBearer(s.token)); w.Code != http.StatusOK {
				t.Fatalf("token from before the restart: %d %s", w.Code, w.Body)
			}
			// The refresh session survived and rotates.
			w := h.do(http.MethodPost, RefreshPath, "", "", withRefresh(s.refresh), browser())
			if w.Code != http.StatusOK {
				t.Fatalf("refresh after restart: %d %s", w.Code, w.Body)
			}
			if claimsOf(t, decodeToken(t, w).AccessToken)["sub"] != sub {
				t.Fatal("the subject changed across the restart")
			}
			// The second factor survived: the password alone is not enough.
			p := wantProblem(t, h.signIn(creds("alice", strongPW), withDevice(s.device)), http.StatusUnauthorized, "mfa-required")
			w = h.postJSON(SignInPath+"/mfa", map[string]string{"mfa_token": p.MFAToken, "totp_code": h.code(secret)})
			if w.Code != http.StatusOK {
				t.Fatalf("MFA sign-in after restart: %d %s", w.Code, w.Body)
			}

			if err := h.svc.DeleteUser(context.Background(), "alice"); err != nil {
				t.Fatal(err)
			}
			h.restart()
			wantProblem(t, h.postJSON("/v1/users", map[string]string{"username": "alice", "password": otherPW}), http.StatusConflict, "username-taken")
			if _, err := h.svc.CreateUser(context.Background(), "alice", otherPW); !errors.Is(err, ErrUsernameTaken) {
				t.Fatalf("operator re-creating a deleted name: %v", err)
			}
			wantProblem(t, h.signIn(creds("alice", strongPW)), http.StatusUnauthorized, "invalid-credentials")
			wantProblem(t, h.do(http.MethodGet, "/v1/account", "", "", withBearer(s.token)), http.StatusUnauthorized, "invalid-token")
			wantProblem(t, h.do(http.MethodPost, RefreshPath, "", "", withRefresh(s.refresh), browser()), http.StatusUnauthorized, "invalid-refresh")
			types := h.auditTypes()
			if !contains(types, AuditUserDeleted) || !contains(types, AuditMFAEnrolled) {
				t.Fatalf("audit chain %v", types)
			}
		})
	}
}

// TestCountersSurviveRestart: a restart does not reset the throttles an
// attacker has earned.
func TestCountersSurviveRestart(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW)
	for range 5 {
		wantProblem(t, h.signIn(creds("alice", "Wrong-Password-1!"), fromIP("198.51.100.7")), http.StatusUnauthorized, "invalid-credentials")
	}
	h.restart()
	w := h.signIn(creds("alice", "Wrong-Password-1!"), fromIP("198.51.100.7"))
	wantProblem(t, w, http.StatusTooManyRequests, "sign-in-throttled")
	if w.Header().Get("Retry-After") == "" {
		t.Fatal("throttled without Retry-After")
	}
}

// TestScheduledRotationAcrossRestarts: the rotation date is stored, so a
// key signs for its interval whether or not the service restarts, and a
// token signed by the retired key keeps verifying until it expires.
func TestScheduledRotationAcrossRestarts(t *testing.T) {
	h := newHarness(t, nil)
	h.signUp("alice", strongPW)
	s := h.signInOK(creds("alice", strongPW))
	kid := h.svc.keys.Published()[0]
	h.clock.Advance(DefaultKeyRotationInterval - 3*time.Minute)
	h.restart()
	if got := h.svc.keys.Published()[0]; got != kid {
		t.Fatal("a restart rotated the key early")
	}
	s = h.signInOK(creds("alice", strongPW), withDevice(s.device))
	h.clock.Advance(4 * time.Minute)
	h.restart()
	if got := h.svc.keys.Published()[0]; got == kid {
		t.Fatal("the key outlived its interval")
	}
	if w := h.do(http.MethodGet, "/v1/account", "", "", withBearer(s.token)); w.Code != http.StatusOK {
		t.Fatalf("a token of the retired key: %d %s", w.Code, w.Body)
	}
}

// TestNothingInTheClear: the embedded store's file holds no username,
// client address or user agent, and no TOTP secret.
func TestNothingInTheClear(t *testing.T) {
	dir := t.TempDir()
	h := newHarnessOn(t, func(testing.TB) func() store.Store {
		return func() store.Store {
			st, err := boltstore.Open(dir, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
	}, nil)
	h.signUp("alice-in-clear", strongPW, fromIP("192.0.2.77"))
	s := h.signInOK(creds("alice-in-clear", strongPW), fromIP("192.0.2.77"), withHeader("User-Agent", "Browser-Marker-77"))
	secret, _ := h.enrollTOTP(s, strongPW)
	h.signIn(creds("alice-in-clear", wrongPW), fromIP("198.51.100.77"))
	h.restart() // flush and reopen
	b, err := os.ReadFile(filepath.Join(dir, boltstore.FileName))
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{"alice-in-clear", "192.0.2.77", "198.51.100.77", "Browser-Marker-77", secret, strongPW} {
		if bytes.Contains(b, []byte(leak)) {
			t.Fatalf("the store file holds %q in the clear", leak)
		}
	}
}

// TestStoreDownAndBack: with PostgreSQL unreachable, sign-up, sign-in,
// refresh and the token endpoint fail closed with 503 and change nothing;
// once it is back, everything works, with nothing lost.
func TestStoreDownAndBack(t *testing.T) {
	var proxy *servicetest.Proxy
	h := newHarnessOn(t, func(t testing.TB) func() store.Store {
		pg := pgtest.New(t)
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, pg.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if err := pgstore.Migrate(ctx, conn, pgstore.MigrateConfig{Schema: pg.Name}); err != nil {
			t.Fatal(err)
		}
		cc, err := pgx.ParseConfig(pg.URL)
		if err != nil {
			t.Fatal(err)
		}
		proxy = servicetest.NewProxy(t, net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port))))
		u, _ := url.Parse(pg.URL)
		u.Host = proxy.Addr()
		return func() store.Store {
			st, err := pgstore.New(ctx, pgstore.Config{DSN: u.String(), Schema: pg.Name})
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
	}, nil)
	h.signUp("alice", strongPW)
	s := h.signInOK(creds("alice", strongPW))
	key, _ := clientauth.NewKey()
	if _, err := h.svc.RegisterClientKey(context.Background(), "worker", key.PublicJWK()); err != nil {
		t.Fatal(err)
	}

	proxy.Down()
	wantProblem(t, h.postJSON("/v1/users", map[string]string{"username": "bob", "password": strongPW}), http.StatusServiceUnavailable, "service-unavailable")
	wantProblem(t, h.signIn(creds("alice", strongPW)), http.StatusServiceUnavailable, "service-unavailable")
	wantProblem(t, h.do(http.MethodPost, RefreshPath, "", "", withRefresh(s.refresh), browser()), http.StatusServiceUnavailable, "service-unavailable")
	a, _ := key.Assertion("worker", testIssuer+TokenPath, h.clock.Now())
	if code, e, _ := h.tokenForm(assertionForm(a), withHeader("X-Test-Peer", "worker")); code != http.StatusServiceUnavailable {
		t.Fatalf("token endpoint with the store down: %d %+v", code, e)
	}

	proxy.Up()
	eventually(t, func() bool { return h.signIn(creds("alice", strongPW)).Code == http.StatusOK })
	// The refused refresh changed nothing: the cookie still rotates.
	h.refresh(s)
	h.signUp("bob", strongPW)
	if code, e, _ := h.tokenForm(assertionForm(a), withHeader("X-Test-Peer", "worker")); code != 200 {
		t.Fatalf("the assertion refused while the store was down, after: %d %+v", code, e)
	}
}

func eventually(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
