package ledger

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
	"github.com/malai-sec/malai/examples/malai/internal/queue"
	"github.com/malai-sec/malai/examples/malai/ledger/internal/book"
	"github.com/malai-sec/malai/idempotency"
	idemmem "github.com/malai-sec/malai/idempotency/memstore"
	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/jwtverify/jwttest"
	"github.com/malai-sec/malai/keyring"
)

const iss = "https://identity.test"

// env is a ledger over stores that outlive it, so a test can stop and
// start the ledger (a restart) and read the chain behind its back.
type env struct {
	t      testing.TB
	dir    string
	key    *jwttest.Key
	v      *jwtverify.Verifier
	ring   *keyring.Ring
	signer note.Signer
	policy string

	// openAudit opens the chain's store (a fresh handle per start).
	openAudit func() auditlog.Store
	// idem is the idempotency store; newIdem makes the one a restart gets
	// (a memory store forgets everything, like a process restart).
	idem    idempotency.Store
	newIdem func() idempotency.Store
	queue   queue.Queue
	newQ    func() queue.Queue
	cfg     func(*Config)

	tellerOnce sync.Once

	mu  sync.Mutex
	st  auditlog.Store
	log *auditlog.Log
	s   *Service
	h   http.Handler
}

type envOption func(*env)

// withFileAudit keeps the chain in a file store under the test's dir
// (default: the same, so restarts keep it).
func withAudit(open func() auditlog.Store) envOption { return func(e *env) { e.openAudit = open } }
func withIdem(newIdem func() idempotency.Store) envOption {
	return func(e *env) { e.newIdem = newIdem }
}
func withConfig(f func(*Config)) envOption { return func(e *env) { e.cfg = f } }

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir()}
	e.key = jwttest.NewKey(t, "ES256", "k1")
	v, err := jwtverify.New(jwtverify.Config{Issuers: []jwtverify.Issuer{{
		Issuer: iss, Keys: jwttest.Set(t, e.key), Audiences: []string{"malai-api", "malai-internal"},
	}}, CacheSize: 10_000}) // as the reference system configures it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	e.v = v
	skey, _, err := note.GenerateKey(rand.Reader, "ledger.test/audit")
	if err != nil {
		t.Fatal(err)
	}
	e.signer, _ = note.NewSigner(skey)
	k, _ := keyring.NewKey()
	e.ring, _ = keyring.NewRing("k1", map[string]keyring.Key{"k1": k})
	e.policy = filepath.Join(e.dir, "policy.csv")
	e.openAudit = func() auditlog.Store {
		st, err := filestore.Open(filepath.Join(e.dir, "audit"))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	e.newIdem = func() idempotency.Store {
		s, err := idemmem.New(idemmem.Config{EvictCompleted: true})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	e.newQ = func() queue.Queue {
		return queue.NewMemory(queue.Options{MinIdle: time.Hour, Block: 10 * time.Millisecond}, nil)
	}
	for _, o := range opts {
		o(e)
	}
	e.start()
	t.Cleanup(e.stop)
	return e
}

// start opens the stores and the ledger.
func (e *env) start() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.idem == nil {
		e.idem = e.newIdem()
	}
	if e.queue == nil {
		e.queue = e.newQ()
	}
	e.st = e.openAudit()
	log, err := auditlog.New(auditlog.Config{Store: e.st, Origin: "ledger.test/audit", Signers: []note.Signer{e.signer}, Ring: e.ring})
	if err != nil {
		e.t.Fatalf("audit log does not open: %v", err)
	}
	e.log = log
	cfg := Config{
		Verifier: e.v, Audit: log, Idempotency: e.idem, Queue: e.queue, JobKeys: e.ring,
		PolicyFile: e.policy, Logger: quietLogger(), PumpInterval: 20 * time.Millisecond,
	}
	if e.cfg != nil {
		e.cfg(&cfg)
	}
	s, err := New(context.Background(), cfg)
	if err != nil {
		e.t.Fatalf("ledger does not start: %v", err)
	}
	e.s, e.h = s, s.Handler()
}

func (e *env) stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.s == nil {
		return
	}
	e.s.Close()
	e.log.Close()
	e.st.Close()
	e.s = nil
}

// restart is a process restart: the ledger, its log and (for the memory
// store) its idempotency records and in-memory queue are gone; the chain
// stays.
func (e *env) restart() {
	e.t.Helper()
	e.stop()
	e.mu.Lock()
	if _, ok := e.idem.(*idemmem.Store); ok {
		e.idem = nil
	}
	if _, ok := e.queue.(*queue.Memory); ok {
		e.queue = nil
	}
	e.mu.Unlock()
	e.start()
}

func (e *env) svc() *Service {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.s
}

func (e *env) handler() http.Handler {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.h
}

func (e *env) token(sub string, scopes ...string) string {
	c := jwttest.Claims(iss, "malai-api", sub, time.Now())
	if len(scopes) == 0 {
		scopes = []string{ScopeRead, ScopeWrite}
	}
	c["scope"] = strings.Join(scopes, " ")
	return e.key.Mint(e.t, c)
}

func (e *env) user(name string) string { return e.token("user:" + name) }

func (e *env) worker() string {
	c := jwttest.ServiceClaims(iss, "malai-internal", "worker", time.Now())
	c["scope"] = ScopeTransfer
	return e.key.Mint(e.t, c)
}

func (e *env) auditor() string {
	c := jwttest.ServiceClaims(iss, "malai-internal", "evidence", time.Now())
	c["scope"] = ScopeAudit
	return e.key.Mint(e.t, c)
}

type resp struct {
	code   int
	header http.Header
	body   []byte
}

func (r resp) String() string { return http.StatusText(r.code) + " " + string(r.body) }

func (r resp) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("response %s is not JSON: %v", r, err)
	}
}

func (r resp) replayed() bool { return r.header.Get(idempotency.HeaderReplayed) == "true" }

// do sends one request straight to the ledger's handler. key "" sends no
// Idempotency-Key.
func (e *env) do(method, path, tok, body, key string) resp {
	e.t.Helper()
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+tok)
	r.Header.Set("Content-Type", "application/json")
	if key != "" {
		r.Header.Set(idempotency.HeaderKey, idempotency.FormatKey(key))
	}
	w := httptest.NewRecorder()
	e.handler().ServeHTTP(w, r)
	return resp{code: w.Code, header: w.Header(), body: bytes.Clone(w.Body.Bytes())}
}

func (e *env) open(tok, id string) {
	e.t.Helper()
	if r := e.do("POST", "/v1/accounts", tok, `{"id":"`+id+`"}`, ""); r.code != 201 {
		e.t.Fatalf("open %s: %s", id, r)
	}
}

// fund deposits amount into account as a teller.
func (e *env) fund(account string, amount int64) {
	e.t.Helper()
	body, _ := json.Marshal(DepositRequest{Account: account, Amount: amount})
	if r := e.do("POST", "/v1/deposits", e.teller(), string(body), "fund-"+account+"-"+newID("")); r.code != 201 {
		e.t.Fatalf("deposit into %s: %s", account, r)
	}
}

// teller returns a token for a user holding role:teller.
func (e *env) teller() string {
	e.tellerOnce.Do(func() {
		if err := GrantRole(e.policy, "user:teller", RoleTeller); err != nil {
			e.t.Fatal(err)
		}
		if err := e.svc().Reload(); err != nil {
			e.t.Fatal(err)
		}
	})
	return e.user("teller")
}

func sha256Of(s string) book.KeyHash { return sha256.Sum256([]byte(s)) }

func transferBody(from, to string, amount int64) string {
	b, _ := json.Marshal(TransferRequest{From: from, To: to, Amount: amount})
	return string(b)
}

// chainFacts reads the chain behind the ledger's back: the recorded
// outcome of every key, how many events carry each key, and how many
// times each job ran.
type chainFacts struct {
	keyEvents map[string]int
	keyResult map[string]book.Op
	jobRuns   map[string]int
	transfers map[string]book.TransferPosted
	balances  map[string]int64
	size      uint64
}

func (e *env) facts() chainFacts {
	e.t.Helper()
	f, err := e.readFacts()
	if err != nil {
		e.t.Fatalf("the chain does not replay: %v", err)
	}
	return f
}

func (e *env) readFacts() (chainFacts, error) {
	f := chainFacts{keyEvents: map[string]int{}, keyResult: map[string]book.Op{}, jobRuns: map[string]int{}, transfers: map[string]book.TransferPosted{}}
	fold, balances := Fold()
	head, err := e.log.Replay(context.Background(), func(ev auditlog.Event) error {
		if err := fold(ev); err != nil {
			return err
		}
		var env struct {
			Op *book.Op `json:"op"`
		}
		_ = json.Unmarshal(ev.Payload, &env)
		if ev.Type == book.TypeTransferPosted {
			var t book.TransferPosted
			_ = json.Unmarshal(ev.Payload, &t)
			f.transfers[t.Transfer] = t
		}
		if env.Op == nil {
			return nil
		}
		if env.Op.Key != "" {
			f.keyEvents[env.Op.Key]++
			if _, ok := f.keyResult[env.Op.Key]; !ok {
				f.keyResult[env.Op.Key] = *env.Op
			}
		}
		if env.Op.Job != "" && ev.Type != book.TypeJobAccepted {
			f.jobRuns[env.Op.Job]++
		}
		return nil
	})
	f.balances, f.size = balances(), head.Size
	return f, err
}

// keyOf is the chain's name for a client's key.
func keyOf(principal, scope, key string) string {
	return book.FormatKey(sha256Of(idempotency.RecordKey(principal, "POST", scope, key)))
}

// checkChain asserts (a) at most one event per key and per job run and
// (b) live balances equal a replay of the chain.
func (e *env) checkChain() chainFacts {
	e.t.Helper()
	f, problems := e.invariants()
	for _, p := range problems {
		e.t.Error(p)
	}
	return f
}

// invariants lists what breaks (a) and (b).
func (e *env) invariants() (chainFacts, []string) {
	e.t.Helper()
	var problems []string
	f, err := e.readFacts()
	if err != nil {
		// (c): a chain that does not fold cannot be restarted from.
		return f, []string{fmt.Sprintf("the chain does not replay: %v", err)}
	}
	for k, n := range f.keyEvents {
		if n > 1 {
			problems = append(problems, fmt.Sprintf("key %s has %d effects in the chain", k, n))
		}
	}
	for j, n := range f.jobRuns {
		if n > 1 {
			problems = append(problems, fmt.Sprintf("job %s ran %d times", j, n))
		}
	}
	live := e.svc().Balances()
	if !equal(live, f.balances) {
		problems = append(problems, fmt.Sprintf("live balances %v differ from the chain's replay %v", live, f.balances))
	}
	for id, b := range f.balances {
		if b < 0 {
			problems = append(problems, fmt.Sprintf("account %s is overdrawn: %d", id, b))
		}
	}
	rep, _, _, err := e.svc().verify(context.Background())
	if err != nil || !rep.OK || !rep.BalancesMatch {
		problems = append(problems, fmt.Sprintf("verify = %+v, %v", rep, err))
	}
	return f, problems
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type idemStore = idempotency.Store

func mustMem(t testing.TB, maxBytes int64, evict bool) *idemmem.Store {
	t.Helper()
	s, err := idemmem.New(idemmem.Config{MaxBytes: maxBytes, EvictCompleted: evict})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// nextJob takes the next queued job message off the in-memory queue
// (acknowledging it), or fails.
func (e *env) nextJob() queue.Message {
	e.t.Helper()
	q := e.queue.(*queue.Memory)
	var got queue.Message
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = q.Consume(ctx, "test", func(_ context.Context, m queue.Message) error { got = m; cancel(); return nil })
	if got.ID == "" {
		e.t.Fatal("no job was queued")
	}
	return got
}

// runJob hands a job message to the ledger as the worker does.
func (e *env) runJob(body []byte) resp {
	e.t.Helper()
	return e.do("POST", "/internal/v1/transfers", e.worker(), string(body), "")
}

// withKeysOf makes a second ledger share o's token, audit and job keys
// (another replica of the same deployment).
func withKeysOf(o *env) envOption {
	return func(e *env) { e.key, e.v, e.ring, e.signer = o.key, o.v, o.ring, o.signer }
}
