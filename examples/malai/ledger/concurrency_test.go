package ledger

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/malai-sec/malai/auditlog"
	auditmem "github.com/malai-sec/malai/auditlog/memstore"
	"github.com/malai-sec/malai/examples/malai/internal/queue"
	"github.com/malai-sec/malai/idempotency"
)

// 30 concurrent requests on one key, over the synchronous and the
// asynchronous routes, then the worker delivering the job ten times at
// once: one effect.
func TestBurstOnOneKeyAcrossPaths(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice")
	e.open(alice, "acc-a")
	e.open(e.user("bob"), "acc-b")
	e.fund("acc-a", 1000)
	body := transferBody("acc-a", "acc-b", 70)
	var wg sync.WaitGroup
	codes := make([]resp, 30)
	start := make(chan struct{})
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			codes[i] = e.do("POST", mixedRoute(i), alice, body, "burst")
		}()
	}
	close(start)
	wg.Wait()
	var firsts, replays, inflight int
	var winner resp
	for _, r := range codes {
		switch {
		case (r.code == 201 || r.code == 202) && !r.replayed():
			firsts++
			winner = r
		case (r.code == 201 || r.code == 202) && r.replayed():
			replays++
		case r.code == 409:
			inflight++
		default:
			t.Fatalf("unexpected answer in the burst: %s", r)
		}
	}
	if firsts != 1 {
		t.Fatalf("%d first executions (replays %d, in flight %d)", firsts, replays, inflight)
	}
	for _, r := range codes {
		if (r.code == 201 || r.code == 202) && string(r.body) != string(winner.body) {
			t.Fatalf("a replay differs from the first outcome: %s vs %s", r, winner)
		}
	}
	if winner.code == 202 {
		msg := e.nextJob()
		var wg sync.WaitGroup
		for range 10 {
			wg.Add(1)
			go func() { defer wg.Done(); e.runJob(msg.Body) }()
		}
		wg.Wait()
	}
	if got := e.svc().Balances()["acc-a"]; got != 930 {
		t.Fatalf("balance %d after a burst on one key", got)
	}
	f := e.checkChain()
	if n := f.keyEvents[keyOf("user:alice", SyncTransferPattern, "burst")]; n != 1 {
		t.Fatalf("the key has %d events", n)
	}
}

// 50 concurrent attempts to overdraw one account, over the synchronous
// route, the asynchronous route and the worker at once: the balance never
// goes below zero and exactly what the funds cover succeeds.
func TestConcurrentOverdraftAcrossPaths(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice")
	e.open(alice, "acc-a")
	e.open(e.user("bob"), "acc-b")
	e.fund("acc-a", 1000) // covers 10 transfers of 100
	body := transferBody("acc-a", "acc-b", 100)
	// 17 jobs accepted while the balance still covers each (acceptance
	// checks, the run decides).
	var jobs [][]byte
	for i := range 17 {
		if r := e.do("POST", "/v1/transfers/async", alice, body, fmt.Sprint("od-job-", i)); r.code != 202 {
			t.Fatalf("accept %d: %s", i, r)
		}
		jobs = append(jobs, e.nextJob().Body)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	var syncOK, asyncAccepted atomic.Int32
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			switch {
			case i < 17: // the worker runs the queued jobs
				e.runJob(jobs[i])
			case i < 34: // synchronous transfers
				if r := e.do("POST", "/v1/transfers", alice, body, fmt.Sprint("od-sync-", i)); r.code == 201 {
					syncOK.Add(1)
				} else if r.code != 422 {
					t.Errorf("sync: %s", r)
				}
			default: // asynchronous acceptances racing the rest
				if r := e.do("POST", "/v1/transfers/async", alice, body, fmt.Sprint("od-async-", i)); r.code == 202 {
					asyncAccepted.Add(1)
				} else if r.code != 422 {
					t.Errorf("async: %s", r)
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	// Run every job accepted during the race too.
	for e.queueLen() > 0 {
		e.runJob(e.nextJob().Body)
	}
	f := e.checkChain()
	succeeded := int(syncOK.Load())
	for _, j := range e.svc().book.PendingJobs() {
		t.Fatalf("job %s still pending", j.ID)
	}
	for _, tr := range f.transfers {
		if tr.Op != nil && tr.Op.Job != "" {
			succeeded++
		}
	}
	bal := e.svc().Balances()
	if bal["acc-a"] < 0 || bal["acc-a"]+bal["acc-b"] != 1000 {
		t.Fatalf("balances %v", bal)
	}
	if succeeded != 10 || bal["acc-a"] != 0 {
		t.Fatalf("%d transfers succeeded, balance %d; want exactly the 10 the funds cover", succeeded, bal["acc-a"])
	}
}

// mixedRoute sends even requests to the synchronous route and odd ones
// to the asynchronous one.
func mixedRoute(i int) string {
	if i%2 == 1 {
		return "/v1/transfers/async"
	}
	return "/v1/transfers"
}

func (e *env) queueLen() int { return e.queue.(*queue.Memory).Len() }

// liveHandler serves whatever ledger is current, across restarts.
func (e *env) liveHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { e.handler().ServeHTTP(w, r) })
}

// attempt is one keyed write a client sent, with the answer it got (code
// 0: none, the client gave up).
type attempt struct {
	tok, route, key, body, principal string
	got                              resp
}

// checkOutcomes asserts (d): every attempt, retried with its key and
// body, answers the outcome the chain recorded for the key, which is the
// answer the client got if it got one. It then asserts (a) and (b).
func (e *env) checkOutcomes(attempts []attempt) {
	e.t.Helper()
	for _, a := range attempts {
		r := e.do("POST", a.route, a.tok, a.body, a.key)
		if r.code >= 500 || r.code == 409 {
			e.t.Fatalf("retry of %s: %s", a.key, r)
		}
		if a.got.code != 0 && a.got.code < 500 && (r.code != a.got.code || string(r.body) != string(a.got.body)) {
			e.t.Fatalf("retry of %s answers %s, the client was first told %s", a.key, r, a.got)
		}
		if a.got.code != 0 && a.got.code < 500 && !r.replayed() {
			e.t.Fatalf("retry of %s ran again: %s", a.key, r)
		}
	}
	f := e.checkChain()
	for _, a := range attempts {
		k := keyOf(a.principal, SyncTransferPattern, a.key)
		op, ok := f.keyResult[k]
		if !ok {
			continue // refused for the request alone (never recorded)
		}
		r := e.do("POST", a.route, a.tok, a.body, a.key)
		if r.code != op.Status || string(r.body) != string(op.Body) {
			e.t.Fatalf("key %s answers %s, the chain recorded %d %s", a.key, r, op.Status, op.Body)
		}
	}
}

// Clients that time out at random points while their transfers are being
// appended: nothing drifts, the ledger restarts, and every client learns
// its first outcome with its key. Hundreds of iterations over real HTTP.
func TestClientCancellationDuringAppend(t *testing.T) {
	iterations := 300
	if testing.Short() {
		iterations = 60
	}
	e := newEnv(t)
	attempts := cancellingClients(t, e, iterations)
	e.checkChain()
	e.restart()
	e.checkOutcomes(attempts)
	// Run the queued jobs and check again.
	for e.queueLen() > 0 {
		e.runJob(e.nextJob().Body)
	}
	e.restart()
	e.checkOutcomes(attempts)
}

// The same in PostgreSQL mode (fewer iterations: each costs a round trip
// to the server): a client that gives up never abandons the append's
// transaction, and every retry meets the first outcome.
func TestClientCancellationDuringAppendPostgres(t *testing.T) {
	e := newEnv(t, withAudit(newPGAudit(t).open(t)))
	attempts := cancellingClients(t, e, 150)
	e.checkChain()
	e.restart()
	e.checkOutcomes(attempts)
}

// One client gives up while its transfer's append is in the store, and
// the append lands afterwards: the point is driven, not raced for. The
// ledger (its append detached from the client) applies the event and the
// retry replays it; with the AppendOnRequestContext fault the event is in
// the chain and not in the balances, which is what the tests above catch.
func TestCancelledClientWhileAppendLands(t *testing.T) {
	for _, fault := range []bool{false, true} {
		name := "detached"
		if fault {
			name = "append-on-request-context"
		}
		t.Run(name, func(t *testing.T) {
			var g *gatedStore
			mem := keepOpen{auditmem.New()}
			e := newEnv(t, withAudit(func() auditlog.Store {
				if g == nil {
					return mem
				}
				return g
			}), withConfig(func(c *Config) { c.Faults.AppendOnRequestContext = fault }))
			alice := fundedPair(e)
			e.stop()
			g = &gatedStore{Store: mem, gate: make(chan struct{})}
			e.start()
			a := attempt{tok: alice, route: "/v1/transfers", key: "gives-up", principal: "user:alice", body: transferBody("acc-a", "acc-b", 77)}
			ctx, cancel := context.WithCancel(context.Background())
			r := httptest.NewRequest("POST", a.route, strings.NewReader(a.body)).WithContext(ctx)
			r.Header.Set("Authorization", "Bearer "+a.tok)
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set(idempotency.HeaderKey, idempotency.FormatKey(a.key))
			done := make(chan struct{})
			go func() { defer close(done); e.handler().ServeHTTP(httptest.NewRecorder(), r) }()
			eventually(t, 10*time.Second, "the append to reach the store", func() bool { return g.held.Load() > 0 })
			before, _ := mem.Head(context.Background())
			cancel()
			if fault {
				<-done // the faulty ledger gives up with its client
			}
			close(g.gate) // the row lands
			eventually(t, 10*time.Second, "the row to land", func() bool {
				h, err := mem.Head(context.Background())
				return err == nil && h.Size > before.Size
			})
			<-done
			if fault {
				if _, problems := e.invariants(); len(problems) == 0 {
					t.Fatal("with the append on the request context, no invariant broke")
				}
				return
			}
			e.checkChain()
			if got := e.svc().Balances()["acc-a"]; got != 100_000-77 {
				t.Fatalf("balance %d after the abandoned transfer landed", got)
			}
			a.got = e.do("POST", a.route, a.tok, a.body, a.key)
			if a.got.code != 201 || !a.got.replayed() {
				t.Fatalf("retry of the abandoned transfer: %s", a.got)
			}
			e.restartAndCheck([]attempt{a})
		})
	}
}

// cancellingClients opens three funded accounts and sends n transfers
// over real HTTP, 16 at a time; a third of the clients wait for their
// answer, the others give up after 0-40 ms, at whatever point their
// request reached. It returns when every handler, abandoned or not, has
// finished.
func cancellingClients(t *testing.T, e *env, n int) []attempt {
	t.Helper()
	srv := httptest.NewServer(e.liveHandler())
	users := []string{"alice", "bob", "carol"}
	toks := map[string]string{}
	for _, u := range users {
		toks[u] = e.user(u)
		e.open(toks[u], "acc-"+u)
		e.fund("acc-"+u, 2000)
	}
	attempts := make([]attempt, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	var cancelled atomic.Int32
	for i := range attempts {
		from, to := users[i%3], users[(i+1+i/3)%3]
		if from == to {
			to = users[(i+2)%3]
		}
		route := "/v1/transfers"
		if i%5 == 4 {
			route = "/v1/transfers/async"
		}
		a := attempt{tok: toks[from], route: route, key: fmt.Sprint("cancel-", i), principal: "user:" + from,
			body: transferBody("acc-"+from, "acc-"+to, int64(1+rand.IntN(300)))}
		attempts[i] = a
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			timeout := time.Duration(rand.IntN(40)) * time.Millisecond
			if i%3 == 0 {
				timeout = time.Minute
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+a.route, strings.NewReader(a.body))
			req.Header.Set("Authorization", "Bearer "+a.tok)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(idempotency.HeaderKey, idempotency.FormatKey(a.key))
			res, err := srv.Client().Do(req)
			if err != nil {
				cancelled.Add(1)
				return
			}
			defer res.Body.Close()
			b, err := io.ReadAll(res.Body)
			if err != nil {
				cancelled.Add(1)
				return
			}
			attempts[i].got = resp{code: res.StatusCode, header: res.Header, body: b}
		}()
	}
	wg.Wait()
	t.Logf("%d of %d clients gave up before their answer", cancelled.Load(), n)
	if cancelled.Load() == 0 {
		t.Fatal("no client timed out: the test exercised nothing")
	}
	// Close waits for every handler, the abandoned ones too.
	srv.Close()
	return attempts
}
