package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/malai-sec/malai/idempotency"
	"github.com/malai-sec/malai/idempotency/memstore"
)

func newRunner(t *testing.T, s idempotency.Store, clk *clock, change func(*idempotency.RunnerConfig)) *idempotency.Runner {
	t.Helper()
	cfg := idempotency.RunnerConfig{Store: s, Now: clk.Now, Heartbeat: -1, Logger: discard}
	if change != nil {
		change(&cfg)
	}
	r, err := idempotency.NewRunner(cfg)
	if err != nil {
		t.Fatalf("NewRunner: %v", err)
	}
	return r
}

var fp1 = idempotency.Fingerprint([]byte("payload-1"), nil)

func TestDo(t *testing.T) {
	forEachStore(t, func(t *testing.T, s idempotency.Store) {
		ctx := context.Background()
		r := newRunner(t, s, newClock(), nil)
		var calls int
		fn := func(ctx context.Context, l *idempotency.Lease) (idempotency.Result, error) {
			calls++
			return idempotency.Result{Status: 201, Body: []byte("done")}, nil
		}
		res, replayed, err := r.Do(ctx, "msg-1", fp1, fn)
		if err != nil || replayed || string(res.Body) != "done" {
			t.Fatalf("first Do = %q, %v, %v", res.Body, replayed, err)
		}
		res, replayed, err = r.Do(ctx, "msg-1", fp1, fn)
		if err != nil || !replayed || string(res.Body) != "done" || res.Status != 201 || calls != 1 {
			t.Fatalf("redelivery = %q, %v, %v, calls %d; want the stored result", res.Body, replayed, err, calls)
		}
		other := idempotency.Fingerprint([]byte("payload-2"), nil)
		if _, _, err := r.Do(ctx, "msg-1", other, fn); !errors.Is(err, idempotency.ErrKeyReused) {
			t.Fatalf("other payload: %v; want ErrKeyReused", err)
		}
		// A failed attempt releases the key: the redelivery runs again.
		boom := errors.New("downstream timeout")
		if _, _, err := r.Do(ctx, "msg-2", fp1, func(context.Context, *idempotency.Lease) (idempotency.Result, error) {
			return idempotency.Result{}, boom
		}); !errors.Is(err, boom) {
			t.Fatalf("failing fn: %v", err)
		}
		if _, replayed, err := r.Do(ctx, "msg-2", fp1, fn); err != nil || replayed || calls != 2 {
			t.Fatalf("after a failure: replayed %v err %v calls %d; want a fresh run", replayed, err, calls)
		}
	})
}

func TestDoInFlight(t *testing.T) {
	s, _ := memstore.New(memstore.Config{})
	clk := newClock()
	r := newRunner(t, s, clk, nil)
	ctx := context.Background()
	inside := make(chan struct{})
	release := make(chan struct{})
	go r.Do(ctx, "k", fp1, func(context.Context, *idempotency.Lease) (idempotency.Result, error) {
		close(inside)
		<-release
		return idempotency.Result{}, nil
	})
	<-inside
	clk.Advance(10 * time.Second)
	_, _, err := r.Do(ctx, "k", fp1, func(context.Context, *idempotency.Lease) (idempotency.Result, error) {
		t.Error("ran while in flight")
		return idempotency.Result{}, nil
	})
	var ife *idempotency.InFlightError
	if !errors.As(err, &ife) || !errors.Is(err, idempotency.ErrInFlight) || ife.RetryAfter != 20*time.Second {
		t.Fatalf("err %v; want InFlightError with 20s left", err)
	}
	close(release)
}

// A worker crashes mid-operation (here: hangs and never renews); a second
// worker takes the key over after the lease; the first worker's late
// completion is rejected and the second's result stands.
func TestWorkerCrashTakeover(t *testing.T) {
	forEachStore(t, func(t *testing.T, s idempotency.Store) {
		ctx := context.Background()
		clk := newClock()
		w1 := newRunner(t, s, clk, nil) // two processes, one store
		w2 := newRunner(t, s, clk, nil)
		var effects atomic.Int32
		type out struct {
			res idempotency.Result
			err error
		}
		first := make(chan out, 1)
		started := make(chan uint64, 1)
		resume := make(chan struct{})
		go func() {
			res, _, err := w1.Do(ctx, "transfer-7", fp1, func(ctx context.Context, l *idempotency.Lease) (idempotency.Result, error) {
				started <- l.Token()
				<-resume // the worker is stalled (GC pause, partition, crash-looping host)
				effects.Add(1)
				return idempotency.Result{Status: 201, Body: []byte("worker-1")}, nil
			})
			first <- out{res, err}
		}()
		if tok := <-started; tok != 1 {
			t.Fatalf("first token %d; want 1", tok)
		}
		clk.Advance(idempotency.DefaultLease)
		var tok2 uint64
		res, replayed, err := w2.Do(ctx, "transfer-7", fp1, func(ctx context.Context, l *idempotency.Lease) (idempotency.Result, error) {
			tok2 = l.Token()
			effects.Add(1)
			return idempotency.Result{Status: 201, Body: []byte("worker-2")}, nil
		})
		if err != nil || replayed || string(res.Body) != "worker-2" || tok2 != 2 {
			t.Fatalf("takeover: %q %v %v token %d; want worker-2 with token 2", res.Body, replayed, err, tok2)
		}
		close(resume)
		late := <-first
		if !errors.Is(late.err, idempotency.ErrLeaseLost) {
			t.Fatalf("late completion: %v; want ErrLeaseLost", late.err)
		}
		res, replayed, err = w1.Do(ctx, "transfer-7", fp1, func(context.Context, *idempotency.Lease) (idempotency.Result, error) {
			t.Error("ran a third time")
			return idempotency.Result{}, nil
		})
		if err != nil || !replayed || string(res.Body) != "worker-2" {
			t.Fatalf("redelivery: %q %v %v; want worker-2's result", res.Body, replayed, err)
		}
		// Both stalled and successor ran: the fencing token (1 vs 2) is what
		// lets the ledger refuse the stalled worker's write downstream.
		if effects.Load() != 2 {
			t.Fatalf("effects %d", effects.Load())
		}
	})
}

// A worker under back-pressure renews its lease, so a redelivery during
// the wait is refused instead of running the job twice.
func TestBackPressuredWorkerExtends(t *testing.T) {
	forEachStore(t, func(t *testing.T, s idempotency.Store) {
		ctx := context.Background()
		clk := newClock()
		w1 := newRunner(t, s, clk, nil)
		w2 := newRunner(t, s, clk, nil)
		waiting := make(chan struct{})
		proceed := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			_, _, err := w1.Do(ctx, "job", fp1, func(ctx context.Context, l *idempotency.Lease) (idempotency.Result, error) {
				// Queue downstream is full: wait in steps, renewing each time.
				for range 3 {
					clk.Advance(25 * time.Second)
					if err := l.Extend(ctx, 0); err != nil {
						return idempotency.Result{}, err
					}
				}
				close(waiting)
				<-proceed
				return idempotency.Result{Status: 200}, nil
			})
			done <- err
		}()
		<-waiting // 75 s after the claim: far past the first 30 s lease
		if _, _, err := w2.Do(ctx, "job", fp1, func(context.Context, *idempotency.Lease) (idempotency.Result, error) {
			t.Error("redelivery ran while the first worker held a renewed lease")
			return idempotency.Result{}, nil
		}); !errors.Is(err, idempotency.ErrInFlight) {
			t.Fatalf("redelivery: %v; want ErrInFlight", err)
		}
		close(proceed)
		if err := <-done; err != nil {
			t.Fatalf("worker: %v", err)
		}
	})
}

// countingStore signals Extend calls and can make them report a lost
// lease, to observe the heartbeat.
type countingStore struct {
	idempotency.Store
	extended chan struct{}
	lose     bool
}

func (c *countingStore) Extend(ctx context.Context, key string, rec idempotency.Record, now time.Time) error {
	select {
	case c.extended <- struct{}{}:
	default:
	}
	if c.lose {
		return idempotency.ErrLeaseLost
	}
	return c.Store.Extend(ctx, key, rec, now)
}

func TestHeartbeat(t *testing.T) {
	for _, lose := range []bool{false, true} {
		mem, _ := memstore.New(memstore.Config{})
		s := &countingStore{Store: mem, extended: make(chan struct{}, 1), lose: lose}
		r := newRunner(t, s, newClock(), func(c *idempotency.RunnerConfig) {
			c.Lease = time.Second
			c.Heartbeat = time.Millisecond
		})
		_, _, err := r.Do(context.Background(), "k", fp1, func(ctx context.Context, l *idempotency.Lease) (idempotency.Result, error) {
			<-s.extended // the heartbeat renewed (or tried to)
			if lose {
				<-ctx.Done()
				if !errors.Is(context.Cause(ctx), idempotency.ErrLeaseLost) {
					t.Errorf("cause %v; want ErrLeaseLost", context.Cause(ctx))
				}
				return idempotency.Result{}, context.Cause(ctx)
			}
			return idempotency.Result{Status: 200}, nil
		})
		if lose != errors.Is(err, idempotency.ErrLeaseLost) {
			t.Fatalf("lose=%v: Do err %v", lose, err)
		}
	}
}

// The same key used by an HTTP retry and by a queue redelivery produces one
// side effect: the worker derives the HTTP record key with RecordKey.
func TestHTTPAndQueueShareOneRecord(t *testing.T) {
	forEachStore(t, func(t *testing.T, s idempotency.Store) {
		ctx := context.Background()
		clk := newClock()
		var mu sync.Mutex
		balance := 100
		transfer := func(amount int) idempotency.Result {
			mu.Lock()
			defer mu.Unlock()
			balance -= amount
			return idempotency.Result{Status: http.StatusCreated,
				Header: http.Header{"Content-Type": {"application/json"}},
				Body:   []byte(`{"balance":` + strconvI(balance) + `}`)}
		}
		m := newMiddleware(t, s, clk, nil)
		srv := route(m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			res := transfer(10)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(res.Status)
			w.Write(res.Body)
		}))
		worker := newRunner(t, s, clk, nil) // another process, same store
		job := func(key string) (idempotency.Result, bool, error) {
			// What the queue message carries: caller, key, body.
			rk := idempotency.RecordKey("alice", http.MethodPost, "POST /transfers", key)
			return worker.Do(ctx, rk, idempotency.Fingerprint([]byte(body1), nil), func(context.Context, *idempotency.Lease) (idempotency.Result, error) {
				return transfer(10), nil
			})
		}

		// HTTP first, then the queue redelivers the same transfer twice.
		w := post(srv, "alice", `"t-1"`, body1)
		for range 2 {
			res, replayed, err := job("t-1")
			if err != nil || !replayed || string(res.Body) != w.Body.String() {
				t.Fatalf("queue after HTTP: %q %v %v; want HTTP's result %q", res.Body, replayed, err, w.Body)
			}
		}
		// Queue first, then the client retries over HTTP.
		res, replayed, err := job("t-2")
		if err != nil || replayed {
			t.Fatalf("queue first: %v %v", replayed, err)
		}
		w = post(srv, "alice", `"t-2"`, body1)
		if w.Header().Get(idempotency.HeaderReplayed) != "true" || w.Body.String() != string(res.Body) || w.Code != http.StatusCreated {
			t.Fatalf("HTTP after queue: %d %q; want the worker's result %q", w.Code, w.Body, res.Body)
		}
		if balance != 80 {
			t.Fatalf("balance %d; want 80 (two transfers, one side effect each)", balance)
		}
	})
}

func strconvI(n int) string { return strconv.Itoa(n) }

func TestNewRunnerValidates(t *testing.T) {
	if _, err := idempotency.NewRunner(idempotency.RunnerConfig{}); err == nil {
		t.Fatal("NewRunner accepted a nil store")
	}
	s, _ := memstore.New(memstore.Config{})
	if _, err := idempotency.NewRunner(idempotency.RunnerConfig{Store: s, StoreTimeout: -1}); err == nil {
		t.Fatal("NewRunner accepted a negative StoreTimeout")
	}
}

func TestLeaseFromContextOutsideDo(t *testing.T) {
	if _, ok := idempotency.LeaseFromContext(httptest.NewRequest("GET", "/", nil).Context()); ok {
		t.Fatal("lease found in a plain context")
	}
}

// flakyStore fails the first n completions (and releases) in transit.
type flakyStore struct {
	idempotency.Store
	mu   sync.Mutex
	fail int
}

var errBlip = errors.New("connection reset by peer")

func (f *flakyStore) blip() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail > 0 {
		f.fail--
		return true
	}
	return false
}

func (f *flakyStore) Complete(ctx context.Context, key string, rec idempotency.Record, now time.Time) error {
	if f.blip() {
		return errBlip
	}
	return f.Store.Complete(ctx, key, rec, now)
}

// A blip while storing the result is retried, so the finished operation
// does not look in flight (and later run again); a store that stays down
// is reported as ErrUnavailable with the result still returned.
func TestCompletionRetried(t *testing.T) {
	for _, tc := range []struct {
		fails   int
		wantErr bool
	}{{1, false}, {2, false}, {3, true}} {
		mem, _ := memstore.New(memstore.Config{})
		s := &flakyStore{Store: mem, fail: tc.fails}
		r := newRunner(t, s, newClock(), nil)
		ok := func(context.Context, *idempotency.Lease) (idempotency.Result, error) {
			return idempotency.Result{Status: 201, Body: []byte("x")}, nil
		}
		res, _, err := r.Do(context.Background(), "k", fp1, ok)
		if tc.wantErr != errors.Is(err, idempotency.ErrUnavailable) || string(res.Body) != "x" {
			t.Fatalf("%d failures: res %q err %v", tc.fails, res.Body, err)
		}
		if tc.wantErr {
			continue
		}
		if _, replayed, err := r.Do(context.Background(), "k", fp1, ok); !replayed || err != nil {
			t.Fatalf("%d failures: replay %v %v; want the stored result", tc.fails, replayed, err)
		}
	}
}

// A hung operation is renewed only up to HeartbeatLimit after its claim,
// so a stuck process cannot hold a key for ever (powertools #1038-style
// records stuck in progress).
func TestHeartbeatLimit(t *testing.T) {
	s, _ := memstore.New(memstore.Config{})
	clk := newClock()
	r := newRunner(t, s, clk, func(c *idempotency.RunnerConfig) { c.HeartbeatLimit = 5 * time.Minute })
	_, _, err := r.Do(context.Background(), "k", fp1, func(ctx context.Context, l *idempotency.Lease) (idempotency.Result, error) {
		start := clk.Now()
		if !idempotency.HeartbeatDueForTest(l, start.Add(4*time.Minute)) {
			t.Error("not renewed inside the limit")
		}
		if idempotency.HeartbeatDueForTest(l, start.Add(5*time.Minute)) {
			t.Error("renewed past the limit")
		}
		return idempotency.Result{Status: 200}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := idempotency.NewRunner(idempotency.RunnerConfig{Store: s, HeartbeatLimit: -1}); err == nil {
		t.Fatal("negative HeartbeatLimit accepted")
	}
}

// An operation whose outcome is unknown leaves its claim in flight: a
// retry inside the lease meets 409 (it may not run again while the first
// run may still land), and takes the key over once the lease has ended.
func TestDoOutcomeUnknownKeepsTheClaim(t *testing.T) {
	forEachStore(t, func(t *testing.T, s idempotency.Store) {
		ctx := context.Background()
		clk := newClock()
		r := newRunner(t, s, clk, nil)
		unknown := fmt.Errorf("append not acknowledged: %w", idempotency.ErrOutcomeUnknown)
		if _, _, err := r.Do(ctx, "k", fp1, func(context.Context, *idempotency.Lease) (idempotency.Result, error) {
			return idempotency.Result{}, unknown
		}); !errors.Is(err, idempotency.ErrOutcomeUnknown) {
			t.Fatalf("Do = %v, want ErrOutcomeUnknown", err)
		}
		ran := false
		fn := func(context.Context, *idempotency.Lease) (idempotency.Result, error) {
			ran = true
			return idempotency.Result{Status: 201, Body: []byte("second")}, nil
		}
		if _, _, err := r.Do(ctx, "k", fp1, fn); !errors.Is(err, idempotency.ErrInFlight) || ran {
			t.Fatalf("retry inside the lease = %v (ran %v), want ErrInFlight", err, ran)
		}
		clk.Advance(idempotency.DefaultLease + time.Second)
		if res, _, err := r.Do(ctx, "k", fp1, fn); err != nil || !ran || string(res.Body) != "second" {
			t.Fatalf("retry after the lease = %q, %v (ran %v)", res.Body, err, ran)
		}
	})
}
