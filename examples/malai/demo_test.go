package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestEmbeddedDefaultDemo starts the all-in-one system as the default
// command does: the demo data is seeded on first start through the
// gateway (customers' accounts funded by the teller's deposits, an
// auditor, a TOTP user), the generated passwords are only in the 0600
// credentials file, endpoints.json names the running system, the
// banner's three curl commands work as printed, the auditor reads
// GET /v1/audit/verify, and a restart seeds nothing again.
func TestEmbeddedDefaultDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system twice")
	}
	ctx := context.Background()
	data := t.TempDir()
	sys, err := Start(ctx, Options{Addr: "127.0.0.1:0", DataDir: data, PerIP: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			sys.Close()
		}
	})
	if err := startEmbedded(ctx, sys, true); err != nil {
		t.Fatal(err)
	}

	credsPath := filepath.Join(data, demoCredentialsFile)
	fi, err := os.Stat(credsPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s mode %v, want 0600", demoCredentialsFile, fi.Mode().Perm())
	}
	credsBytes, _ := os.ReadFile(credsPath)
	var creds demoFile
	if err := json.Unmarshal(credsBytes, &creds); err != nil {
		t.Fatal(err)
	}
	roles := map[string]int{}
	passwords := map[string]bool{}
	var alice, auditor, mfa demoUser
	for _, u := range creds.Users {
		roles[u.Roles[0]]++
		passwords[u.Password] = true
		if u.Roles[0] == "customer" && u.AccountID == "" {
			t.Errorf("customer %s has no account", u.Username)
		}
		switch u.Username {
		case "alice":
			alice = u
		case "audrey-auditor":
			auditor = u
		case "mia-mfa":
			mfa = u
		}
	}
	if roles["customer"] < 3 || roles["teller"] != 1 || roles["auditor"] != 1 || len(passwords) != len(creds.Users) || mfa.TOTPSecret == "" {
		t.Fatalf("demo users: %+v", creds.Users)
	}
	// The passwords are in no other file under the data directory.
	_ = filepath.Walk(data, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || p == credsPath {
			return nil
		}
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(alice.Password)) {
			t.Errorf("a demo password is also in %s", p)
		}
		return nil
	})

	var ep Endpoints
	b, err := os.ReadFile(filepath.Join(data, endpointsFile))
	if err != nil || json.Unmarshal(b, &ep) != nil {
		t.Fatalf("%s: %v %s", endpointsFile, err, b)
	}
	if ep.Gateway != sys.GatewayURL || ep.Identity != sys.IdentityURL || ep.Ledger != sys.LedgerURL || !strings.HasSuffix(ep.Metrics, "/metrics") || !fileExists(ep.CA) {
		t.Fatalf("%s: %+v", endpointsFile, ep)
	}

	c := demoClient{sys: sys, http: sys.HTTPClient()}
	tok, err := c.signIn(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	st, body, err := c.do(ctx, "GET", "/v1/accounts/"+alice.AccountID, tok, nil)
	if err != nil || st != http.StatusOK || !bytes.Contains(body, []byte(`100000`)) {
		t.Fatalf("alice's account: %d %s %v", st, body, err)
	}
	// The auditor verifies the chain through the gateway.
	atok, err := c.signIn(ctx, auditor)
	if err != nil {
		t.Fatal(err)
	}
	st, body, err = c.do(ctx, "GET", "/v1/audit/verify", atok, nil)
	var v struct {
		OK            bool            `json:"ok"`
		Size          int64           `json:"size"`
		Checkpoint    json.RawMessage `json:"checkpoint"`
		BalancesMatch bool            `json:"balances_match"`
	}
	if err != nil || st != http.StatusOK || json.Unmarshal(body, &v) != nil || !v.OK || !v.BalancesMatch || v.Size < 3 || len(v.Checkpoint) == 0 {
		t.Fatalf("audit verify: %d %s %v", st, body, err)
	}
	// A customer may not.
	if st, _, _ := c.do(ctx, "GET", "/v1/audit/verify", tok, nil); st != http.StatusForbidden {
		t.Fatalf("a customer read the audit verification: %d", st)
	}
	// The MFA user gets no token from a password alone.
	st, body, _ = c.do(ctx, "POST", "/v1/sessions", "", map[string]string{"username": mfa.Username, "password": mfa.Password})
	if bytes.Contains(body, []byte(`"access_token"`)) {
		t.Fatalf("the TOTP user signed in with a password alone: %d", st)
	}

	// The banner's commands, as printed.
	var banner bytes.Buffer
	printBanner(&banner, sys, true)
	var script []string
	for line := range strings.SplitSeq(banner.String(), "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "curl ") || strings.HasPrefix(l, "TOKEN=") {
			script = append(script, l)
		}
	}
	if len(script) != 3 {
		t.Fatalf("the banner has %d curl commands, want 3:\n%s", len(script), banner.String())
	}
	if strings.Contains(banner.String(), alice.Password) {
		t.Fatal("the banner prints a password")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Log("no curl on PATH: the banner's commands were not run")
	} else {
		out, err := exec.Command("sh", "-c", "set -e\n"+strings.Join(script, "\n")).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "ok") || !strings.Contains(string(out), alice.AccountID) {
			t.Fatalf("the banner's commands: %v\n%s\n%s", err, script, out)
		}
	}

	// A restart seeds nothing again and the passwords stay valid.
	closed = true
	if err := sys.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	sys2, err := Start(ctx, Options{Addr: "127.0.0.1:0", DataDir: data, PerIP: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys2.Close() })
	if err := startEmbedded(ctx, sys2, true); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(credsPath); !bytes.Equal(again, credsBytes) {
		t.Fatal("a restart rewrote the demo credentials")
	}
	c2 := demoClient{sys: sys2, http: sys2.HTTPClient()}
	tok, err = c2.signIn(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	st, body, err = c2.do(ctx, "GET", "/v1/accounts/"+alice.AccountID, tok, nil)
	if err != nil || st != http.StatusOK || !bytes.Contains(body, []byte(`100000`)) || bytes.Contains(body, []byte(`200000`)) {
		t.Fatalf("after a restart alice's account: %d %s %v", st, body, err)
	}
}
