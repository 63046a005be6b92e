package gateway

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/malai-sec/malai/clientip"
	"github.com/malai-sec/malai/correlation"
	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/jwtverify/jwttest"
	"github.com/malai-sec/malai/ratelimit"
)

type edge struct {
	g            *Gateway
	h            http.Handler
	id, ledger   *upstream
	userToken    string
	denied, good string
}

func newEdge(t testing.TB, mod func(*Config)) *edge {
	t.Helper()
	key := jwttest.NewKey(t, "ES256", "k1")
	v, err := jwtverify.New(jwtverify.Config{Issuers: []jwtverify.Issuer{{Issuer: iss, Keys: jwttest.Set(t, key), Audiences: []string{"malai-api"}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	e := &edge{id: newUpstream(t), ledger: newUpstream(t), denied: "203.0.113.66", good: "198.51.100.7"}
	idU, _ := url.Parse(e.id.URL)
	ldU, _ := url.Parse(e.ledger.URL)
	res, err := clientip.New(clientip.Config{})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := ratelimit.NewReputation(ratelimit.ReputationConfig{Deny: []netip.Prefix{netip.MustParsePrefix(e.denied + "/32")}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Upstreams: map[string]*url.URL{"identity": idU, "ledger": ldU}, Routes: testRoutes(), Transport: http.DefaultTransport, Verifier: v,
		ClientIP: res.Resolve, Reputation: rep, PerIP: 100, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if mod != nil {
		mod(&cfg)
	}
	e.g, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.g.Close() })
	cm, err := correlation.New(correlation.Config{})
	if err != nil {
		t.Fatal(err)
	}
	e.h = cm.Handler(e.g.Handler())
	e.userToken = key.Mint(t, jwttest.Claims(iss, "malai-api", "user:alice", time.Now()))
	return e
}

func (e *edge) do(from, method, target, body string, hdr map[string]string) *httptest.ResponseRecorder {
	var rb io.Reader
	if body != "" {
		rb = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, target, rb)
	r.RemoteAddr = from + ":40000"
	r.Host = "localhost"
	r.Header.Set("User-Agent", "malai-test/1.0")
	r.Header.Set("Accept", "application/json")
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w
}

// A burst of attacks from one address reaches 429: each refused request
// costs BlockedCost of the per-IP budget of 100/min.
func TestBlockedBurstReaches429(t *testing.T) {
	e := newEdge(t, nil)
	codes := map[int]int{}
	first429 := 0
	for i := 1; i <= 30; i++ {
		c := e.do("192.0.2.10", "POST", "/v1/transfers", `{"memo":"<script>alert(1)</script>"}`, map[string]string{"Authorization": "Bearer " + e.userToken}).Code
		codes[c]++
		if c == http.StatusTooManyRequests && first429 == 0 {
			first429 = i
		}
	}
	// Unweighted, the 101st request would be the first refused; weighted,
	// the 11th (a few later as the budget refills while the test runs).
	if first429 == 0 || first429 > 2*100/BlockedCost {
		t.Fatalf("codes %v; first 429 at request %d, want by request %d", codes, first429, 2*100/BlockedCost)
	}
	// Another address is unaffected.
	if c := e.do("192.0.2.11", "GET", "/healthz", "", nil).Code; c != http.StatusOK {
		t.Fatalf("other address: %d", c)
	}
	t.Logf("30 attacks from one address: %v (first 429 at request %d)", codes, first429)
}

// A deny-listed address is refused before the WAF runs; with the limits
// moved after the WAF (the fault switch) the WAF runs first.
func TestDenyListBeforeWAF(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fault   bool
		inspect bool
	}{{"limits first", false, false}, {"fault: limits after the WAF", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEdge(t, func(c *Config) { c.Faults.LimitAfterWAF = tc.fault })
			before := e.g.WAFStats().Inspected()
			w := e.do(e.denied, "POST", "/v1/sessions", `{"username":"a","password":"b"}`, nil)
			if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "ip-denied") {
				t.Fatalf("deny-listed address: %d %s", w.Code, w.Body)
			}
			if inspected := e.g.WAFStats().Inspected() > before; inspected != tc.inspect {
				t.Fatalf("WAF ran: %v, want %v", inspected, tc.inspect)
			}
			if e.id.count() != 0 {
				t.Fatal("a deny-listed request reached identity")
			}
		})
	}
}

// Oversized shapes are refused before the WAF runs, with the status that
// names the excess; with the fault switch they reach it.
func TestOversizedShapesBeforeWAF(t *testing.T) {
	cookies := strings.Repeat("c=1; ", 3000)
	args := "/v1/accounts?" + strings.Repeat("a=1&", 3000)
	for _, tc := range []struct {
		name, method, target, body string
		hdr                        map[string]string
		manyHeaders                int
		want                       int
	}{
		{"thousands of cookies", "GET", "/healthz", "", map[string]string{"Cookie": cookies}, 0, 431},
		{"thousands of headers", "GET", "/healthz", "", nil, 3000, 431},
		{"thousands of arguments", "GET", args[:2000], "", nil, 0, 400},
		{"a very long URL", "GET", "/v1/accounts?q=" + strings.Repeat("x", 5000), "", nil, 0, 414},
		{"a body over identity's 4 KiB", "POST", "/v1/sessions", `{"username":"` + strings.Repeat("a", 5000) + `"}`, nil, 0, 413},
		{"a body over the ledger's 16 KiB", "POST", "/v1/transfers", `{"memo":"` + strings.Repeat("a", 17<<10) + `"}`, nil, 0, 413},
		{"a body on a route without one", "GET", "/v1/accounts", `{"a":1}`, nil, 0, 413},
		{"text/plain to a JSON route", "POST", "/v1/sessions", `{"username":"a"}`, map[string]string{"Content-Type": "text/plain"}, 0, 415},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEdge(t, nil)
			hdr := map[string]string{}
			for k, v := range tc.hdr {
				hdr[k] = v
			}
			for i := 0; i < tc.manyHeaders; i++ {
				hdr["X-H"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+itoa(i)] = "1"
			}
			before := e.g.WAFStats()
			w := e.do(e.good, tc.method, tc.target, tc.body, hdr)
			if w.Code != tc.want || w.Header().Get("Content-Type") != "application/problem+json" {
				t.Fatalf("status %d (%s), want %d problem+json", w.Code, w.Header().Get("Content-Type"), tc.want)
			}
			if after := e.g.WAFStats(); after != before {
				t.Fatalf("the WAF saw the request: %+v → %+v", before, after)
			}
		})
	}
	t.Run("fault: no shape limits", func(t *testing.T) {
		e := newEdge(t, func(c *Config) { c.Faults.NoShapeLimits = true })
		before := e.g.WAFStats().Inspected()
		e.do(e.good, "GET", "/healthz", "", map[string]string{"Cookie": strings.Repeat("c=1; ", 40)})
		if e.g.WAFStats().Inspected() == before {
			t.Fatal("with the shape limits off the WAF did not inspect the request")
		}
	})
}

func itoa(i int) string { return strconv.Itoa(i) }

// Passwords that look like attacks reach identity; the same text in a
// ledger field is refused. Malformed JSON gets the service's own 400.
func TestCredentialsAndOrdinaryClients(t *testing.T) {
	e := newEdge(t, nil)
	for _, pw := range []string{"' OR '1'='1' --Aa9", "$(whoami)Aa1!long", "../../../etc/passwd#A9", "<script>alert(1)</script>A9"} {
		b, _ := json.Marshal(map[string]string{"username": "alice", "password": pw})
		if c := e.do(e.good, "POST", "/v1/sessions", string(b), nil).Code; c != http.StatusOK {
			t.Errorf("sign-in with password %q: %d", pw, c)
		}
		b, _ = json.Marshal(map[string]string{"from": "acc_1", "to": "acc_2", "memo": pw})
		if c := e.do("192.0.2.50", "POST", "/v1/transfers", string(b), map[string]string{"Authorization": "Bearer " + e.userToken}).Code; c != http.StatusForbidden {
			t.Errorf("ledger memo %q: %d, want 403", pw, c)
		}
	}
	before := e.id.count()
	if c := e.do(e.good, "POST", "/v1/sessions", `{"username":`, map[string]string{"Expect": "100-continue"}).Code; c != http.StatusOK {
		t.Errorf("malformed JSON: %d, want the service's own answer", c)
	}
	if e.id.count() != before+1 {
		t.Error("malformed JSON did not reach identity")
	}
}

// Responses: problem+json 404/405, one X-Request-Id, a Host allow-list.
func TestResponses(t *testing.T) {
	e := newEdge(t, nil)
	w := e.do(e.good, "GET", "/nope", "", nil)
	if w.Code != 404 || w.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("404: %d %s", w.Code, w.Header().Get("Content-Type"))
	}
	w = e.do(e.good, "DELETE", "/v1/sessions", "", nil)
	if w.Code != 405 || w.Header().Get("Content-Type") != "application/problem+json" || !strings.Contains(w.Header().Get("Allow"), "POST") {
		t.Fatalf("405: %d %s Allow %q", w.Code, w.Header().Get("Content-Type"), w.Header().Get("Allow"))
	}
	e.id.setHeader = "X-Request-Id"
	w = e.do(e.good, "POST", "/v1/sessions", `{"username":"a","password":"correct horse battery"}`, nil)
	if ids := w.Header().Values("X-Request-Id"); w.Code != 200 || len(ids) != 1 {
		t.Fatalf("status %d, X-Request-Id %q: want exactly one", w.Code, ids)
	}
	for _, host := range []string{"localhost:8443", "127.0.0.1", "[::1]:8443", "[::1]", "LOCALHOST."} {
		r := httptest.NewRequest("GET", "/healthz", nil)
		r.RemoteAddr, r.Host = e.good+":1", host
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, r)
		if rec.Code != 200 {
			t.Errorf("Host %q: %d", host, rec.Code)
		}
	}
	for _, host := range []string{"evil.example", "localhost.evil.example", "10.0.0.1"} {
		r := httptest.NewRequest("GET", "/healthz", nil)
		r.RemoteAddr, r.Host = e.good+":1", host
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, r)
		if rec.Code != http.StatusMisdirectedRequest {
			t.Errorf("Host %q: %d, want 421", host, rec.Code)
		}
	}
}

// The routes of the system's own services are inspected with the
// Services profile: PHP text in a ledger memo is inert and reaches the
// ledger, while an XSS payload in the same field is refused before it.
// The web app's pages keep the whole rule set: the same PHP text in a
// page's query is refused.
func TestServiceRoutesUseTheServiceProfile(t *testing.T) {
	var pages atomic.Int64
	e := newEdge(t, func(c *Config) {
		c.Routes = append(c.Routes, Route{Pattern: "GET /page", Upstream: "web", Web: true})
		c.Web = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { pages.Add(1) })
	})
	if c := e.do(e.good, "GET", "/page?q=ordinary+words", "", nil).Code; c != http.StatusOK || pages.Load() != 1 {
		t.Fatalf("a benign page request: %d, served %d", c, pages.Load())
	}
	if c := e.do(e.good, "GET", "/page?q=%3C%3Fphp%20echo%20%24a%3B%20%3F%3E", "", nil).Code; c != http.StatusForbidden || pages.Load() != 1 {
		t.Fatalf("PHP text in a page's query: %d, served %d; want 403 (the whole rule set on web pages)", c, pages.Load())
	}
	auth := map[string]string{"Authorization": "Bearer " + e.userToken}
	before := e.ledger.count()
	if c := e.do(e.good, "POST", "/v1/transfers", `{"from":"acc_1","to":"acc_2","amount":1,"memo":"<?php echo $a; ?>"}`, auth).Code; c == http.StatusForbidden {
		t.Fatalf("PHP text in a ledger memo: %d; the service profile was not applied", c)
	}
	if e.ledger.count() != before+1 {
		t.Fatalf("PHP text in a ledger memo did not reach the ledger")
	}
	if c := e.do(e.good, "POST", "/v1/transfers", `{"from":"acc_1","to":"acc_2","amount":1,"memo":"<script>alert(document.cookie)</script>"}`, auth).Code; c != http.StatusForbidden {
		t.Fatalf("XSS in a ledger memo: %d, want 403", c)
	}
	if e.ledger.count() != before+1 {
		t.Fatalf("the refused request reached the ledger")
	}
}
