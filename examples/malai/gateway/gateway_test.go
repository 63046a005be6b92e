package gateway

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malai-sec/malai/clientip"
	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/jwtverify/jwttest"
)

const iss = "https://identity.test"

type upstream struct {
	mu        sync.Mutex
	reqs      []*http.Request
	setHeader string // a header the service sets on its answers
	*httptest.Server
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs = append(u.reqs, r.Clone(r.Context()))
		if u.setHeader != "" {
			w.Header().Set(u.setHeader, "from-the-service")
		}
		u.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) last() *http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		return nil
	}
	return u.reqs[len(u.reqs)-1]
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

func TestGatewayRouting(t *testing.T) {
	key := jwttest.NewKey(t, "ES256", "k1")
	v, err := jwtverify.New(jwtverify.Config{Issuers: []jwtverify.Issuer{{Issuer: iss, Keys: jwttest.Set(t, key), Audiences: []string{"malai-api"}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	id, ledger := newUpstream(t), newUpstream(t)
	idU, _ := url.Parse(id.URL)
	ldU, _ := url.Parse(ledger.URL)
	edge, err := clientip.New(clientip.Config{}) // trusts no proxy
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(Config{Upstreams: map[string]*url.URL{"identity": idU, "ledger": ldU}, Routes: testRoutes(), Transport: http.DefaultTransport, Verifier: v,
		ClientIP: edge.Resolve, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	h := g.Handler()
	do := func(method, path, tok string, hdr map[string]string) int {
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader(`{"username":"alice"}`)
		}
		r := httptest.NewRequest(method, path, body)
		r.RemoteAddr = "198.51.100.7:40000"
		r.Host = "localhost"
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("User-Agent", "malai-test")
		r.Header.Set("Accept", "application/json")
		if tok != "" {
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}

	t.Run("a client's X-Forwarded-For is replaced by the resolved address", func(t *testing.T) {
		if code := do("POST", "/v1/users", "", map[string]string{"X-Forwarded-For": "203.0.113.9"}); code != 200 {
			t.Fatalf("status %d", code)
		}
		if got := id.last().Header.Get("X-Forwarded-For"); got != "198.51.100.7" {
			t.Fatalf("identity saw X-Forwarded-For %q, want the TCP peer 198.51.100.7", got)
		}
	})
	t.Run("internal routes are not routed", func(t *testing.T) {
		before := ledger.count()
		if code := do("POST", "/internal/v1/transfers", "", nil); code != 404 {
			t.Fatalf("status %d, want 404", code)
		}
		if ledger.count() != before {
			t.Fatal("an internal route reached the ledger through the gateway")
		}
	})
	user := key.Mint(t, jwttest.Claims(iss, "malai-api", "user:alice", time.Now()))
	svc := key.Mint(t, jwttest.ServiceClaims(iss, "malai-api", "worker", time.Now()))
	t.Run("fault: no JWT check #1 forwards a tampered token", func(t *testing.T) {
		faulty, err := New(Config{Upstreams: map[string]*url.URL{"identity": idU, "ledger": ldU}, Routes: testRoutes(), Transport: http.DefaultTransport,
			Verifier: v, ClientIP: edge.Resolve, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Faults: Faults{NoTokenCheck: true}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { faulty.Close() })
		before := ledger.count()
		r := httptest.NewRequest("GET", "/v1/accounts", nil)
		r.RemoteAddr, r.Host = "198.51.100.8:40000", "localhost"
		r.Header.Set("User-Agent", "malai-test")
		r.Header.Set("Accept", "application/json")
		r.Header.Set("Authorization", "Bearer not.a.token")
		w := httptest.NewRecorder()
		faulty.Handler().ServeHTTP(w, r)
		if w.Code != 200 || ledger.count() != before+1 {
			t.Fatalf("status %d, reached the ledger %v: with the fault the gateway should forward unverified", w.Code, ledger.count() > before)
		}
	})
	for _, tc := range []struct {
		name, tok string
		want      int
		reaches   bool
	}{
		{"no token stops at JWT check #1", "", 401, false},
		{"a tampered token stops at JWT check #1", user[:len(user)-4] + "AAAA", 401, false},
		{"a service token cannot use a user route", svc, 403, false},
		{"a user token is forwarded with its Authorization", user, 200, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := ledger.count()
			if code := do("GET", "/v1/accounts", tc.tok, nil); code != tc.want {
				t.Fatalf("status %d, want %d", code, tc.want)
			}
			if reached := ledger.count() > before; reached != tc.reaches {
				t.Fatalf("reached the ledger: %v, want %v", reached, tc.reaches)
			}
			if tc.reaches && ledger.last().Header.Get("Authorization") != "Bearer "+tc.tok {
				t.Fatal("the ledger did not get the caller's token for its own check")
			}
		})
	}
}
