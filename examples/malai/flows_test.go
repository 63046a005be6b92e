package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
)

// testFlowsInAllMode drives the customer, teller and MFA flows over real
// HTTPS through the gateway of the all-in-one system, asserting each
// outcome: a synchronous transfer moves money once however often it is
// retried, a reused key with another body and an overdraft are refused
// with problem+json and move nothing, a customer may neither deposit nor
// spend another's account, the TOTP user signs in only with a code, and
// /metrics is not on the public listener.
func testFlowsInAllMode(t *testing.T, sys *System) {
	ctx := context.Background()
	var creds demoFile
	b, _ := os.ReadFile(filepath.Join(sys.DataDir, demoCredentialsFile))
	if err := json.Unmarshal(b, &creds); err != nil {
		t.Fatal(err)
	}
	users := map[string]demoUser{}
	for _, u := range creds.Users {
		users[u.Username] = u
	}
	alice, bob, mia := users["alice"], users["bob"], users["mia-mfa"]
	c := demoClient{sys: sys, http: sys.HTTPClient()}
	atok, err := c.signIn(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	btok, err := c.signIn(ctx, bob)
	if err != nil {
		t.Fatal(err)
	}
	balance := func(tok, account string) int64 {
		t.Helper()
		st, body, err := c.do(ctx, "GET", "/v1/accounts/"+account, tok, nil)
		var a struct{ Balance int64 }
		if err != nil || st != http.StatusOK || json.Unmarshal(body, &a) != nil {
			t.Fatalf("GET account %s: %d %s %v", account, st, body, err)
		}
		return a.Balance
	}
	isProblem := func(body []byte) bool {
		var p struct {
			Type   string
			Status int
		}
		return json.Unmarshal(body, &p) == nil && p.Type != "" && p.Status >= 400
	}

	a0, b0 := balance(atok, alice.AccountID), balance(btok, bob.AccountID)
	transfer := map[string]any{"from": alice.AccountID, "to": bob.AccountID, "amount": 1234}
	st, first, err := c.do(ctx, "POST", "/v1/transfers", atok, transfer, "Idempotency-Key", "flow-sync-1")
	if err != nil || st != http.StatusCreated {
		t.Fatalf("transfer: %d %s %v", st, first, err)
	}
	for range 3 {
		st, again, err := c.do(ctx, "POST", "/v1/transfers", atok, transfer, "Idempotency-Key", "flow-sync-1")
		if err != nil || st != http.StatusCreated || !bytes.Equal(again, first) {
			t.Fatalf("retry: %d %s, want the first answer %s", st, again, first)
		}
	}
	if a, b := balance(atok, alice.AccountID), balance(btok, bob.AccountID); a != a0-1234 || b != b0+1234 {
		t.Fatalf("balances after one transfer retried: alice %d bob %d", a, b)
	}
	refusals := []struct {
		name   string
		tok    string
		path   string
		key    string
		body   map[string]any
		status int
	}{
		{"the key reused with another body", atok, "/v1/transfers", "flow-sync-1", map[string]any{"from": alice.AccountID, "to": bob.AccountID, "amount": 1}, http.StatusUnprocessableEntity},
		{"an overdraft", atok, "/v1/transfers", "flow-over", map[string]any{"from": alice.AccountID, "to": bob.AccountID, "amount": 10 * demoDeposit}, http.StatusUnprocessableEntity},
		{"spending another's account", btok, "/v1/transfers", "flow-theft", map[string]any{"from": alice.AccountID, "to": bob.AccountID, "amount": 1}, http.StatusForbidden},
		{"a customer's deposit", atok, "/v1/deposits", "flow-dep", map[string]any{"account": alice.AccountID, "amount": 1}, http.StatusForbidden},
	}
	for _, r := range refusals {
		st, body, err := c.do(ctx, "POST", r.path, r.tok, r.body, "Idempotency-Key", r.key)
		if err != nil || (st != r.status && !(r.status == http.StatusForbidden && st == http.StatusNotFound)) || !isProblem(body) {
			t.Errorf("%s: %d %s %v, want %d problem+json", r.name, st, body, err, r.status)
		}
	}
	if a, b := balance(atok, alice.AccountID), balance(btok, bob.AccountID); a != a0-1234 || b != b0+1234 {
		t.Fatalf("a refused request moved money: alice %d bob %d", a, b)
	}
	st, body, err := c.do(ctx, "GET", "/v1/accounts/"+alice.AccountID+"/transfers", atok, nil)
	if err != nil || st != http.StatusOK || !bytes.Contains(body, []byte(`1234`)) {
		t.Fatalf("alice's transfers: %d %s %v", st, body, err)
	}

	// MFA: a password alone gets no token; with the current code it does
	// (the next step's code, so the enrolment's own code is not reused).
	st, body, _ = c.do(ctx, "POST", "/v1/sessions", "", map[string]string{"username": mia.Username, "password": mia.Password})
	if bytes.Contains(body, []byte(`"access_token"`)) {
		t.Fatalf("the TOTP user signed in with a password alone: %d", st)
	}
	code, err := totp.GenerateCode(mia.TOTPSecret, time.Now().Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	st, body, err = c.do(ctx, "POST", "/v1/sessions", "", map[string]string{"username": mia.Username, "password": mia.Password, "totp_code": code})
	if err != nil || st != http.StatusOK || !bytes.Contains(body, []byte(`"access_token"`)) {
		t.Fatalf("TOTP sign-in with a code: %d %s %v", st, body, err)
	}

	// Telemetry stays internal.
	res, err := c.http.Get(sys.GatewayURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /metrics on the public listener: %d, want 404", res.StatusCode)
	}
}
