package identity

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeRange serves a k-anonymity range API for the given passwords and
// records the paths it was asked for.
func fakeRange(t *testing.T, counts map[string]int) (*httptest.Server, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path+" padding="+r.Header.Get("Add-Padding"))
		mu.Unlock()
		prefix := strings.TrimPrefix(r.URL.Path, "/range/")
		if prefix == "FAIL0" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "%s:0\r\n", strings.Repeat("0", 35)) // padding
		for pw, n := range counts {
			sum := sha1.Sum([]byte(pw))
			d := strings.ToUpper(hex.EncodeToString(sum[:]))
			if d[:5] == prefix {
				fmt.Fprintf(w, "%s:%d\r\n", d[5:], n)
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), paths...) }
}

func TestRangeChecker(t *testing.T) {
	srv, paths := fakeRange(t, map[string]int{"Leaked-Lantern-77": 12, "Padded-Only-88": 0})
	c := &RangeChecker{BaseURL: srv.URL + "/range/"}
	for pw, want := range map[string]bool{"Leaked-Lantern-77": true, "Padded-Only-88": false, strongPW: false} {
		got, err := c.Breached(context.Background(), pw)
		if err != nil || got != want {
			t.Fatalf("Breached(%q) = %v, %v; want %v", pw, got, err, want)
		}
	}
	for _, p := range paths() {
		prefix := strings.TrimSuffix(strings.TrimPrefix(p, "/range/"), " padding=true")
		if len(prefix) != 5 || strings.Contains(p, "Lantern") {
			t.Fatalf("request %q sends more than a 5-hex prefix or lacks padding", p)
		}
	}
	strict := &RangeChecker{BaseURL: srv.URL + "/range/", MinCount: 100}
	if hit, _ := strict.Breached(context.Background(), "Leaked-Lantern-77"); hit {
		t.Fatal("MinCount ignored")
	}
}

func TestRangeCheckerFailsClosed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()
	c := &RangeChecker{BaseURL: srv.URL + "/range/"}
	if _, err := c.Breached(context.Background(), strongPW); !errors.Is(err, ErrBreachService) {
		t.Fatalf("error %v", err)
	}
	if _, err := (&RangeChecker{}).Breached(context.Background(), strongPW); !errors.Is(err, ErrBreachService) {
		t.Fatal("zero RangeChecker did not fail")
	}
	// Wired into the service: sign-up answers 503.
	h := newHarness(t, func(cfg *Config) { cfg.Breach = AnyBreachChecker(OfflineCorpus(), c) })
	wantProblem(t, h.postJSON("/v1/users", map[string]string{"username": "alice", "password": strongPW}), 503, "service-unavailable")
	// The offline corpus answers first for a common password: no network.
	wantProblem(t, h.postJSON("/v1/users", map[string]string{"username": "alice", "password": "Password123!"}), 422, "password-compromised")

	// Sign-in with a right password fails closed too (no token while the
	// breach status is unknown).
	tc := &toggleChecker{}
	h2 := newHarness(t, func(cfg *Config) { cfg.Breach = tc })
	h2.signUp("alice", strongPW)
	tc.set(ErrBreachService)
	wantProblem(t, h2.signIn(map[string]string{"username": "alice", "password": strongPW}), 503, "service-unavailable")
	tc.set(nil)
	h2.signInOK(map[string]string{"username": "alice", "password": strongPW})
}

type toggleChecker struct {
	mu  sync.Mutex
	err error
}

func (c *toggleChecker) set(err error) { c.mu.Lock(); c.err = err; c.mu.Unlock() }

func (c *toggleChecker) Breached(context.Context, string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return false, c.err
}

func TestRangeCheckerAtSignUp(t *testing.T) {
	srv, _ := fakeRange(t, map[string]int{"Leaked-Lantern-77": 3})
	h := newHarness(t, func(cfg *Config) {
		cfg.Breach = AnyBreachChecker(OfflineCorpus(), &RangeChecker{BaseURL: srv.URL + "/range/"})
	})
	wantProblem(t, h.postJSON("/v1/users", map[string]string{"username": "alice", "password": "Leaked-Lantern-77"}), 422, "password-compromised")
	h.signUp("alice", strongPW)
}
