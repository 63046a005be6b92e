// Package idempotencybench measures the idempotency middleware: its
// overhead with the memory store, and Redis round trips per request
// compared with the naive SET NX + GET pattern, in the same run.
package idempotencybench

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/malai-sec/malai/idempotency"
	"github.com/malai-sec/malai/idempotency/memstore"
	"github.com/malai-sec/malai/idempotency/redisstore"
	"github.com/malai-sec/malai/internal/servicetest"
)

var (
	reqBody  = []byte(`{"from":"acc-1","to":"acc-2","amount":"10.00","currency":"EUR"}`)
	respBody = bytes.Repeat([]byte("x"), 1024)
)

// handler answers like the ledger: 201 with a 1 KiB JSON-ish body.
var handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	w.Write(respBody)
})

func subject(*http.Request) (string, bool) { return "alice", true }

func newMiddleware(b *testing.B, s idempotency.Store) http.Handler {
	m, err := idempotency.New(idempotency.Config{Store: s, Principal: subject})
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /transfers", m.Handler(handler))
	return mux
}

// reusable request whose body is rewound each iteration.
type request struct {
	r    *http.Request
	body *bytes.Reader
}

func newRequest(key string) *request {
	br := bytes.NewReader(reqBody)
	r := httptest.NewRequest(http.MethodPost, "/transfers", br)
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set(idempotency.HeaderKey, idempotency.FormatKey(key))
	return &request{r: r, body: br}
}

func (q *request) serve(h http.Handler, w *discardWriter) {
	q.body.Reset(reqBody)
	w.reset()
	h.ServeHTTP(w, q.r)
}

// discardWriter is a minimal ResponseWriter, so the numbers measure the
// middleware, not httptest.ResponseRecorder.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(s int)   { w.status = s }
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = 200
	}
	w.n += len(p)
	return len(p), nil
}
func (w *discardWriter) reset() {
	clear(w.h)
	w.status, w.n = 0, 0
}

func newWriter() *discardWriter { return &discardWriter{h: http.Header{}} }

// loop runs body b.N times (via b.Loop) and reports CPU time per op.
func loop(b *testing.B, body func()) {
	b.ReportAllocs()
	start, n := cpuTime(), 0
	for b.Loop() {
		body()
		n++
	}
	b.ReportMetric(float64(cpuTime()-start)/float64(n), "cpu-ns/op")
}

// BenchmarkMemory: the bare handler, a replay of its 1 KiB response, and a
// first request (claim, run, complete) through the memory store.
func BenchmarkMemory(b *testing.B) {
	b.Run("Bare", func(b *testing.B) {
		mux := http.NewServeMux()
		mux.Handle("POST /transfers", handler)
		q, w := newRequest("k"), newWriter()
		loop(b, func() { q.serve(mux, w) })
	})
	b.Run("Replay1KiB", func(b *testing.B) {
		s, _ := memstore.New(memstore.Config{})
		h := newMiddleware(b, s)
		q, w := newRequest("replayed"), newWriter()
		q.serve(h, w)
		if w.status != http.StatusCreated {
			b.Fatalf("status %d", w.status)
		}
		loop(b, func() { q.serve(h, w) })
		if w.h.Get(idempotency.HeaderReplayed) != "true" || w.n != len(respBody) {
			b.Fatalf("not a replay: %v %d", w.h, w.n)
		}
	})
	b.Run("First1KiB", func(b *testing.B) {
		s, _ := memstore.New(memstore.Config{MaxBytes: 1 << 30})
		h := newMiddleware(b, s)
		w := newWriter()
		keys := make([]*request, 0, 1024)
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			if len(keys) == 0 || i == len(keys) {
				b.StopTimer()
				keys = keys[:0]
				for j := range cap(keys) {
					keys = append(keys, newRequest("first-"+strconv.Itoa(b.N)+"-"+strconv.Itoa(j)+"-"+strconv.Itoa(int(time.Now().UnixNano()))))
				}
				i = 0
				b.StartTimer()
			}
			keys[i].serve(h, w)
			i++
		}
		if w.status != http.StatusCreated || w.h.Get(idempotency.HeaderReplayed) != "" {
			b.Fatalf("not a first run: %d", w.status)
		}
	})
}

// counter counts commands sent to Redis: each is one round trip (a
// pipeline counts once).
type counter struct{ n atomic.Int64 }

func (c *counter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}
func (c *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmds)
	}
}

// naiveStore is the common hand-written pattern: SET NX to claim, GET to
// read what is there when the claim fails, SET to complete, with no owner
// or fencing check.
type naiveStore struct {
	c      redis.UniversalClient
	prefix string
}

func (s *naiveStore) Claim(ctx context.Context, key string, rec idempotency.Record, now time.Time) (idempotency.Record, bool, error) {
	val, err := rec.MarshalBinary()
	if err != nil {
		return idempotency.Record{}, false, err
	}
	ok, err := s.c.SetNX(ctx, s.prefix+key, val, 25*time.Hour).Result()
	if err != nil || ok {
		return rec, ok, err
	}
	cur, err := s.c.Get(ctx, s.prefix+key).Bytes()
	if err != nil {
		return idempotency.Record{}, false, err
	}
	var old idempotency.Record
	if err := old.UnmarshalBinary(cur); err != nil {
		return idempotency.Record{}, false, err
	}
	return old, false, nil
}

func (s *naiveStore) Extend(ctx context.Context, key string, rec idempotency.Record, now time.Time) error {
	return errors.New("naive: no lease renewal")
}

func (s *naiveStore) Complete(ctx context.Context, key string, rec idempotency.Record, now time.Time) error {
	val, err := rec.MarshalBinary()
	if err != nil {
		return err
	}
	return s.c.Set(ctx, s.prefix+key, val, 25*time.Hour).Err()
}

func (s *naiveStore) Release(ctx context.Context, key string, rec idempotency.Record) error {
	return s.c.Del(ctx, s.prefix+key).Err()
}

func (s *naiveStore) Close() error { return nil }

// BenchmarkRedis runs first requests and replays through the same
// middleware on redisstore and on the naive pattern. Each iteration runs
// one Malai request and one naive request back to back (paired, the
// order alternating), so load
// from other tenants of the shared Redis and CPU hits both alike; it
// reports each side's wall time and Redis round trips per request.
func BenchmarkRedis(b *testing.B) {
	r := servicetest.NewRedis(b)
	malaiCnt, naiveCnt := &counter{}, &counter{}
	malaiClient := r.NewClient(b, r.Addr)
	malaiClient.AddHook(malaiCnt)
	naiveClient := r.NewClient(b, r.Addr)
	naiveClient.AddHook(naiveCnt)
	rs, err := redisstore.New(redisstore.Config{Client: malaiClient, Prefix: r.Prefix + "malai:"})
	if err != nil {
		b.Fatal(err)
	}
	malai := newMiddleware(b, rs)
	naive := newMiddleware(b, &naiveStore{c: naiveClient, prefix: r.Prefix + "naive:"})
	w := newWriter()
	// Dial both clients and load the scripts outside the measurement.
	newRequest("warm-"+servicetest.Unique()).serve(malai, w)
	newRequest("warm-"+servicetest.Unique()).serve(naive, w)

	paired := func(b *testing.B, next func() (m, n *request), check func()) {
		var tm, tn time.Duration
		malaiCnt.n.Store(0)
		naiveCnt.n.Store(0)
		n := 0
		b.ReportAllocs()
		timed := func(q *request, h http.Handler) time.Duration {
			t0 := time.Now()
			q.serve(h, w)
			d := time.Since(t0)
			check()
			return d
		}
		for b.Loop() {
			qm, qn := next()
			// Alternate which side goes first, so neither gains from order.
			if n%2 == 0 {
				tm += timed(qm, malai)
				tn += timed(qn, naive)
			} else {
				tn += timed(qn, naive)
				tm += timed(qm, malai)
			}
			n++
		}
		b.ReportMetric(float64(tm.Nanoseconds())/float64(n), "malai-ns/op")
		b.ReportMetric(float64(tn.Nanoseconds())/float64(n), "naive-ns/op")
		b.ReportMetric(float64(malaiCnt.n.Load())/float64(n), "malai-roundtrips/op")
		b.ReportMetric(float64(naiveCnt.n.Load())/float64(n), "naive-roundtrips/op")
	}
	b.Run("First", func(b *testing.B) {
		run, i := servicetest.Unique(), 0
		paired(b, func() (m, n *request) {
			i++
			return newRequest(run + "-m-" + strconv.Itoa(i)), newRequest(run + "-n-" + strconv.Itoa(i))
		}, func() {
			if w.status != http.StatusCreated || w.h.Get(idempotency.HeaderReplayed) != "" {
				b.Fatalf("not a first run: %d", w.status)
			}
		})
	})
	b.Run("Replay", func(b *testing.B) {
		qm, qn := newRequest("replay-"+servicetest.Unique()), newRequest("replay-"+servicetest.Unique())
		qm.serve(malai, w)
		qn.serve(naive, w)
		paired(b, func() (m, n *request) { return qm, qn }, func() {
			if w.h.Get(idempotency.HeaderReplayed) != "true" {
				b.Fatalf("not a replay: %d", w.status)
			}
		})
	})
}
