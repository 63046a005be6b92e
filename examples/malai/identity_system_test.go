package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestIdentityAtTheEdge checks identity's routing through the real
// gateway: the token endpoint and key registration are not routed (404),
// sign-out is, the account routes need a user token at the gateway, and
// the key set and metadata keep their max-age through both header
// layers.
func TestIdentityAtTheEdge(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system")
	}
	sys, err := Start(context.Background(), Options{Addr: "127.0.0.1:0", DataDir: t.TempDir(), PerIP: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Close() })
	c := sys.HTTPClient()
	do := func(method, path, body string, hdr ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, sys.GatewayURL+path, strings.NewReader(body))
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 400 {
			t.Logf("%s %s → %d %s", method, path, resp.StatusCode, b)
		}
		return resp
	}
	form := "application/x-www-form-urlencoded"
	for _, p := range []string{"/oauth2/token", "/internal/v1/clients", "/internal/v1/clients/worker/revoke"} {
		if r := do("POST", p, "grant_type=client_credentials", "Content-Type", form); r.StatusCode != http.StatusNotFound {
			t.Fatalf("POST %s through the gateway: %d, want 404", p, r.StatusCode)
		}
	}
	if r := do("POST", "/v1/refresh/revoke", "", "Origin", sys.GatewayURL, "X-Malai-CSRF", "1"); r.StatusCode != http.StatusNoContent {
		t.Fatalf("sign-out through the gateway: %d %v", r.StatusCode, r.Header)
	}
	for _, p := range []string{"/v1/account", "/v1/sessions"} {
		r := do("GET", p, "")
		if r.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Fatalf("GET %s without a token: %d %v", p, r.StatusCode, r.Header)
		}
	}
	if r := do("POST", "/v1/mfa/totp", `{"password":"x"}`, "Content-Type", "application/json"); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("MFA enrolment without a token at the gateway: %d", r.StatusCode)
	}
	for _, p := range []string{"/.well-known/jwks.json", "/.well-known/oauth-authorization-server"} {
		if r := do("GET", p, ""); r.StatusCode != 200 || r.Header.Get("Cache-Control") != "public, max-age=300" {
			t.Fatalf("GET %s: %d Cache-Control %q", p, r.StatusCode, r.Header.Get("Cache-Control"))
		}
	}
	if r := do("GET", "/v1/accounts", ""); r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("an API response lost no-store: %q", r.Header.Get("Cache-Control"))
	}
}
