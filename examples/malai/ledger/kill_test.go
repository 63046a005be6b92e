package ledger

import (
	"context"
	"crypto/rand"
	"encoding/json"

	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
	"github.com/malai-sec/malai/auditlog/pgstore"
	"github.com/malai-sec/malai/examples/malai/internal/queue"
	"github.com/malai-sec/malai/idempotency"
	idemmem "github.com/malai-sec/malai/idempotency/memstore"
	"github.com/malai-sec/malai/idempotency/redisstore"
	"github.com/malai-sec/malai/internal/servicetest"
	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/jwtverify/jwttest"
	"github.com/malai-sec/malai/keyring"
)

const childEnv = "MALAI_LEDGER_CHILD_DIR"

// childKeys are what a ledger process needs from its data directory:
// the token keys to trust, the checkpoint signer and the data key.
type childKeys struct {
	JWKS   json.RawMessage `json:"jwks"`
	Signer string          `json:"signer"`
	Data   []byte          `json:"data"`
	// The distributed mode, when set: the chain in PostgreSQL, the
	// idempotency records in Redis.
	PGDSN, PGSchema     string
	RedisURL, RedisPref string
}

// TestLedgerChild is the ledger process of TestSIGKILLUnderLoad: the
// default mode (file chain, in-memory idempotency store and queue) or the
// distributed one (PostgreSQL chain, Redis records) on a loopback port
// written to dir/addr. It serves until killed.
func TestLedgerChild(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("the child process of TestSIGKILLUnderLoad")
	}
	b, err := os.ReadFile(filepath.Join(dir, "keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	var k childKeys
	if err := json.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	v, err := jwtverify.New(jwtverify.Config{Issuers: []jwtverify.Issuer{{Issuer: iss, Keys: k.JWKS, Audiences: []string{"malai-api", "malai-internal"}}}})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(k.Signer)
	if err != nil {
		t.Fatal(err)
	}
	var key keyring.Key
	copy(key[:], k.Data)
	ring, err := keyring.NewRing("k1", map[string]keyring.Key{"k1": key})
	if err != nil {
		t.Fatal(err)
	}
	st := openChildChain(t, dir, k)
	log, err := auditlog.New(auditlog.Config{Store: st, Origin: "ledger.test/audit", Signers: []note.Signer{signer}, Ring: ring})
	if err != nil {
		t.Fatal(err)
	}
	var idem idempotency.Store
	idem, _ = idemmem.New(idemmem.Config{EvictCompleted: true})
	if k.RedisURL != "" {
		o, err := redis.ParseURL(k.RedisURL)
		if err != nil {
			t.Fatal(err)
		}
		if idem, err = redisstore.New(redisstore.Config{Client: redis.NewClient(o), Prefix: k.RedisPref}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(context.Background(), Config{Verifier: v, Audit: log, Idempotency: idem, Queue: queue.NewMemory(queue.Options{}, nil),
		JobKeys: ring, PolicyFile: filepath.Join(dir, "policy.csv"), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "addr.tmp"), []byte(ln.Addr().String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "addr.tmp"), filepath.Join(dir, "addr")); err != nil {
		t.Fatal(err)
	}
	_ = http.Serve(ln, s.Handler())
}

func openChildChain(t testing.TB, dir string, k childKeys) auditlog.Store {
	if k.PGDSN != "" {
		st, err := pgstore.New(context.Background(), pgstore.Config{DSN: k.PGDSN, Schema: k.PGSchema})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st, err := filestore.Open(filepath.Join(dir, "audit"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// ledgerProcess is a child ledger the test can SIGKILL.
type ledgerProcess struct {
	t   *testing.T
	dir string
	cmd *exec.Cmd
	url string
}

func startLedgerProcess(t *testing.T, dir string) *ledgerProcess {
	t.Helper()
	_ = os.Remove(filepath.Join(dir, "addr"))
	cmd := exec.Command(os.Args[0], "-test.run=^TestLedgerChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &ledgerProcess{t: t, dir: dir, cmd: cmd}
	t.Cleanup(func() { p.kill() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(dir, "addr"))
		if err == nil {
			p.url = "http://" + string(b)
			return p
		}
		if time.Now().After(deadline) {
			t.Fatal("the ledger process did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *ledgerProcess) kill() {
	if p.cmd.Process == nil || p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
}

type client struct {
	t   *testing.T
	c   *http.Client
	key *jwttest.Key
}

func (c *client) do(base, method, path, tok, body, key string) (resp, error) {
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		return resp{}, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set(idempotency.HeaderKey, idempotency.FormatKey(key))
	}
	res, err := c.c.Do(req)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return resp{}, err
	}
	return resp{code: res.StatusCode, header: res.Header, body: b}, nil
}

// A ledger process SIGKILLed under load and started again, in the default
// mode (file chain, in-memory idempotency store: the records die with the
// process) and in the distributed one (PostgreSQL chain, Redis records):
// every acknowledged transfer is in the chain, every acknowledged key
// replays its original body, the balances equal a replay, and no key has
// two effects.
func TestSIGKILLUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ledger processes")
	}
	t.Run("default", func(t *testing.T) { sigkillUnderLoad(t, false) })
	t.Run("postgres+redis", func(t *testing.T) { sigkillUnderLoad(t, true) })
}

func sigkillUnderLoad(t *testing.T, distributed bool) {
	dir := t.TempDir()
	key := jwttest.NewKey(t, "ES256", "k1")
	skey, _, _ := note.GenerateKey(rand.Reader, "ledger.test/audit")
	data, _ := keyring.NewKey()
	ck := childKeys{JWKS: jwttest.Set(t, key), Signer: skey, Data: data[:]}
	if distributed {
		pg := newPGAudit(t)
		r := servicetest.NewRedis(t)
		ck.PGDSN, ck.PGSchema = pg.dsn, pg.schema
		ck.RedisURL, ck.RedisPref = servicetest.RedisURL(t), r.Prefix+"idem:"
	}
	kb, _ := json.Marshal(ck)
	writeFile(t, filepath.Join(dir, "keys.json"), kb)
	policy := filepath.Join(dir, "policy.csv")
	b, _ := defaultPolicy.ReadFile("policy.csv")
	writeFile(t, policy, b)
	if err := GrantRole(policy, "user:teller", RoleTeller); err != nil {
		t.Fatal(err)
	}
	tok := func(sub string) string {
		c := jwttest.Claims(iss, "malai-api", sub, time.Now())
		c["scope"] = ScopeRead + " " + ScopeWrite
		return key.Mint(t, c)
	}
	cl := &client{t: t, c: &http.Client{Timeout: 10 * time.Second}, key: key}
	p := startLedgerProcess(t, dir)
	users := []string{"alice", "bob", "carol", "dave"}
	for _, u := range users {
		if r, err := cl.do(p.url, "POST", "/v1/accounts", tok("user:"+u), `{"id":"acc-`+u+`"}`, ""); err != nil || r.code != 201 {
			t.Fatalf("open: %v %v", r, err)
		}
		if r, err := cl.do(p.url, "POST", "/v1/deposits", tok("user:teller"), `{"account":"acc-`+u+`","amount":100000}`, "fund-"+u); err != nil || r.code != 201 {
			t.Fatalf("fund: %v %v", r, err)
		}
	}

	// Load: 16 clients sending transfers with fresh keys until the kill.
	var mu sync.Mutex
	var acked []attempt
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				from, to := users[c%4], users[(c+1+i)%4]
				if from == to {
					to = users[(c+2)%4]
				}
				a := attempt{tok: tok("user:" + from), route: "/v1/transfers", principal: "user:" + from,
					key: fmt.Sprintf("kill-%d-%d", c, i), body: transferBody("acc-"+from, "acc-"+to, int64(1+i%50))}
				r, err := cl.do(p.url, "POST", a.route, a.tok, a.body, a.key)
				if err != nil {
					return // the process is gone
				}
				a.got = r
				mu.Lock()
				acked = append(acked, a)
				mu.Unlock()
			}
		}()
	}
	eventually(t, 30*time.Second, "load to build up", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= 200 })
	p.kill() // mid-load
	close(stop)
	wg.Wait()
	t.Logf("%d transfers acknowledged before SIGKILL", len(acked))

	p = startLedgerProcess(t, dir)
	for _, a := range acked {
		if a.got.code >= 500 {
			continue
		}
		r, err := cl.do(p.url, "POST", a.route, a.tok, a.body, a.key)
		if err != nil {
			t.Fatal(err)
		}
		if r.code != a.got.code || string(r.body) != string(a.got.body) || r.header.Get(idempotency.HeaderReplayed) != "true" {
			t.Fatalf("acknowledged %s answers %s after the restart; it was first %s", a.key, r, a.got)
		}
	}
	// The chain behind the process: every acknowledged transfer is there,
	// no key twice, and the live balances equal its replay.
	auditor := func() string {
		c := jwttest.ServiceClaims(iss, "malai-internal", "evidence", time.Now())
		c["scope"] = ScopeAudit
		return key.Mint(t, c)
	}()
	r, err := cl.do(p.url, "GET", "/internal/v1/audit/replay", auditor, "", "")
	var rep ReplayReport
	if err != nil || r.code != 200 || json.Unmarshal(r.body, &rep) != nil || !rep.Match {
		t.Fatalf("replay after the restart: %v %v", r, err)
	}
	p.kill()
	st := openChildChain(t, dir, ck)
	defer st.Close()
	ring, _ := keyring.NewRing("k1", map[string]keyring.Key{"k1": data})
	transfers := map[string]bool{}
	keys := map[string]int{}
	fold, balances := Fold()
	if _, err := auditlog.Replay(context.Background(), st, ring, func(e auditlog.Event) error {
		var p struct {
			Transfer string `json:"transfer"`
			Op       *struct {
				Key string `json:"key"`
			} `json:"op"`
		}
		_ = json.Unmarshal(e.Payload, &p)
		if p.Transfer != "" {
			transfers[p.Transfer] = true
		}
		if p.Op != nil && p.Op.Key != "" {
			keys[p.Op.Key]++
		}
		return fold(e)
	}); err != nil {
		t.Fatal(err)
	}
	for k, n := range keys {
		if n > 1 {
			t.Fatalf("key %s has %d effects", k, n)
		}
	}
	for _, a := range acked {
		if a.got.code != 201 {
			continue
		}
		var tr struct{ Transfer string }
		if json.Unmarshal(a.got.body, &tr) != nil || !transfers[tr.Transfer] {
			t.Fatalf("acknowledged transfer %s (%s) is not in the chain", tr.Transfer, a.key)
		}
	}
	if !equal(balances(), rep.Live) {
		t.Fatalf("live balances %v, chain %v", rep.Live, balances())
	}
	var total int64
	for _, b := range balances() {
		total += b
	}
	if total != 400000 {
		t.Fatalf("money created or destroyed: total %d", total)
	}
}
