package jwtverify

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/malai-sec/malai/jwtverify/jwttest"
)

// TestDualLayer wires the reference system's two checks: the gateway
// verifies the token against the identity service's JWKS and forwards it;
// the ledger verifies it again with its own Verifier and cache. Requests
// that skip the gateway gain nothing.
func TestDualLayer(t *testing.T) {
	key := jwttest.NewKey(t, "ES256", "id-1")
	attacker := jwttest.NewKey(t, "ES256", "id-1")
	jwks := jwttest.NewServer(t, key)
	clock := newClock()
	newV := func(rec *recorder, cache int) *Verifier {
		v, err := New(Config{
			Issuers: []Issuer{{Issuer: testIss, JWKSURL: jwks.URL, FetchTimeout: testFetchTimeout,
				Audiences: []string{"gateway", "ledger"}}},
			Now: clock.Now, Observe: rec.observe, CacheSize: cache,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = v.Close() })
		waitReady(t, v)
		return v
	}
	gwRec, svcRec := &recorder{}, &recorder{}
	gw, svc := newV(gwRec, 0), newV(svcRec, 1000)

	ledger := httptest.NewServer(routes(svc))
	defer ledger.Close()
	target, _ := url.Parse(ledger.URL)
	gateway := httptest.NewServer(gw.Handler(httputil.NewSingleHostReverseProxy(target)))
	defer gateway.Close()

	do := func(base, path, tok string) int {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	now := clock.Now()
	user := key.Mint(t, jwttest.Claims(testIss, "ledger", "alice", now))
	forged := attacker.Mint(t, jwttest.Claims(testIss, "ledger", "alice", now))
	p := strings.Split(user, ".")
	stripped := p[0] + "." + p[1] + "."
	svcTok := key.Mint(t, func() map[string]any {
		c := jwttest.ServiceClaims(testIss, "ledger", "worker", now)
		c["scope"] = "ledger:write"
		return c
	}())

	// Through the gateway: both layers verify.
	if got := do(gateway.URL, "/user", user); got != http.StatusOK {
		t.Fatalf("valid token through gateway: %d", got)
	}
	if g, s := gwRec.all(), svcRec.all(); len(g) != 1 || !g[0].Accepted || len(s) != 1 || !s[0].Accepted {
		t.Fatalf("each layer must verify once: gateway %+v service %+v", g, s)
	}
	// The gateway stops a forgery before the service sees it.
	if got := do(gateway.URL, "/user", forged); got != http.StatusUnauthorized || len(svcRec.all()) != 1 {
		t.Fatalf("forged token through gateway: %d, service saw %d", got, len(svcRec.all()))
	}
	// Skipping the gateway: the service refuses on its own.
	for _, tc := range []struct {
		name, path, tok string
		want            int
		reason          Reason
	}{
		{"no token", "/user", "", 401, ReasonNoToken},
		{"forged", "/user", forged, 401, ReasonSignature},
		{"signature stripped", "/user", stripped, 401, ReasonMalformed},
		{"user token on internal route", "/internal", user, 403, ReasonWrongClass},
		{"service token on user route", "/user", svcTok, 403, ReasonWrongClass},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := do(ledger.URL, tc.path, tc.tok); got != tc.want {
				t.Fatalf("direct to service: %d, want %d", got, tc.want)
			}
			if e := svcRec.last(); e.Reason != tc.reason {
				t.Fatalf("service reason %q, want %q", e.Reason, tc.reason)
			}
		})
	}
	if got := do(ledger.URL, "/internal", svcTok); got != http.StatusOK {
		t.Fatalf("service token on internal route: %d", got)
	}
	// A token the gateway accepts for itself only is refused by a service
	// configured for its own audience.
	ledgerOnly, err := New(Config{Issuers: []Issuer{{Issuer: testIss, JWKSURL: jwks.URL, FetchTimeout: testFetchTimeout, Audiences: []string{"ledger"}}}, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer ledgerOnly.Close()
	waitReady(t, ledgerOnly)
	gwOnly := key.Mint(t, jwttest.Claims(testIss, "gateway", "alice", now))
	if _, err := ledgerOnly.Verify(t.Context(), gwOnly); ReasonOf(err) != ReasonAudience {
		t.Fatalf("gateway-audience token at the ledger: %v", err)
	}
}
