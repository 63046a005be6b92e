package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/malai-sec/malai/examples/malai/identity/clientauth"
)

// TestIdentityAtTheEdge checks identity's routing through the real
// gateway: the token endpoint and key registration are not routed (404),
// no auditor client exists unless the evidence pass asks for one,
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
	// An ordinary run has no auditor client: even with the evidence
	// certificate nobody can register one.
	ev, err := sys.ComponentClient("evidence")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := clientauth.New(context.Background(), clientauth.Config{IdentityURL: sys.IdentityURL, HTTPClient: ev, Scopes: []string{"ledger:audit"}}); err == nil {
		t.Fatal("an auditor client exists in an ordinary run")
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

// TestRevokeTheWorkersKey: an operator revokes the worker's keys with
// `malai revoke-client` (a worker's own certificate may not); the worker
// is refused new tokens at once, and the ledger, the gateway and
// every other component go on working.
func TestRevokeTheWorkersKey(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system")
	}
	ctx := context.Background()
	sys, err := Start(ctx, Options{Addr: "127.0.0.1:0", DataDir: t.TempDir(), PerIP: 10_000, Auditor: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Close() })
	as := func(component string) *http.Client {
		cert, err := sys.CA.Issue(component)
		if err != nil {
			t.Fatal(err)
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: sys.CA.Pool(), Certificates: []tls.Certificate{cert}}}, Timeout: 10 * time.Second}
	}
	worker, err := clientauth.New(ctx, clientauth.Config{IdentityURL: sys.IdentityURL, HTTPClient: as("worker"), Scopes: []string{"ledger:transfer"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := worker.Token(); err != nil {
		t.Fatal(err)
	}
	// The operator's command: only its certificate may revoke.
	if _, err := revokeClient(ctx, as("worker"), sys.IdentityURL, "worker", ""); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("a worker revoking keys: %v", err)
	}
	operator, err := operatorClient(sys.CA)
	if err != nil {
		t.Fatal(err)
	}
	n, err := revokeClient(ctx, operator, sys.IdentityURL, "worker", "")
	if err != nil || n < 2 { // the running worker's key and this one's
		t.Fatalf("revoked %d keys: %v", n, err)
	}
	if _, err := worker.Token(); err != nil {
		t.Fatal("a cached token is still returned until it expires:", err)
	}
	// A task whose key is revoked gets no new token.
	fresh, err := clientauth.New(ctx, clientauth.Config{IdentityURL: sys.IdentityURL, HTTPClient: as("worker")})
	if err != nil {
		t.Fatal(err)
	}
	// The command line, as an operator types it.
	if err := revokeClientCmd([]string{"-data", sys.DataDir, "-identity", sys.IdentityURL, "-kid", fresh.KeyID(), "worker"}); err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Token(); !errors.Is(err, clientauth.ErrRefused) {
		t.Fatalf("the revoked worker key obtained a token: %v", err)
	}
	// Everyone else is unaffected.
	auditor, err := clientauth.New(ctx, clientauth.Config{IdentityURL: sys.IdentityURL, HTTPClient: as("evidence"), Scopes: []string{"ledger:audit"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := auditor.Token(); err != nil {
		t.Fatalf("the auditor after the worker's revocation: %v", err)
	}
	if _, err := sys.Identity.CreateUser(ctx, "still-works", "Tr1cky-Harbour-Lantern"); err != nil {
		t.Fatal(err)
	}
	pub := sys.HTTPClient()
	resp, err := pub.Post(sys.GatewayURL+"/v1/sessions", "application/json", strings.NewReader(`{"username":"still-works","password":"Tr1cky-Harbour-Lantern"}`))
	if err != nil {
		t.Fatal(err)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tr)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("sign-in through the gateway after the revocation: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", sys.GatewayURL+"/v1/accounts", nil)
	req.Header.Set("Authorization", "Bearer "+tr.AccessToken)
	resp, err = pub.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("the ledger through the gateway after the revocation: %d", resp.StatusCode)
	}
}
