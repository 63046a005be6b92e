package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/examples/malai/internal/pki"
	"github.com/malai-sec/malai/examples/malai/ledger"
	"github.com/malai-sec/malai/internal/servicetest"
)

// TestSplitDeployment runs the system as separate processes of the one
// binary — two identities, two ledgers, a worker and two gateways — on the real
// Redis and PostgreSQL (a fresh prefix, schemas and roles made by the
// migrate command), and checks the money invariants through both
// gateways, each forwarding to its own ledger: a 30-way burst on one
// Idempotency-Key applies once; 50 concurrent overdraft attempts never
// take a balance below zero; an asynchronous transfer accepted by one
// ledger completes through the worker and the other ledger; the audit
// chain verifies and replays to the live balances, online and offline;
// and killing one ledger mid-load loses no acknowledged transfer.
func TestSplitDeployment(t *testing.T) {
	if testing.Short() {
		t.Skip("starts six processes")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	rd := servicetest.NewRedis(t)
	admin := os.Getenv("MALAI_TEST_POSTGRES_URL")
	if admin == "" {
		servicetest.Unavailable(t, "split deployment test skipped: set MALAI_TEST_POSTGRES_URL")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "malai")
	if out, err := exec.Command(gobin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	data := filepath.Join(dir, "data")
	for _, cmd := range []string{"all", "gateway", "identity", "ledger", "worker", "migrate", "verify"} {
		out, err := exec.Command(bin, cmd, "-h").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "usage: malai ") || !strings.Contains(string(out), "-data") && cmd != "migrate" {
			t.Errorf("malai %s -h: %v\n%s", cmd, err, out)
		}
	}

	// PostgreSQL: the migrate command makes the schemas and roles.
	prefix := "msplit_" + servicetest.Unique()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		n := pgNamesFor(prefix)
		if err := errors.Join(n.Audit.drop(ctx, admin), n.Identity.drop(ctx, admin)); err != nil {
			t.Errorf("drop the test's schemas and roles: %v", err)
		}
	})
	if out, err := exec.Command(bin, "migrate", "-admin-url", admin, "-prefix", prefix).CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	server, err := serverURL(admin)
	if err != nil {
		t.Fatal(err)
	}

	const issuer = "https://malai.test"
	common := []string{"-data", data, "-listen", "127.0.0.1:0"}
	pg := []string{"-postgres-url", server, "-postgres-prefix", prefix}
	redisFlags := []string{"-redis-url", servicetest.RedisURL(t), "-redis-prefix", rd.Prefix}
	flags := func(groups ...[]string) []string {
		var out []string
		for _, g := range groups {
			out = append(out, g...)
		}
		return out
	}

	// Two identities too (the second started once the first has made the
	// signing keys): everything it knows is in PostgreSQL.
	id := startProc(t, bin, dir, "identity", flags(common, pg, []string{"-issuer", issuer}))
	id.wait(t)
	id2 := startProc(t, bin, dir, "identity", flags(common, pg, []string{"-issuer", issuer}))
	id2.wait(t)
	ledgerFlags := func(id *proc) []string {
		return flags(common, pg, redisFlags, []string{"-issuer", issuer, "-identity-url", id.internal})
	}
	l1 := startProc(t, bin, dir, "ledger", ledgerFlags(id))
	l2 := startProc(t, bin, dir, "ledger", append(ledgerFlags(id2), "-witness-dir", filepath.Join(data, "witness-2")))
	l1.wait(t)
	l2.wait(t)
	gwFlags := func(id, l *proc) []string {
		return flags(common, redisFlags, []string{"-issuer", issuer, "-addr", "127.0.0.1:0", "-http-addr=", "-identity-url", id.internal,
			"-ledger-url", l.internal, "-per-ip", "1000000", "-per-principal", "1000000"})
	}
	// The worker registers its key with identity 2 and calls ledger 1,
	// which fetches identity 1's key set. It runs on operator certificate
	// files (-cert, -key, -ca) rather than the development CA's.
	w := startProc(t, bin, dir, "worker", flags(common, redisFlags, operatorCert(t, data, dir, "worker"),
		[]string{"-identity-url", id2.internal, "-ledger-url", l1.internal}))
	gw1 := startProc(t, bin, dir, "gateway", gwFlags(id, l1))
	gw2 := startProc(t, bin, dir, "gateway", gwFlags(id2, l2))
	w.wait(t)
	gw1.wait(t)
	gw2.wait(t)

	caPEM, err := os.ReadFile(filepath.Join(data, "pki", pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}}
	gws := []*api{{t: t, c: hc, base: gw1.public}, {t: t, c: hc, base: gw2.public}}
	g1, g2 := gws[0], gws[1]
	g1.other, g2.other = g2, g1

	// People: a teller and an auditor (roles granted in the ledgers'
	// shared policy file, then SIGHUP), and customers with an account each.
	u := servicetest.Unique()
	teller, auditor := g1.user("teller-"+u), g2.user("auditor-"+u)
	for _, line := range []struct{ sub, role string }{{teller.sub, ledger.RoleTeller}, {auditor.sub, ledger.RoleAuditor}} {
		if err := ledger.GrantRole(filepath.Join(data, "ledger-policy.csv"), line.sub, line.role); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []*proc{l1, l2} {
		if err := l.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range gws {
		eventually(t, "the auditor role reaches both ledgers", func() bool {
			st, _ := g.do(auditor, "GET", "/v1/audit/verify", "", nil)
			return st == http.StatusOK
		})
	}
	type customer struct {
		*person
		account string
	}
	open := func(g *api, name string, funds int64) customer {
		p := g.user(name + "-" + u)
		c := customer{p, name + "-" + u}
		if st, body := g.do(p, "POST", "/v1/accounts", "", map[string]any{"id": c.account}); st != http.StatusCreated {
			t.Fatalf("open %s: %d %s", c.account, st, body)
		}
		if funds > 0 {
			if st, body := g.do(teller, "POST", "/v1/deposits", "fund-"+c.account, map[string]any{"account": c.account, "amount": funds}); st != http.StatusCreated {
				t.Fatalf("fund %s: %d %s", c.account, st, body)
			}
		}
		return c
	}
	alice, bob := open(g1, "alice", 1000), open(g2, "bob", 0)
	carol, dave := open(g2, "carol", 100), open(g1, "dave", 1000)
	// balance reads an account through a gateway (its own ledger).
	balance := func(g *api, c customer) int64 {
		var a struct{ Balance int64 }
		g.json(c.person, "GET", "/v1/accounts/"+c.account, &a)
		return a.Balance
	}
	bothSee := func(c customer, want int64) {
		t.Helper()
		for i, g := range gws {
			if got := balance(g, c); got != want {
				t.Errorf("%s's balance through gateway %d = %d, want %d", c.account, i+1, got, want)
			}
		}
	}
	bothSee(alice, 1000)

	// 1. A 30-way burst on one key, half through each gateway: one effect.
	transfer := map[string]any{"from": alice.account, "to": bob.account, "amount": 7}
	type answer struct {
		status int
		id     string
	}
	answers := make([]answer, 30)
	parallel(30, func(i int) {
		st, body := gws[i%2].settle(alice.person, "/v1/transfers", "burst-"+u, transfer)
		var tr struct{ Transfer string }
		_ = json.Unmarshal(body, &tr)
		answers[i] = answer{st, tr.Transfer}
	})
	applied := ""
	for _, a := range answers {
		switch {
		case a.status == http.StatusCreated && a.id != "":
			if applied != "" && a.id != applied {
				t.Errorf("the burst created two transfers: %s and %s", applied, a.id)
			}
			applied = a.id
		case a.status == http.StatusConflict: // a duplicate in flight
		default:
			t.Errorf("burst answer %d (transfer %q)", a.status, a.id)
		}
	}
	if applied == "" {
		t.Fatal("no burst request got 201")
	}
	if st, body := g2.do(alice.person, "POST", "/v1/transfers", "burst-"+u, transfer); st != http.StatusCreated || !bytes.Contains(body, []byte(applied)) {
		t.Errorf("the burst's key replayed through the other ledger: %d %s, want 201 with %s", st, body, applied)
	}
	bothSee(alice, 993)
	bothSee(bob, 7)

	// 2. 50 concurrent overdraft attempts of 30 against 100, over both
	// ledgers: exactly three succeed, the rest are refused for funds.
	var mu sync.Mutex
	okCount, statuses := 0, map[int]int{}
	parallel(50, func(i int) {
		st, _ := gws[i%2].settle(carol.person, "/v1/transfers", fmt.Sprintf("overdraft-%s-%d", u, i),
			map[string]any{"from": carol.account, "to": bob.account, "amount": 30})
		mu.Lock()
		defer mu.Unlock()
		statuses[st]++
		if st == http.StatusCreated {
			okCount++
		}
	})
	if okCount != 3 || statuses[http.StatusUnprocessableEntity] != 47 {
		t.Errorf("overdraft attempts answered %v, want 3×201 and 47×422", statuses)
	}
	bothSee(carol, 100-30*int64(okCount))
	bothSee(bob, 7+30*int64(okCount))
	if got := balance(g1, carol); got < 0 {
		t.Fatalf("carol's balance went below zero: %d", got)
	}

	// 3. An asynchronous transfer accepted by ledger 2 completes through
	// the worker (which hands it to ledger 1).
	bobBefore := balance(g1, bob)
	st, hdr, body := g2.raw(alice.person, "POST", "/v1/transfers/async", "async-"+u, map[string]any{"from": alice.account, "to": bob.account, "amount": 11})
	if st != http.StatusAccepted || hdr.Get("Location") == "" {
		t.Fatalf("async transfer: %d %s", st, body)
	}
	var job struct{ Status string }
	eventually(t, "the asynchronous transfer succeeds", func() bool {
		g2.json(alice.person, "GET", hdr.Get("Location"), &job)
		return job.Status == "succeeded" || job.Status == "failed"
	})
	if job.Status != "succeeded" {
		t.Fatalf("async job ended %q", job.Status)
	}
	bothSee(alice, 993-11)
	bothSee(bob, bobBefore+11)

	// 4. The audit chain verifies and replays to the live balances, read
	// by the auditor through both gateways.
	auditOK := func(g *api) {
		t.Helper()
		var rep ledger.VerifyReport
		g.json(auditor, "GET", "/v1/audit/verify", &rep)
		if !rep.OK || !rep.BalancesMatch || rep.Size == 0 || rep.Checkpoint == nil || !rep.Checkpoint.Matches {
			t.Errorf("audit verify through %s: %+v", g.base, rep)
		}
	}
	auditOK(g1)
	auditOK(g2)

	// 5. Kill ledger 2 (SIGKILL) in the middle of a load through both
	// gateways: every transfer acknowledged with 201, by either ledger, is
	// in the surviving ledger's view of the chain, and the balance is the
	// sum of the transfers the chain holds.
	// Four clients per gateway, eight transfers each; ledger 2 is killed
	// once it has acknowledged eight, with requests in flight.
	const clients, each = 4, 8
	var acked, failed []string
	var ackedOn2 int
	killed := make(chan struct{})
	var once sync.Once
	parallel(2*clients, func(ci int) {
		gi := ci % 2
		for i := range each {
			st, body := gws[gi].do(dave.person, "POST", "/v1/transfers", fmt.Sprintf("load-%s-%d-%d", u, ci, i),
				map[string]any{"from": dave.account, "to": bob.account, "amount": 1})
			var tr struct{ Transfer string }
			_ = json.Unmarshal(body, &tr)
			mu.Lock()
			if st == http.StatusCreated && tr.Transfer != "" {
				acked = append(acked, tr.Transfer)
				if gi == 1 {
					ackedOn2++
				}
			} else {
				failed = append(failed, fmt.Sprint(st))
			}
			kill := gi == 1 && ackedOn2 == clients*each/4
			mu.Unlock()
			if kill {
				once.Do(func() { go func() { l2.kill(t); close(killed) }() })
			}
		}
	})
	<-killed
	if len(failed) == 0 {
		t.Errorf("the kill did not land mid-load: every transfer was acknowledged")
	}
	var hist struct {
		Transfers []struct {
			ID     string `json:"transfer"`
			From   string `json:"from"`
			Amount int64  `json:"amount"`
		}
	}
	g1.json(dave.person, "GET", "/v1/accounts/"+dave.account+"/transfers?limit=100", &hist)
	inChain, spent := map[string]bool{}, int64(0)
	for _, m := range hist.Transfers {
		if m.From == dave.account {
			inChain[m.ID] = true
			spent += m.Amount
		}
	}
	for _, id := range acked {
		if !inChain[id] {
			t.Errorf("acknowledged transfer %s is not in the chain after the kill", id)
		}
	}
	if n := len(inChain); n < len(acked) || n > len(acked)+len(failed) {
		t.Errorf("the chain holds %d load transfers; %d were acknowledged and %d not", n, len(acked), len(failed))
	}
	if got := balance(g1, dave); got != 1000-spent {
		t.Errorf("dave's balance %d, but the chain holds transfers of %d from 1000", got, spent)
	}
	auditOK(g1)
	t.Logf("kill under load: %d acknowledged (%d by the killed ledger), %d failed (%v), %d in the chain", len(acked), ackedOn2, len(failed), failed, len(inChain))

	// Offline: stop ledger 1 and verify the chain with the verify command
	// against ledger 1's witness; its replay gives the live balances.
	live := map[string]int64{alice.account: balance(g1, alice), bob.account: balance(g1, bob), carol.account: balance(g1, carol), dave.account: balance(g1, dave)}
	l1.stop(t)
	ledgerURL, err := asRole(server, pgNamesFor(prefix).Audit.AppRole)
	if err != nil {
		t.Fatal(err)
	}
	// Against each ledger's witness (ledger 2's was cut by SIGKILL).
	for witness, chain := range map[string][]string{
		filepath.Join(data, "witness"):   {"-postgres-url", server, "-postgres-prefix", prefix},
		filepath.Join(data, "witness-2"): {"-audit-dsn", ledgerURL, "-audit-schema", pgNamesFor(prefix).Audit.Schema},
	} {
		out, err := exec.Command(bin, append([]string{"verify", "-data", data, "-witness-dir", witness}, chain...)...).Output()
		if len(out) == 0 {
			t.Fatalf("verify: %v", err)
		}
		var offline struct {
			Anchored int                `json:"anchored"`
			Findings []auditlog.Finding `json:"findings"`
			Balances map[string]int64   `json:"balances"`
		}
		if err := json.Unmarshal(out, &offline); err != nil {
			t.Fatalf("verify output: %v\n%s", err, out)
		}
		for _, f := range offline.Findings {
			t.Errorf("offline verification with %s: %+v", filepath.Base(witness), f)
		}
		if offline.Anchored == 0 {
			t.Errorf("offline verification with %s anchored no rows: %s", filepath.Base(witness), out)
		}
		for acct, want := range live {
			if got := offline.Balances[acct]; got != want {
				t.Errorf("offline replay: %s = %d, live %d", acct, got, want)
			}
		}
	}
}

// operatorCert writes a certificate for component, issued by the
// system's CA, as an operator's PKI would hand it over, and returns the
// flags that give it to the component.
func operatorCert(t *testing.T, data, dir, component string) []string {
	t.Helper()
	ca, err := pki.LoadOrCreate(filepath.Join(data, "pki"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(component)
	if err != nil {
		t.Fatal(err)
	}
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, caFile := filepath.Join(dir, component+"-op.pem"), filepath.Join(dir, component+"-op-key.pem"), filepath.Join(dir, "op-ca.pem")
	for f, b := range map[string][]byte{certFile: chain, keyFile: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), caFile: ca.PEM()} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return []string{"-cert", certFile, "-key", keyFile, "-ca", caFile}
}

// proc is one component process.
type proc struct {
	name, internal, public string
	cmd                    *exec.Cmd
	ready                  chan string
	stderr                 string
	done                   chan struct{}
}

var readyLine = regexp.MustCompile(`^(\w+) ready: internal (https://\S+?)(?:, public (https://\S+))?$`)

// startProc starts "malai name args…"; wait blocks until it is ready. It
// is stopped at cleanup; on failure its log is shown.
func startProc(t *testing.T, bin, dir, name string, args []string) *proc {
	t.Helper()
	f, err := os.CreateTemp(dir, name+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: exec.Command(bin, append([]string{name}, args...)...), ready: make(chan string, 1), stderr: f.Name(), done: make(chan struct{})}
	p.cmd.Stderr = f
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if readyLine.MatchString(sc.Text()) {
				p.ready <- sc.Text()
			}
		}
		_ = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(p.stderr)
			var lines []string
			for _, l := range strings.Split(string(b), "\n") {
				if !strings.Contains(l, `"level":"INFO"`) && !strings.Contains(l, `"level":"DEBUG"`) && l != "" {
					lines = append(lines, l)
				}
			}
			lines = lines[max(0, len(lines)-20):]
			t.Logf("%s (pid %d) warnings and errors:\n%s", p.name, p.cmd.Process.Pid, strings.Join(lines, "\n"))
		}
	})
	return p
}

func (p *proc) wait(t *testing.T) {
	t.Helper()
	select {
	case line := <-p.ready:
		m := readyLine.FindStringSubmatch(line)
		p.internal, p.public = m[2], m[3]
	case <-p.done:
		b, _ := os.ReadFile(p.stderr)
		t.Fatalf("%s exited before it was ready:\n%s", p.name, b)
	case <-time.After(60 * time.Second):
		t.Fatalf("%s not ready after 60 s", p.name)
	}
}

// stop ends the process with SIGTERM (SIGKILL after five seconds).
func (p *proc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) kill(t *testing.T) {
	if err := p.cmd.Process.Kill(); err != nil {
		t.Error(err)
	}
	<-p.done
}

// person is a signed-in user.
type person struct{ name, sub, token string }

// api is a client of one gateway.
type api struct {
	t    *testing.T
	c    *http.Client
	base string
	// other is the other gateway (and its identity).
	other *api
}

// user signs up name through this gateway and signs in through the other
// (each has its own identity process).
func (a *api) user(name string) *person {
	a.t.Helper()
	pw := "Pw-" + servicetest.Unique() + "-Zz9!"
	var acct struct{ Sub string }
	if st, body := a.do(nil, "POST", "/v1/users", "", map[string]any{"username": name, "password": pw}); st != http.StatusCreated {
		a.t.Fatalf("sign up %s: %d %s", name, st, body)
	} else if err := json.Unmarshal(body, &acct); err != nil || acct.Sub == "" {
		a.t.Fatalf("sign up %s: %s", name, body)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	st, body := a.other.do(nil, "POST", "/v1/sessions", "", map[string]any{"username": name, "password": pw})
	if err := json.Unmarshal(body, &tok); st != http.StatusOK || err != nil || tok.AccessToken == "" {
		a.t.Fatalf("sign in %s: %d %s", name, st, body)
	}
	return &person{name: name, sub: acct.Sub, token: tok.AccessToken}
}

// do sends a JSON request as p (nil: anonymous) with an Idempotency-Key
// when key is set, and returns the status and body (0 when the request
// failed on the way).
func (a *api) do(p *person, method, path, key string, body any) (int, []byte) {
	st, _, b := a.raw(p, method, path, key, body)
	return st, b
}

func (a *api) raw(p *person, method, path, key string, body any) (int, http.Header, []byte) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	if p != nil {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return 0, nil, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// settle POSTs a keyed write as p and, while the outcome is unknown (a
// 5xx, or no answer), retries it with the same key and body for up to
// ten seconds, as a client should: the first outcome comes back.
func (a *api) settle(p *person, path, key string, body any) (int, []byte) {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st, b := a.do(p, "POST", path, key, body)
		if (st != 0 && st < 500) || time.Now().After(deadline) {
			return st, b
		}
	}
}

// json GETs path as p and decodes the 200 answer into v.
func (a *api) json(p *person, method, path string, v any) {
	a.t.Helper()
	st, body := a.do(p, method, path, "", nil)
	if st != http.StatusOK {
		a.t.Fatalf("%s %s%s: %d %s", method, a.base, path, st, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		a.t.Fatalf("%s %s: %v in %s", method, path, err, body)
	}
}

// parallel runs f(0…n-1) at once and waits for all.
func parallel(n int, f func(int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); <-start; f(i) }()
	}
	close(start)
	wg.Wait()
}

// eventually polls ok every 100 ms for up to 20 s.
func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("timed out waiting until %s", what)
}
