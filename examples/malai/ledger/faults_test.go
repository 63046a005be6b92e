package ledger

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/malai-sec/malai/auditlog"
	auditmem "github.com/malai-sec/malai/auditlog/memstore"
	"github.com/malai-sec/malai/auditlog/pgstore"
	"github.com/malai-sec/malai/examples/malai/ledger/internal/book"
	"github.com/malai-sec/malai/idempotency/redisstore"
	"github.com/malai-sec/malai/internal/fakeclock"
	"github.com/malai-sec/malai/internal/servicetest"
)

// pgAudit is an audit chain in a fresh PostgreSQL schema, migrated with
// a migrator role and reached as a least-privilege app role, through a
// fault proxy.
type pgAudit struct {
	proxy  *servicetest.Proxy
	dsn    string // the app role, through the proxy
	schema string
}

func newPGAudit(t testing.TB) *pgAudit {
	t.Helper()
	admin := os.Getenv("MALAI_TEST_POSTGRES_URL")
	if admin == "" {
		servicetest.Unavailable(t, "PostgreSQL test skipped: set MALAI_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable) to run it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		servicetest.Unavailable(t, "PostgreSQL does not answer: %v", err)
	}
	defer conn.Close(context.Background())
	u := servicetest.Unique()
	schema, owner, app := "t_ledger_"+u, "ledger_mig_"+u, "ledger_app_"+u
	for _, q := range []string{"CREATE SCHEMA " + schema, "CREATE ROLE " + owner + " NOLOGIN", "CREATE ROLE " + app + " LOGIN"} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer c.Close(context.Background())
		for _, q := range []string{"DROP SCHEMA " + schema + " CASCADE", "DROP OWNED BY " + app + ", " + owner + " CASCADE", "DROP ROLE " + app, "DROP ROLE " + owner} {
			if _, err := c.Exec(ctx, q); err != nil {
				t.Errorf("cleanup %q: %v", q, err)
			}
		}
	})
	// Migrations running at once (other tests, other packages) can collide
	// on the database's own catalog row ("tuple concurrently updated"):
	// retry a few times.
	for attempt := 0; ; attempt++ {
		err := pgstore.Migrate(ctx, conn, pgstore.MigrateConfig{Schema: schema, Owner: owner, AppRole: app})
		if err == nil {
			break
		}
		if attempt == 4 || !strings.Contains(err.Error(), "concurrently updated") {
			t.Fatal(err)
		}
	}
	pu, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	p := servicetest.NewProxy(t, pu.Host)
	pu.Host, pu.User = p.Addr(), url.User(app)
	q := pu.Query()
	q.Set("connect_timeout", "2")
	pu.RawQuery = q.Encode()
	return &pgAudit{proxy: p, dsn: pu.String(), schema: schema}
}

func (pg *pgAudit) open(t testing.TB) func() auditlog.Store {
	return func() auditlog.Store {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := pgstore.New(ctx, pgstore.Config{DSN: pg.dsn, Schema: pg.schema})
		if err != nil {
			t.Fatalf("pgstore: %v", err)
		}
		return st
	}
}

// redisIdem is an idempotency store in the test Redis, through a fault
// proxy, with a client that does not resend a command whose reply was
// lost (so a lost reply is seen by the store, not hidden by go-redis).
type redisIdem struct {
	proxy  *servicetest.Proxy
	client *redis.Client
	prefix string
}

func newRedisIdem(t testing.TB) *redisIdem {
	t.Helper()
	r := servicetest.NewRedis(t)
	p := servicetest.NewProxy(t, r.Addr)
	c := r.NewClient(t, p.Addr())
	c.Options().MaxRetries = -1
	c.Options().DialTimeout = time.Second
	c.Options().ReadTimeout = 2 * time.Second
	return &redisIdem{proxy: p, client: c, prefix: r.Prefix + "idem:"}
}

func (ri *redisIdem) store(t testing.TB) func() idemStore {
	return func() idemStore {
		s, err := redisstore.New(redisstore.Config{Client: ri.client, Prefix: ri.prefix})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

// afterAppend wraps a chain store and runs a hook once, after an append
// succeeded: the moment between the effect and everything after it.
type afterAppend struct {
	auditlog.Store
	once *sync.Once
	hook func()
}

func (a afterAppend) Append(ctx context.Context, recs []auditlog.Record) error {
	err := a.Store.Append(ctx, recs)
	if err == nil && a.hook != nil {
		a.once.Do(a.hook)
	}
	return err
}

func fundedPair(e *env) (alice string) {
	alice = e.user("alice")
	e.open(alice, "acc-a")
	e.open(e.user("bob"), "acc-b")
	e.fund("acc-a", 100_000)
	return alice
}

// restartAndCheck is (c): the ledger restarts on the same stores, and
// (a), (b) and (d) hold again afterwards.
func (e *env) restartAndCheck(attempts []attempt) {
	e.t.Helper()
	e.checkOutcomes(attempts)
	e.restart()
	e.checkOutcomes(attempts)
}

// Lost COMMIT acknowledgement, PostgreSQL chain: the row commits, the
// ledger's connection breaks before it hears so. (The append is one
// implicit transaction whose parameters name the event type in clear: the
// proxy forwards it, PostgreSQL commits, the reply is cut.) The ledger reads the
// chain back before answering: the client gets the transfer's outcome,
// and its retry replays it; nothing runs twice.
func TestFaultLostCommitAck(t *testing.T) {
	pg := newPGAudit(t)
	e := newEnv(t, withAudit(pg.open(t)))
	alice := fundedPair(e)
	var attempts []attempt
	for i := range 3 {
		fired := pg.proxy.DropReplyAfter([]byte(book.TypeTransferPosted))
		a := attempt{tok: alice, route: "/v1/transfers", key: fmt.Sprint("lost-commit-", i), principal: "user:alice", body: transferBody("acc-a", "acc-b", 100)}
		a.got = e.do("POST", a.route, a.tok, a.body, a.key)
		select {
		case <-fired:
		default:
			t.Fatal("the append's reply was never dropped")
		}
		if a.got.code != 201 || a.got.replayed() {
			t.Fatalf("transfer whose COMMIT ack was lost: %s (replayed %v: it is the request's own outcome)", a.got, a.got.replayed())
		}
		attempts = append(attempts, a)
	}
	if got := e.svc().Balances()["acc-a"]; got != 100_000-300 {
		t.Fatalf("balance %d after three transfers with lost acks", got)
	}
	if rb := e.svc().Stats().ReadBacks; rb < 3 {
		t.Fatalf("%d read-backs: the lost acknowledgements were not seen as unknown outcomes", rb)
	}
	e.restartAndCheck(attempts)
}

// Lost Redis reply after the store acted: the completion is stored but
// its reply is lost. The client still gets its 201; a retry replays it
// (from the store or the chain), never a second transfer.
func TestFaultLostRedisReply(t *testing.T) {
	ri := newRedisIdem(t)
	e := newEnv(t, withIdem(ri.store(t)))
	alice := fundedPair(e)
	var attempts []attempt
	for i := range 3 {
		// The completion carries the response, which names the accounts;
		// the claim does not.
		fired := ri.proxy.DropReplyAfter([]byte(`"from":"acc-a","to":"acc-b","amount":` + fmt.Sprint(200+i)))
		a := attempt{tok: alice, route: "/v1/transfers", key: fmt.Sprint("lost-redis-", i), principal: "user:alice", body: transferBody("acc-a", "acc-b", int64(200+i))}
		a.got = e.do("POST", a.route, a.tok, a.body, a.key)
		select {
		case <-fired:
		case <-time.After(5 * time.Second):
			t.Fatal("the completion's reply was never dropped")
		}
		if a.got.code != 201 {
			t.Fatalf("transfer whose completion reply was lost: %s", a.got)
		}
		attempts = append(attempts, a)
	}
	e.restartAndCheck(attempts)
}

// The idempotency store dies between the effect and the record of it:
// the record stays in flight. Once its lease is over, a retry takes the
// key over and meets the first outcome in the chain.
func TestFaultRedisDiesAfterTheEffect(t *testing.T) {
	ri := newRedisIdem(t)
	clock := fakeclock.New(time.Now())
	var once sync.Once
	e := newEnv(t, withIdem(ri.store(t)), withConfig(func(c *Config) { c.Now = clock.Now }))
	alice := fundedPair(e)
	// Swap the chain store for one that takes Redis down right after the
	// transfer's row is durable.
	e.stop()
	inner := e.openAudit
	e.openAudit = func() auditlog.Store { return afterAppend{Store: inner(), once: &once, hook: ri.proxy.Down} }
	e.start()
	a := attempt{tok: alice, route: "/v1/transfers", key: "dies-after", principal: "user:alice", body: transferBody("acc-a", "acc-b", 300)}
	a.got = e.do("POST", a.route, a.tok, a.body, a.key)
	if a.got.code != 201 {
		t.Fatalf("transfer: %s", a.got)
	}
	ri.proxy.Up()
	// Inside the lease the record is in flight: 409, nothing runs.
	if r := e.do("POST", a.route, a.tok, a.body, a.key); r.code != 409 {
		t.Fatalf("retry inside the lease: %s", r)
	}
	clock.Advance(2 * time.Minute)
	e.restartAndCheck([]attempt{a})
	if got := e.svc().Balances()["acc-a"]; got != 100_000-300 {
		t.Fatalf("balance %d", got)
	}
}

// Redis down, then back: writes go on (the chain deduplicates them),
// retries during and after the outage replay, nothing runs twice.
func TestFaultRedisDownThenBack(t *testing.T) {
	ri := newRedisIdem(t)
	e := newEnv(t, withIdem(ri.store(t)))
	alice := fundedPair(e)
	var attempts []attempt
	send := func(key string, amount int64) {
		a := attempt{tok: alice, route: "/v1/transfers", key: key, principal: "user:alice", body: transferBody("acc-a", "acc-b", amount)}
		a.got = e.do("POST", a.route, a.tok, a.body, a.key)
		if a.got.code != 201 {
			t.Fatalf("%s: %s", key, a.got)
		}
		attempts = append(attempts, a)
	}
	send("before", 10)
	ri.proxy.Down()
	send("during-1", 11)
	send("during-2", 12)
	// A retry during the outage replays from the chain.
	if r := e.do("POST", "/v1/transfers", alice, transferBody("acc-a", "acc-b", 11), "during-1"); r.code != 201 || !r.replayed() {
		t.Fatalf("retry during the outage: %s", r)
	}
	ri.proxy.Up()
	send("after", 13)
	e.restartAndCheck(attempts)
	if got := e.svc().Balances()["acc-a"]; got != 100_000-46 {
		t.Fatalf("balance %d", got)
	}
}

// PostgreSQL down, then back: writes fail with 503 while it is down
// (health says why), the ledger recovers without a restart, and every
// key, retried, has at most one effect and its first outcome.
func TestFaultPostgresDownThenBack(t *testing.T) {
	pg := newPGAudit(t)
	clock := fakeclock.New(time.Now())
	e := newEnv(t, withAudit(pg.open(t)), withConfig(func(c *Config) {
		c.Now = clock.Now
		c.RequestTimeout, c.CommitTimeout = 500*time.Millisecond, 2*time.Second
	}))
	alice := fundedPair(e)
	var attempts []attempt
	ok := attempt{tok: alice, route: "/v1/transfers", key: "pg-before", principal: "user:alice", body: transferBody("acc-a", "acc-b", 5)}
	ok.got = e.do("POST", ok.route, ok.tok, ok.body, ok.key)
	attempts = append(attempts, ok)
	pg.proxy.Down()
	for i := range 3 {
		a := attempt{tok: alice, route: "/v1/transfers", key: fmt.Sprint("pg-during-", i), principal: "user:alice", body: transferBody("acc-a", "acc-b", int64(6+i))}
		a.got = e.do("POST", a.route, a.tok, a.body, a.key)
		if a.got.code != 503 || a.got.header.Get("Retry-After") == "" {
			t.Fatalf("write while PostgreSQL is down: %s", a.got)
		}
		attempts = append(attempts, a)
	}
	eventually(t, 10*time.Second, "health to report the outage", func() bool { return e.svc().Health() != nil })
	pg.proxy.Up()
	eventually(t, 20*time.Second, "the ledger to recover", func() bool {
		r := e.do("POST", "/v1/transfers", alice, transferBody("acc-a", "acc-b", 1), "pg-after")
		return r.code == 201
	})
	attempts = append(attempts, attempt{tok: alice, route: "/v1/transfers", key: "pg-after", principal: "user:alice", body: transferBody("acc-a", "acc-b", 1)})
	if err := e.svc().Health(); err != nil {
		t.Fatalf("health after recovery: %v", err)
	}
	// The writes answered 503 had reached an append whose outcome the
	// ledger could not learn then: their keys stay claimed until the
	// lease ends, and only then may a retry run them.
	if r := e.do("POST", "/v1/transfers", alice, attempts[1].body, attempts[1].key); r.code != 409 {
		t.Fatalf("retry of a write whose outcome was unknown, inside the lease: %s", r)
	}
	clock.Advance(2 * time.Minute)
	e.restartAndCheck(attempts)
}

// Two ledgers on one PostgreSQL chain, each with its own (in-memory)
// idempotency store, so nothing but the database connects them: the same
// keys sent to both at once have one effect each, concurrent overdrafts
// spread over both never take the balance below zero, and both agree
// with a replay of the chain.
func TestReplicasStayConsistentThroughPostgres(t *testing.T) {
	pg := newPGAudit(t)
	// The pumps would catch each replica up in the background; keep them
	// quiet so the stale head below is stale.
	shared := withConfig(func(c *Config) { c.Shared = true; c.PumpInterval = time.Hour })
	a := newEnv(t, withAudit(pg.open(t)), shared)
	alice := fundedPair(a)
	// The second replica: the same chain, the same keys, its own memory.
	b := newEnv(t, withAudit(pg.open(t)), shared, withKeysOf(a))
	aliceB := b.user("alice")
	// A, B, A write in turn; each writes on a state that predates the
	// other's last row, so (at least one of) their appends must be refused
	// and re-planned after reading the other's row.
	for i, w := range []struct {
		e   *env
		tok string
	}{{a, alice}, {b, aliceB}, {a, alice}} {
		if r := w.e.do("POST", "/v1/transfers", w.tok, transferBody("acc-a", "acc-b", 1000), fmt.Sprint("rep-warm-", i)); r.code != 201 {
			t.Fatal(r)
		}
	}
	if c := a.svc().Stats().Conflicts + b.svc().Stats().Conflicts; c == 0 {
		t.Fatal("a replica planning on a stale head was not refused")
	}

	var wg sync.WaitGroup
	var ok atomic.Int32
	start := make(chan struct{})
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			e, tok := a, alice
			if i%2 == 1 {
				e, tok = b, aliceB
			}
			// Keys 0..19 are sent to both replicas; each transfer is 3000,
			// so the 97,000 left cover 32 of them.
			key := fmt.Sprint("rep-", i/2)
			if i >= 40 {
				key = fmt.Sprint("rep-solo-", i)
			}
			r := e.do("POST", "/v1/transfers", tok, transferBody("acc-a", "acc-b", 3000), key)
			switch {
			case r.code == 201 && !r.replayed():
				ok.Add(1)
			case r.code == 201, r.code == 409, r.code == 422:
			default:
				t.Errorf("replica answer: %s", r)
			}
		}()
	}
	close(start)
	wg.Wait()
	if got := ok.Load(); got > 32 {
		t.Fatalf("%d first executions; the funds cover 32", got)
	}
	t.Logf("conflicts re-planned: %d and %d", a.svc().Stats().Conflicts, b.svc().Stats().Conflicts)
	for _, e := range []*env{a, b} {
		if !e.svc().sync(nil) {
			t.Fatal("sync")
		}
	}
	if ba, bb := a.svc().Balances(), b.svc().Balances(); !equal(ba, bb) {
		t.Fatalf("replicas disagree: %v vs %v", ba, bb)
	}
	f := a.checkChain()
	b.checkChain()
	moved := 97_000 - f.balances["acc-a"]
	if moved != int64(ok.Load())*3000 {
		t.Fatalf("moved %d, but %d transfers were first executions", moved, ok.Load())
	}
	for i := range 20 {
		if n := f.keyEvents[keyOf("user:alice", SyncTransferPattern, fmt.Sprint("rep-", i))]; n > 1 {
			t.Fatalf("key rep-%d has %d effects", i, n)
		}
	}
	// A key completed on one replica replays on the other.
	r1 := a.do("POST", "/v1/transfers", alice, transferBody("acc-a", "acc-b", 1), "cross")
	r2 := b.do("POST", "/v1/transfers", aliceB, transferBody("acc-a", "acc-b", 1), "cross")
	if r1.code != 201 || r2.code != 201 || !r2.replayed() || string(r1.body) != string(r2.body) {
		t.Fatalf("cross-replica replay: %s / %s", r1, r2)
	}
}

// keepOpen is a store a restart does not close (an in-memory chain that
// stands for a database the ledger reconnects to).
type keepOpen struct{ auditlog.Store }

func (keepOpen) Close() error { return nil }

// gatedStore holds every append until the gate opens: a store that has
// the rows in hand and has not said whether they are durable.
type gatedStore struct {
	auditlog.Store
	gate chan struct{}
	held atomic.Int32
}

func (g *gatedStore) Append(ctx context.Context, recs []auditlog.Record) error {
	g.held.Add(1)
	<-g.gate
	return g.Store.Append(ctx, recs)
}

// A client whose append outlasts every deadline gets 503, and its key
// stays claimed (409) until the lease ends: nothing runs it again while the
// first append may still land. Once it lands, a retry after the lease
// meets that first outcome.
func TestUnknownOutcomeKeepsTheKeyClaimed(t *testing.T) {
	clock := fakeclock.New(time.Now())
	var g *gatedStore
	mem := keepOpen{auditmem.New()} // outlives the ledger's restarts
	e := newEnv(t, withAudit(func() auditlog.Store {
		if g == nil {
			return mem
		}
		return g
	}), withConfig(func(c *Config) {
		c.Now = clock.Now
		c.RequestTimeout, c.CommitTimeout = 100*time.Millisecond, 200*time.Millisecond
	}))
	alice := fundedPair(e)
	e.stop()
	g = &gatedStore{Store: mem, gate: make(chan struct{})}
	e.start()
	body := transferBody("acc-a", "acc-b", 77)
	first := e.do("POST", "/v1/transfers", alice, body, "unknown")
	if first.code != 503 || g.held.Load() == 0 {
		t.Fatalf("append that outlasts the deadlines: %s (appends held %d)", first, g.held.Load())
	}
	if r := e.do("POST", "/v1/transfers", alice, body, "unknown"); r.code != 409 {
		t.Fatalf("retry while the outcome is unknown: %s", r)
	}
	close(g.gate) // the append lands
	eventually(t, 10*time.Second, "the ledger to learn the outcome", func() bool {
		return e.svc().Balances()["acc-a"] == 100_000-77
	})
	clock.Advance(2 * time.Minute)
	r := e.do("POST", "/v1/transfers", alice, body, "unknown")
	if r.code != 201 || !r.replayed() {
		t.Fatalf("retry after the lease: %s", r)
	}
	e.restartAndCheck([]attempt{{tok: alice, route: "/v1/transfers", key: "unknown", principal: "user:alice", body: body, got: r}})
	if got := e.svc().Balances()["acc-a"]; got != 100_000-77 {
		t.Fatalf("balance %d: the transfer ran %v times", got, float64(100_000-got)/77)
	}
}
