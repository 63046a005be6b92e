package ledger

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/malai-sec/malai/examples/malai/internal/queue"
	"github.com/malai-sec/malai/examples/malai/ledger/internal/book"
	"github.com/malai-sec/malai/examples/malai/worker"
	"github.com/malai-sec/malai/internal/servicetest"
)

func withQueue(newQ func() queue.Queue) envOption { return func(e *env) { e.newQ = newQ } }

// asyncRig is the distributed asynchronous path: the ledger publishes to
// a Redis stream and the real worker consumes it and hands each job to
// the ledger over HTTP with its service token. Both reach Redis through
// one fault proxy, with clients that do not resend a command whose reply
// was lost.
type asyncRig struct {
	e      *env
	proxy  *servicetest.Proxy
	worker *worker.Worker
}

type bearer struct {
	tok string
	rt  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.tok)
	return b.rt.RoundTrip(r)
}

func newAsyncRig(t *testing.T) *asyncRig {
	t.Helper()
	r := servicetest.NewRedis(t)
	p := servicetest.NewProxy(t, r.Addr)
	stream := r.Prefix + "transfers"
	open := func(o queue.Options) *queue.Redis {
		c := r.NewClient(t, p.Addr())
		c.Options().MaxRetries = -1
		c.Options().DialTimeout = 500 * time.Millisecond
		c.Options().ReadTimeout = 2 * time.Second
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		q, err := queue.NewRedis(ctx, c, stream, "workers", o)
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	rig := &asyncRig{proxy: p}
	rig.e = newEnv(t, withQueue(func() queue.Queue { return open(queue.Options{}) }))
	srv := httptest.NewServer(rig.e.liveHandler())
	var wk *worker.Worker
	wq := open(queue.Options{Block: 50 * time.Millisecond, MinIdle: 300 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		OnError: func(err error) { wk.QueueError(err) }})
	wk, err := worker.New(worker.Config{Queue: wq, LedgerURL: srv.URL, Logger: quietLogger(), MaxBackoff: 100 * time.Millisecond,
		Client: &http.Client{Timeout: 10 * time.Second, Transport: bearer{tok: rig.e.worker(), rt: srv.Client().Transport}}})
	if err != nil {
		t.Fatal(err)
	}
	rig.worker = wk
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = wk.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	return rig
}

// settled waits until the worker has run every pending job.
func (rig *asyncRig) settled(t *testing.T) {
	t.Helper()
	eventually(t, 20*time.Second, "the worker to run every job", func() bool { return len(rig.e.svc().book.PendingJobs()) == 0 })
}

func (rig *asyncRig) jobDone(t *testing.T, tok string, accepted resp) JobStatus {
	t.Helper()
	var st JobStatus
	eventually(t, 20*time.Second, "the job to finish", func() bool {
		st = rig.e.jobStatus(tok, accepted.header.Get("Location"))
		return st.Status == book.JobSucceeded || st.Status == book.JobFailed
	})
	return st
}

// The asynchronous path's fault matrix, with the real worker on a Redis
// stream: the queue's reply to the ledger's publish is lost after Redis
// stored the message; Redis goes down and comes back; then a burst on one
// key and an overdraft race over both routes while the worker runs jobs.
// After each, (a) one effect per key and per job, (b) balances equal the
// chain, (c) the ledger restarts, (d) every retry answers the first
// outcome.
func TestAsyncFaultsWithRedisQueue(t *testing.T) {
	rig := newAsyncRig(t)
	e := rig.e
	alice := fundedPair(e)
	var attempts []attempt
	async := func(key string, amount int64) attempt {
		t.Helper()
		a := attempt{tok: alice, route: "/v1/transfers/async", key: key, principal: "user:alice", body: transferBody("acc-a", "acc-b", amount)}
		a.got = e.do("POST", a.route, a.tok, a.body, a.key)
		if a.got.code != 202 || a.got.replayed() {
			t.Fatalf("async %s: %s", key, a.got)
		}
		attempts = append(attempts, a)
		return a
	}

	// The publish reaches Redis, its reply does not: the ledger publishes
	// again, the worker gets the job twice, it runs once.
	fired := rig.proxy.DropReplyAfter([]byte(`"sig":"`))
	lost := async("lost-publish", 100)
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatal("the publish's reply was never dropped")
	}
	if st := rig.jobDone(t, alice, lost.got); st.Status != book.JobSucceeded {
		t.Fatalf("job whose publish reply was lost: %+v", st)
	}

	// Redis down: the acceptance is in the chain, so the client still gets
	// 202 and its retry replays it; the worker reports the outage; once
	// Redis is back the job is published and run.
	rig.proxy.Down()
	down := async("redis-down", 200)
	if r := e.do("POST", down.route, alice, down.body, down.key); r.code != 202 || !r.replayed() || string(r.body) != string(down.got.body) {
		t.Fatalf("retry while Redis is down: %s", r)
	}
	eventually(t, 10*time.Second, "the worker to report the queue down", func() bool { return rig.worker.Ready() != nil })
	if st := e.jobStatus(alice, down.got.header.Get("Location")); st.Status != book.JobQueued {
		t.Fatalf("job while Redis is down: %+v", st)
	}
	rig.proxy.Up()
	if st := rig.jobDone(t, alice, down.got); st.Status != book.JobSucceeded {
		t.Fatalf("job after Redis came back: %+v", st)
	}
	eventually(t, 10*time.Second, "the worker to report ready", func() bool { return rig.worker.Ready() == nil })

	// A burst on one key over both routes while the worker runs jobs.
	var wg sync.WaitGroup
	start := make(chan struct{})
	burst := make([]resp, 20)
	body := transferBody("acc-a", "acc-b", 70)
	for i := range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			burst[i] = e.do("POST", mixedRoute(i), alice, body, "burst")
		}()
	}
	// An overdraft race: acc-c holds 1000, 30 transfers of 100 over both
	// routes.
	carol := e.user("carol")
	e.open(carol, "acc-c")
	e.fund("acc-c", 1000)
	var syncOK atomic.Int32
	var accepted sync.Map
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r := e.do("POST", mixedRoute(i), carol, transferBody("acc-c", "acc-b", 100), fmt.Sprint("od-", i))
			switch {
			case r.code == 201:
				syncOK.Add(1)
			case r.code == 202:
				accepted.Store(i, r)
			case r.code != 422:
				t.Errorf("overdraft %d: %s", i, r)
			}
		}()
	}
	close(start)
	wg.Wait()
	firsts := 0
	for _, r := range burst {
		switch {
		case (r.code == 201 || r.code == 202) && !r.replayed():
			firsts++
		case r.code == 201, r.code == 202, r.code == 409:
		default:
			t.Fatalf("burst: %s", r)
		}
	}
	if firsts != 1 {
		t.Fatalf("%d first executions of one key", firsts)
	}
	rig.settled(t)
	succeeded := int(syncOK.Load())
	accepted.Range(func(_, v any) bool {
		if rig.jobDone(t, carol, v.(resp)).Status == book.JobSucceeded {
			succeeded++
		}
		return true
	})
	if bal := e.svc().Balances()["acc-c"]; succeeded != 10 || bal != 0 {
		t.Fatalf("%d overdraft transfers succeeded, balance %d: want the 10 the funds cover", succeeded, bal)
	}
	f := e.checkChain()
	if n := f.keyEvents[keyOf("user:alice", SyncTransferPattern, "burst")]; n != 1 {
		t.Fatalf("the burst's key has %d events", n)
	}
	if len(f.jobRuns) == 0 {
		t.Fatal("no job ran")
	}
	e.restartAndCheck(attempts)
	rig.settled(t)
	e.checkChain()
}
