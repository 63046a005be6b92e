package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/malai-sec/malai/examples/malai/internal/atomicfile"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
	"github.com/malai-sec/malai/examples/malai/ledger"
)

// Files the embedded default writes under the data directory.
const (
	// demoCredentialsFile lists the demo users and their generated
	// passwords (0600); nothing else holds the passwords.
	demoCredentialsFile = "demo-credentials.json"
	// endpointsFile is the stable interface scripts use to find a running
	// system.
	endpointsFile = "endpoints.json"
)

// demoUser is one entry of demo-credentials.json.
type demoUser struct {
	Username   string   `json:"username"`
	Password   string   `json:"password"`
	Roles      []string `json:"roles"`
	AccountID  string   `json:"account_id,omitempty"`
	TOTPSecret string   `json:"totp_secret,omitempty"`
}

// demoFile is demo-credentials.json. Each user is written on a line of
// its own, with username and password first, so a shell can pick one out
// (the banner's curl commands do).
type demoFile struct {
	Users []demoUser `json:"users"`
}

// demoDeposit is what the teller deposits into each customer's account.
const demoDeposit = 100_000

// Endpoints is <data>/endpoints.json.
type Endpoints struct {
	Gateway  string `json:"gateway"`
	HTTP     string `json:"http"`
	Identity string `json:"identity"`
	Ledger   string `json:"ledger"`
	// Metrics is the gateway's /metrics (internal listener, a monitor's
	// certificate); MetricsByComponent every component's.
	Metrics            string            `json:"metrics"`
	MetricsByComponent map[string]string `json:"metrics_by_component"`
	// CA is the path of the CA certificate (ca.pem).
	CA string `json:"ca"`
}

// writeEndpoints writes <data>/endpoints.json for the running system.
func writeEndpoints(sys *System) error {
	ca, err := filepath.Abs(sys.CAFile)
	if err != nil {
		return err
	}
	ep := Endpoints{Gateway: sys.GatewayURL, HTTP: sys.RedirectURL, Identity: sys.IdentityURL, Ledger: sys.LedgerURL, CA: ca,
		MetricsByComponent: map[string]string{}}
	for name, u := range sys.URLs {
		ep.MetricsByComponent[name] = u + "/metrics"
	}
	ep.Metrics = ep.MetricsByComponent[platform.Gateway]
	b, err := json.MarshalIndent(ep, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(sys.DataDir, endpointsFile), append(b, '\n'), 0o644)
}

// seedDemo creates the demo data on a system's first start, through the
// gateway like any client: two customers with accounts funded by a
// teller's deposits, a teller, an auditor, and a customer with TOTP
// enrolled, each with a generated password. The passwords are kept only
// in <data>/demo-credentials.json (0600), written before the first user
// is created and completed step by step, so a start interrupted half way
// resumes where it stopped; once complete, later starts change nothing.
func seedDemo(ctx context.Context, sys *System) error {
	path := filepath.Join(sys.DataDir, demoCredentialsFile)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	partial := path + ".partial"
	var f demoFile
	if b, err := os.ReadFile(partial); err == nil {
		if err := json.Unmarshal(b, &f); err != nil {
			return fmt.Errorf("demo: %s: %w", filepath.Base(partial), err)
		}
	} else {
		for _, u := range []struct {
			name string
			role string
		}{{"alice", "customer"}, {"bob", "customer"}, {"terry-teller", "teller"}, {"audrey-auditor", "auditor"}, {"mia-mfa", "customer"}} {
			pw, err := demoPassword()
			if err != nil {
				return err
			}
			du := demoUser{Username: u.name, Password: pw, Roles: []string{u.role}}
			if u.role == "customer" {
				du.AccountID = "acc-" + randomHex(6)
			}
			f.Users = append(f.Users, du)
		}
	}
	save := func() error { return writeDemoFile(partial, f) }
	if err := save(); err != nil {
		return err
	}
	c := demoClient{sys: sys, http: sys.HTTPClient()}
	policy := filepath.Join(sys.DataDir, "ledger-policy.csv")
	var teller string
	tokens := map[string]string{}
	for _, u := range f.Users {
		sub, err := c.signUp(ctx, u)
		if err != nil {
			return err
		}
		for _, r := range u.Roles {
			if r == "customer" {
				continue
			}
			if err := grantOnce(policy, sub, "role:"+r); err != nil {
				return err
			}
		}
		tok, err := c.signIn(ctx, u)
		if err != nil {
			return err
		}
		tokens[u.Username] = tok
		if u.Roles[0] == "teller" {
			teller = tok
		}
	}
	// The grants take effect in the live policy.
	if err := sys.Reload(); err != nil {
		return fmt.Errorf("demo: reload the policy: %w", err)
	}
	for i, u := range f.Users {
		if u.AccountID == "" {
			continue
		}
		if err := c.openAccount(ctx, tokens[u.Username], u.AccountID); err != nil {
			return err
		}
		if err := c.deposit(ctx, teller, u.AccountID, "demo-fund-"+u.AccountID); err != nil {
			return err
		}
		if u.Username == "mia-mfa" && u.TOTPSecret == "" {
			secret, err := c.enrollTOTP(ctx, tokens[u.Username], u.Password)
			if err != nil {
				return err
			}
			// Saved before the confirmation, so a restart here still knows it.
			f.Users[i].TOTPSecret = secret
			if err := save(); err != nil {
				return err
			}
			if err := c.confirmTOTP(ctx, tokens[u.Username], secret); err != nil {
				return err
			}
		}
	}
	if err := os.Rename(partial, path); err != nil {
		return err
	}
	return nil
}

// demoPassword is a generated password that meets the sign-up policy
// (12+ characters, upper, lower, digit, symbol) and holds no character a
// shell or JSON would need to quote.
func demoPassword() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "Demo-" + hex.EncodeToString(b[:]) + "-Q7", nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writeDemoFile writes f with one user per line, 0600.
func writeDemoFile(path string, f demoFile) error {
	var buf bytes.Buffer
	buf.WriteString("{\"users\":[\n")
	for i, u := range f.Users {
		b, err := json.Marshal(u)
		if err != nil {
			return err
		}
		buf.Write(b)
		if i < len(f.Users)-1 {
			buf.WriteByte(',')
		}
		buf.WriteByte('\n')
	}
	buf.WriteString("]}\n")
	return atomicfile.Write(path, buf.Bytes(), 0o600)
}

// grantOnce adds "g, subject, role" to the policy file unless it is there.
func grantOnce(policyFile, subject, role string) error {
	b, err := os.ReadFile(policyFile)
	if err != nil {
		return err
	}
	line := "g, " + subject + ", " + role
	for l := range strings.SplitSeq(string(b), "\n") {
		if strings.TrimSpace(l) == line {
			return nil
		}
	}
	return ledger.GrantRole(policyFile, subject, role)
}

// demoClient calls the gateway as a client.
type demoClient struct {
	sys  *System
	http *http.Client
}

func (c demoClient) do(ctx context.Context, method, path, token string, body any, hdr ...string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.sys.GatewayURL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := c.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("demo: %s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return res.StatusCode, rb, err
}

// expect turns an unexpected status into an error naming the step (the
// body is problem+json without secrets).
func expect(step string, status int, body []byte, err error, ok ...int) error {
	if err != nil {
		return err
	}
	for _, s := range ok {
		if status == s {
			return nil
		}
	}
	return fmt.Errorf("demo: %s: HTTP %d %s", step, status, bytes.TrimSpace(body))
}

// signUp creates u (an account already taken by an interrupted earlier
// start is signed into instead) and returns its subject.
func (c demoClient) signUp(ctx context.Context, u demoUser) (string, error) {
	st, b, err := c.do(ctx, "POST", "/v1/users", "", map[string]string{"username": u.Username, "password": u.Password})
	if err := expect("sign up "+u.Username, st, b, err, http.StatusCreated, http.StatusConflict); err != nil {
		return "", err
	}
	if st == http.StatusCreated {
		var r struct{ Sub string }
		if json.Unmarshal(b, &r) == nil && r.Sub != "" {
			return r.Sub, nil
		}
	}
	tok, err := c.signIn(ctx, u)
	if err != nil {
		return "", err
	}
	st, b, err = c.do(ctx, "GET", "/v1/account", tok, nil)
	if err := expect("read "+u.Username, st, b, err, http.StatusOK); err != nil {
		return "", err
	}
	var r struct{ Sub string }
	if json.Unmarshal(b, &r) != nil || r.Sub == "" {
		return "", errors.New("demo: no subject for " + u.Username)
	}
	return r.Sub, nil
}

func (c demoClient) signIn(ctx context.Context, u demoUser) (string, error) {
	body := map[string]string{"username": u.Username, "password": u.Password}
	st, b, err := c.do(ctx, "POST", "/v1/sessions", "", body)
	if err := expect("sign in "+u.Username, st, b, err, http.StatusOK); err != nil {
		return "", err
	}
	var r struct {
		AccessToken string `json:"access_token"`
	}
	if json.Unmarshal(b, &r) != nil || r.AccessToken == "" {
		return "", errors.New("demo: sign in " + u.Username + ": no access token")
	}
	return r.AccessToken, nil
}

func (c demoClient) openAccount(ctx context.Context, token, id string) error {
	st, b, err := c.do(ctx, "POST", "/v1/accounts", token, map[string]string{"id": id}, "Idempotency-Key", "demo-open-"+id)
	return expect("open "+id, st, b, err, http.StatusCreated, http.StatusOK, http.StatusConflict)
}

func (c demoClient) deposit(ctx context.Context, teller, account, key string) error {
	st, b, err := c.do(ctx, "POST", "/v1/deposits", teller, map[string]any{"account": account, "amount": demoDeposit}, "Idempotency-Key", key)
	return expect("deposit into "+account, st, b, err, http.StatusCreated, http.StatusOK)
}

func (c demoClient) enrollTOTP(ctx context.Context, token, password string) (string, error) {
	st, b, err := c.do(ctx, "POST", "/v1/mfa/totp", token, map[string]string{"password": password})
	if err := expect("enrol TOTP", st, b, err, http.StatusCreated); err != nil {
		return "", err
	}
	var r struct{ Secret string }
	if json.Unmarshal(b, &r) != nil || r.Secret == "" {
		return "", errors.New("demo: TOTP enrolment returned no secret")
	}
	return r.Secret, nil
}

func (c demoClient) confirmTOTP(ctx context.Context, token, secret string) error {
	code, err := totp.GenerateCode(secret, time.Now())
	if err != nil {
		return err
	}
	st, b, err := c.do(ctx, "POST", "/v1/mfa/totp/confirm", token, map[string]string{"code": code})
	return expect("confirm TOTP", st, b, err, http.StatusOK, http.StatusCreated, http.StatusNoContent)
}

// startEmbedded finishes the start of the all-in-one system: the demo
// data (first start, when wanted) and endpoints.json.
func startEmbedded(ctx context.Context, sys *System, demo bool) error {
	if demo {
		if err := seedDemo(ctx, sys); err != nil {
			return err
		}
	}
	return writeEndpoints(sys)
}

// printBanner tells the user where the system is and gives three curl
// commands that work as printed (in a POSIX shell): a health check, a
// demo customer's sign-in (the password read from the credentials file,
// never printed), and that customer's accounts.
func printBanner(w io.Writer, sys *System, demo bool) {
	ca, _ := filepath.Abs(sys.CAFile)
	creds, _ := filepath.Abs(filepath.Join(sys.DataDir, demoCredentialsFile))
	fmt.Fprintf(w, `Malai reference system is up.
  gateway    %s   (TLS 1.2+, h2, HTTP/3 on the same UDP port)
  redirect   %s
  identity   %s   (internal, mutual TLS)
  ledger     %s   (internal, mutual TLS)
  CA cert    %s
  endpoints  %s
`, sys.GatewayURL, sys.RedirectURL, sys.IdentityURL, sys.LedgerURL, ca, filepath.Join(filepath.Dir(creds), endpointsFile))
	if !demo {
		fmt.Fprintf(w, "\nTry:\n  curl --cacert %s %s/healthz\n", shellQuote(ca), sys.GatewayURL)
		return
	}
	fmt.Fprintf(w, `  demo users %s   (generated passwords, 0600)

Try:
  curl --cacert %[2]s %[3]s/healthz
  TOKEN=$(curl -s --cacert %[2]s -H 'Content-Type: application/json' -d "$(grep '"username":"alice"' %[4]s | cut -d, -f1,2)}" %[3]s/v1/sessions | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  curl --cacert %[2]s -H "Authorization: Bearer $TOKEN" %[3]s/v1/accounts
  go run ./examples/malai evidence     # the evidence pass, on its own ports
`, creds, shellQuote(ca), sys.GatewayURL, shellQuote(creds))
}

// shellQuote quotes s for a POSIX shell when it needs quoting.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:=@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
