package idempotency_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/malai-sec/malai/idempotency"
	"github.com/malai-sec/malai/idempotency/memstore"
	"github.com/malai-sec/malai/idempotency/redisstore"
	"github.com/malai-sec/malai/internal/servicetest"
	routepkg "github.com/malai-sec/malai/route"
)

const body1 = `{"from":"acc-1","to":"acc-2","amount":"10.00"}`

func TestKeyRequiredAndValidated(t *testing.T) {
	s, _ := memstore.New(memstore.Config{})
	h := &transfers{}
	srv := route(newMiddleware(t, s, newClock(), nil), h)
	cases := []struct {
		name   string
		keys   []string
		status int
		slug   string
	}{
		{"missing", nil, 400, "idempotency-key-missing"},
		{"token not string", []string{"abc"}, 400, "idempotency-key-invalid"},
		{"empty string", []string{`""`}, 400, "idempotency-key-invalid"},
		{"too long", []string{`"` + strings.Repeat("k", 256) + `"`}, 400, "idempotency-key-invalid"},
		{"two fields", []string{`"a"`, `"b"`}, 400, "idempotency-key-invalid"},
		{"list", []string{`"a", "b"`}, 400, "idempotency-key-invalid"},
		{"control char", []string{"\"a\tb\""}, 400, "idempotency-key-invalid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/transfers", strings.NewReader(body1))
			r.Header.Set("X-Test-User", "alice")
			for _, k := range tc.keys {
				r.Header.Add(idempotency.HeaderKey, k)
			}
			w := httptest.NewRecorder()
			srv.ServeHTTP(w, r)
			if w.Code != tc.status {
				t.Fatalf("status %d; want %d", w.Code, tc.status)
			}
			if got := problemType(t, w); got != tc.slug {
				t.Fatalf("problem %q; want %q", got, tc.slug)
			}
			if len(tc.keys) > 0 && strings.Contains(w.Body.String(), strings.Trim(tc.keys[0], `"`)+`"`) && len(tc.keys[0]) > 3 {
				t.Fatalf("problem echoes the key: %s", w.Body)
			}
		})
	}
	if h.Calls() != 0 {
		t.Fatalf("handler ran %d times on refused requests", h.Calls())
	}
	// 255 characters are accepted.
	if w := post(srv, "alice", `"`+strings.Repeat("k", 255)+`"`, body1); w.Code != http.StatusCreated {
		t.Fatalf("255-character key: status %d", w.Code)
	}
}

func TestOptionalAndUnguardedMethods(t *testing.T) {
	s, _ := memstore.New(memstore.Config{})
	h := &transfers{}
	srv := route(newMiddleware(t, s, newClock(), func(c *idempotency.Config) { c.Optional = true }), h)
	post(srv, "alice", "", body1)
	post(srv, "alice", "", body1)
	if h.Calls() != 2 {
		t.Fatalf("Optional: %d calls without a key; want 2 (unprotected)", h.Calls())
	}
	strict := route(newMiddleware(t, s, newClock(), nil), h)
	r := httptest.NewRequest(http.MethodGet, "/transfers", nil)
	w := httptest.NewRecorder()
	strict.ServeHTTP(w, r)
	if w.Code != http.StatusCreated || h.Calls() != 3 {
		t.Fatalf("GET: status %d calls %d; want it passed through", w.Code, h.Calls())
	}
}

func TestNoPrincipal(t *testing.T) {
	s, _ := memstore.New(memstore.Config{})
	h := &transfers{}
	srv := route(newMiddleware(t, s, newClock(), nil), h)
	w := post(srv, "", `"k1"`, body1)
	if w.Code != http.StatusUnauthorized || problemType(t, w) != "idempotency-unauthenticated" || h.Calls() != 0 {
		t.Fatalf("status %d calls %d; want 401 and no call", w.Code, h.Calls())
	}
}

func TestReplay(t *testing.T) {
	forEachStore(t, func(t *testing.T, s idempotency.Store) {
		h := &transfers{}
		srv := route(newMiddleware(t, s, newClock(), nil), h)
		first := post(srv, "alice", `"k1"`, body1)
		if first.Code != http.StatusCreated || first.Header().Get(idempotency.HeaderReplayed) != "" {
			t.Fatalf("first: status %d replayed %q", first.Code, first.Header().Get(idempotency.HeaderReplayed))
		}
		second := post(srv, "alice", `"k1"`, body1)
		if h.Calls() != 1 {
			t.Fatalf("handler ran %d times; want 1", h.Calls())
		}
		if second.Code != http.StatusCreated || second.Header().Get(idempotency.HeaderReplayed) != "true" {
			t.Fatalf("replay: status %d replayed %q", second.Code, second.Header().Get(idempotency.HeaderReplayed))
		}
		if diff := cmp.Diff(first.Body.String(), second.Body.String()); diff != "" {
			t.Fatalf("replayed body (-first +replay):\n%s", diff)
		}
		for _, k := range []string{"Content-Type", "Location"} {
			if first.Header().Get(k) != second.Header().Get(k) {
				t.Errorf("%s: %q replayed as %q", k, first.Header().Get(k), second.Header().Get(k))
			}
		}
		for _, k := range []string{"Set-Cookie", "X-Execution"} {
			if v := second.Header().Get(k); v != "" {
				t.Errorf("%s replayed (%q); only allow-listed headers may be", k, v)
			}
		}
		if second.Header().Get("Content-Length") != "" && second.Header().Get("Content-Length") != strconv.Itoa(second.Body.Len()) {
			t.Errorf("Content-Length %s for %d bytes", second.Header().Get("Content-Length"), second.Body.Len())
		}
	})
}

func TestScopes(t *testing.T) {
	forEachStore(t, func(t *testing.T, s idempotency.Store) {
		h := &transfers{}
		srv := route(newMiddleware(t, s, newClock(), nil), h)
		post(srv, "alice", `"k1"`, body1)
		// Another caller with the same key is a different record: bob must
		// never receive alice's response.
		w := post(srv, "bob", `"k1"`, body1)
		if w.Code != http.StatusCreated || w.Header().Get(idempotency.HeaderReplayed) != "" || h.Calls() != 2 {
			t.Fatalf("bob: status %d replayed %q calls %d; want a fresh execution", w.Code, w.Header().Get(idempotency.HeaderReplayed), h.Calls())
		}
		// Same caller, same key, another payload: 422, no execution.
		w = post(srv, "alice", `"k1"`, `{"amount":"99.00"}`)
		if w.Code != http.StatusUnprocessableEntity || problemType(t, w) != "idempotency-key-reused" || h.Calls() != 2 {
			t.Fatalf("reused key: status %d calls %d; want 422", w.Code, h.Calls())
		}
		if strings.Contains(w.Body.String(), "k1") {
			t.Fatalf("problem body echoes the key: %s", w.Body)
		}
	})
}

func TestRouteScope(t *testing.T) {
	s, _ := memstore.New(memstore.Config{})
	m := newMiddleware(t, s, newClock(), nil)
	var a, b transfers
	mux := http.NewServeMux()
	mux.Handle("POST /a", m.Handler(&a))
	mux.Handle("POST /b", m.Handler(&b))
	for _, path := range []string{"/a", "/b", "/a"} {
		r := asUser(httptest.NewRequest(http.MethodPost, path, strings.NewReader(body1)), "alice")
		r.Header.Set(idempotency.HeaderKey, `"same"`)
		mux.ServeHTTP(httptest.NewRecorder(), r)
	}
	if a.Calls() != 1 || b.Calls() != 1 {
		t.Fatalf("calls a=%d b=%d; want one each (records scoped by route)", a.Calls(), b.Calls())
	}
}

func TestInFlightConflict(t *testing.T) {
	forEachStore(t, func(t *testing.T, s idempotency.Store) {
		h := &transfers{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
		srv := route(newMiddleware(t, s, newClock(), nil), h)
		done := make(chan *httptest.ResponseRecorder)
		go func() { done <- post(srv, "alice", `"k1"`, body1) }()
		<-h.entered
		w := post(srv, "alice", `"k1"`, body1)
		if w.Code != http.StatusConflict || problemType(t, w) != "idempotency-in-flight" {
			t.Fatalf("concurrent retry: status %d; want 409 idempotency-in-flight", w.Code)
		}
		if ra := w.Header().Get("Retry-After"); ra != "30" {
			t.Fatalf("Retry-After %q; want 30 (the lease left)", ra)
		}
		close(h.gate)
		if first := <-done; first.Code != http.StatusCreated {
			t.Fatalf("first: status %d", first.Code)
		}
		if h.Calls() != 1 {
			t.Fatalf("calls %d; want 1", h.Calls())
		}
	})
}

// 100 concurrent identical requests: exactly one execution, every other
// caller gets the same result or a 409.
func TestHundredConcurrentRequests(t *testing.T) {
	forEachStore(t, func(t *testing.T, s idempotency.Store) {
		for _, blocked := range []bool{true, false} {
			name := "HandlerRacesRetries"
			if blocked {
				name = "HandlerHeldUntilAllAnswered"
			}
			t.Run(name, func(t *testing.T) {
				h := &transfers{}
				if blocked {
					h.gate = make(chan struct{})
				}
				// Two replicas (separate middleware and runners) on one store.
				clk := newClock()
				srvs := []http.Handler{route(newMiddleware(t, s, clk, nil), h), route(newMiddleware(t, s, clk, nil), h)}
				key := `"` + name + `"`
				const n = 100
				results := make(chan *httptest.ResponseRecorder, n)
				var wg sync.WaitGroup
				for i := range n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						results <- post(srvs[i%2], "alice", key, body1)
					}()
				}
				var got []*httptest.ResponseRecorder
				if blocked {
					// Every caller but the one running answers 409 while it holds.
					for range n - 1 {
						got = append(got, <-results)
					}
					close(h.gate)
				}
				wg.Wait()
				close(results)
				for w := range results {
					got = append(got, w)
				}
				if h.Calls() != 1 {
					t.Fatalf("handler ran %d times; want 1", h.Calls())
				}
				var created, conflict int
				var firstBody string
				for _, w := range got {
					switch w.Code {
					case http.StatusCreated:
						created++
						if firstBody == "" {
							firstBody = w.Body.String()
						} else if w.Body.String() != firstBody {
							t.Fatalf("different bodies: %q vs %q", firstBody, w.Body)
						}
					case http.StatusConflict:
						conflict++
						if problemType(t, w) != "idempotency-in-flight" || w.Header().Get("Retry-After") == "" {
							t.Fatalf("409 without in-flight problem or Retry-After")
						}
					default:
						t.Fatalf("unexpected status %d: %s", w.Code, w.Body)
					}
				}
				if created+conflict != n || created < 1 {
					t.Fatalf("created %d conflict %d; want %d answers with at least one 201", created, conflict, n)
				}
				if blocked && created != 1 {
					t.Fatalf("created %d; want 1 while the handler was held", created)
				}
			})
		}
	})
}

func TestServerErrorReleasesClaim(t *testing.T) {
	forEachStore(t, func(t *testing.T, s idempotency.Store) {
		var calls int
		status := http.StatusServiceUnavailable
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls++
			w.WriteHeader(status)
			io.WriteString(w, "attempt")
		})
		srv := route(newMiddleware(t, s, newClock(), nil), h)
		if w := post(srv, "alice", `"k"`, body1); w.Code != 503 || w.Body.String() != "attempt" {
			t.Fatalf("first: %d %q", w.Code, w.Body)
		}
		status = http.StatusBadRequest // a 4xx is a definitive answer: stored
		if w := post(srv, "alice", `"k"`, body1); w.Code != 400 || w.Header().Get(idempotency.HeaderReplayed) != "" {
			t.Fatalf("retry after 5xx: %d replayed %q; want a fresh run", w.Code, w.Header().Get(idempotency.HeaderReplayed))
		}
		if w := post(srv, "alice", `"k"`, body1); w.Code != 400 || w.Header().Get(idempotency.HeaderReplayed) != "true" {
			t.Fatalf("retry after 4xx: %d replayed %q; want the stored 400", w.Code, w.Header().Get(idempotency.HeaderReplayed))
		}
		if calls != 2 {
			t.Fatalf("calls %d; want 2", calls)
		}
	})
}

func TestPanicReleasesClaim(t *testing.T) {
	forEachStore(t, func(t *testing.T, s idempotency.Store) {
		var calls int
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls++
			if calls == 1 {
				w.WriteHeader(http.StatusCreated)
				panic("boom")
			}
			w.WriteHeader(http.StatusCreated)
		})
		srv := route(newMiddleware(t, s, newClock(), nil), h)
		func() {
			defer func() {
				if recover() == nil {
					t.Fatal("panic was swallowed")
				}
			}()
			post(srv, "alice", `"k"`, body1)
		}()
		if w := post(srv, "alice", `"k"`, body1); w.Code != http.StatusCreated || w.Header().Get(idempotency.HeaderReplayed) != "" || calls != 2 {
			t.Fatalf("retry after panic: %d calls %d; want a fresh run", w.Code, calls)
		}
	})
}

func TestOversizedResponseNotReplayable(t *testing.T) {
	forEachStore(t, func(t *testing.T, s idempotency.Store) {
		var calls int
		big := bytes.Repeat([]byte("z"), 3000)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls++
			w.WriteHeader(http.StatusCreated)
			w.Write(big[:1000])
			w.Write(big[1000:])
		})
		srv := route(newMiddleware(t, s, newClock(), func(c *idempotency.Config) { c.MaxResponseBytes = 2048 }), h)
		first := post(srv, "alice", `"k"`, body1)
		if first.Code != http.StatusCreated || !bytes.Equal(first.Body.Bytes(), big) {
			t.Fatalf("first: %d with %d bytes; want the whole response once", first.Code, first.Body.Len())
		}
		retry := post(srv, "alice", `"k"`, body1)
		if retry.Code != http.StatusConflict || problemType(t, retry) != "idempotency-not-replayable" {
			t.Fatalf("retry: %d; want 409 idempotency-not-replayable", retry.Code)
		}
		if calls != 1 {
			t.Fatalf("calls %d; want 1: an oversized response must never cause a second run", calls)
		}
	})
}

func TestBodyLimits(t *testing.T) {
	s, _ := memstore.New(memstore.Config{})
	h := &transfers{}
	srv := route(newMiddleware(t, s, newClock(), func(c *idempotency.Config) { c.MaxBodyBytes = 64 }), h)
	if w := post(srv, "alice", `"k"`, strings.Repeat("a", 65)); w.Code != http.StatusRequestEntityTooLarge || problemType(t, w) != "idempotency-body-too-large" {
		t.Fatalf("status %d; want 413", w.Code)
	}
	r := asUser(httptest.NewRequest(http.MethodPost, "/transfers", io.MultiReader(strings.NewReader("ab"), errReader{})), "alice")
	r.Header.Set(idempotency.HeaderKey, `"k2"`)
	w := httptest.NewRecorder()
	newMiddleware(t, s, newClock(), nil).Handler(h).ServeHTTP(w, r)
	if w.Code != http.StatusBadRequest || problemType(t, w) != "idempotency-body-unreadable" {
		t.Fatalf("unreadable body: status %d", w.Code)
	}
	if h.Calls() != 0 {
		t.Fatalf("handler ran %d times", h.Calls())
	}
	// The handler sees the whole body although the middleware read it.
	if w := post(srv, "alice", `"k3"`, "exactly-this"); !strings.Contains(w.Body.String(), "exactly-this") {
		t.Fatalf("handler did not receive the body: %s", w.Body)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// Replay after 23 h returns the original; after 25 h the key is new. The
// Redis variant runs on the same fake clock: liveness comes from the
// record's timestamps, Redis's PX is only a backstop.
func TestRetentionWindow(t *testing.T) {
	forEachStore(t, func(t *testing.T, s idempotency.Store) {
		clk := newClock()
		h := &transfers{}
		srv := route(newMiddleware(t, s, clk, nil), h)
		first := post(srv, "alice", `"k"`, body1)
		clk.Advance(23 * time.Hour)
		w := post(srv, "alice", `"k"`, body1)
		if w.Header().Get(idempotency.HeaderReplayed) != "true" || w.Body.String() != first.Body.String() {
			t.Fatalf("after 23 h: replayed %q body %s; want the original", w.Header().Get(idempotency.HeaderReplayed), w.Body)
		}
		clk.Advance(2 * time.Hour)
		w = post(srv, "alice", `"k"`, `{"a":"new payload is fine: the key is new"}`)
		if w.Code != http.StatusCreated || w.Header().Get(idempotency.HeaderReplayed) != "" || h.Calls() != 2 {
			t.Fatalf("after 25 h: status %d replayed %q calls %d; want a fresh run", w.Code, w.Header().Get(idempotency.HeaderReplayed), h.Calls())
		}
	})
}

// A holder that hangs past its lease is taken over; its late result is
// rejected and the successor's result is the one replayed.
func TestTakeoverAfterLease(t *testing.T) {
	forEachStore(t, func(t *testing.T, s idempotency.Store) {
		clk := newClock()
		gates := []chan struct{}{make(chan struct{}), make(chan struct{})}
		entered := make(chan int, 2)
		var mu sync.Mutex
		calls := 0
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			n := calls
			calls++
			mu.Unlock()
			entered <- n
			<-gates[n]
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, "execution "+strconv.Itoa(n))
		})
		srv := route(newMiddleware(t, s, clk, nil), h)
		stuck := make(chan *httptest.ResponseRecorder, 1)
		go func() { stuck <- post(srv, "alice", `"k"`, body1) }()
		<-entered
		// Inside the lease the retry is refused.
		if w := post(srv, "alice", `"k"`, body1); w.Code != http.StatusConflict {
			t.Fatalf("retry inside the lease: %d; want 409", w.Code)
		}
		clk.Advance(31 * time.Second)
		second := make(chan *httptest.ResponseRecorder, 1)
		go func() { second <- post(srv, "alice", `"k"`, body1) }()
		<-entered // the successor runs: the stuck holder's lease has ended
		close(gates[1])
		if w2 := <-second; w2.Code != http.StatusCreated || w2.Body.String() != "execution 1" {
			t.Fatalf("successor: %d %q", w2.Code, w2.Body)
		}
		close(gates[0]) // the stuck holder finishes late; its result must not win
		<-stuck
		replay := post(srv, "alice", `"k"`, body1)
		if replay.Header().Get(idempotency.HeaderReplayed) != "true" || replay.Body.String() != "execution 1" {
			t.Fatalf("replay %q; want the successor's result", replay.Body)
		}
	})
}

func TestStoreOutageFailsClosed(t *testing.T) {
	r := servicetest.NewRedis(t)
	p := servicetest.NewProxy(t, r.Addr)
	c := r.NewClient(t, p.Addr())
	s, err := redisstore.New(redisstore.Config{Client: c, Prefix: r.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	h := &transfers{}
	srv := route(newMiddleware(t, s, newClock(), func(c *idempotency.Config) { c.Logger = logger }), h)
	p.Down()
	w := post(srv, "alice", `"secret-key-123"`, body1)
	if w.Code != http.StatusServiceUnavailable || problemType(t, w) != "service-unavailable" {
		t.Fatalf("status %d; want 503", w.Code)
	}
	if w.Header().Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q; want 1", w.Header().Get("Retry-After"))
	}
	if h.Calls() != 0 {
		t.Fatal("handler ran during the outage")
	}
	if strings.Contains(w.Body.String(), "127.0.0.1") || strings.Contains(w.Body.String(), "secret-key-123") {
		t.Fatalf("problem leaks internals: %s", w.Body)
	}
	if !strings.Contains(logs.String(), "store failed") || strings.Contains(logs.String(), "secret-key-123") {
		t.Fatalf("log must record the failure without the key: %s", logs.String())
	}
	p.Up()
	if w := post(srv, "alice", `"secret-key-123"`, body1); w.Code != http.StatusCreated {
		t.Fatalf("after recovery: %d", w.Code)
	}

	// FailOpen runs the request unprotected and reports the failure.
	var seen error
	open := route(newMiddleware(t, s, newClock(), func(c *idempotency.Config) {
		c.FailOpen = true
		c.OnStoreError = func(_ *http.Request, err error) { seen = err }
	}), h)
	p.Down()
	if w := post(open, "alice", `"k2"`, body1); w.Code != http.StatusCreated || !errors.Is(seen, idempotency.ErrUnavailable) {
		t.Fatalf("FailOpen: status %d hook err %v", w.Code, seen)
	}
}

func TestCanonicalJSONAndFingerprintHeaders(t *testing.T) {
	s, _ := memstore.New(memstore.Config{})
	h := &transfers{}
	canon := route(newMiddleware(t, s, newClock(), func(c *idempotency.Config) {
		c.Canonicalize = idempotency.CanonicalJSON
		c.FingerprintHeaders = []string{"x-api-version"}
	}), h)
	post(canon, "alice", `"k"`, `{"a":1,"b":[1,2]}`)
	w := post(canon, "alice", `"k"`, "{ \"b\": [1, 2],\n \"a\": 1 }")
	if w.Header().Get(idempotency.HeaderReplayed) != "true" {
		t.Fatalf("reordered JSON: status %d; want a replay", w.Code)
	}
	r := httptest.NewRequest(http.MethodPost, "/transfers", strings.NewReader(`{"a":1,"b":[1,2]}`))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-Test-User", "alice")
	r.Header.Set("X-Api-Version", "2")
	r.Header.Set(idempotency.HeaderKey, `"k"`)
	rec := httptest.NewRecorder()
	canon.ServeHTTP(rec, r)
	if rec.Code != http.StatusUnprocessableEntity {
		t.Fatalf("changed fingerprint header: status %d; want 422", rec.Code)
	}
	// Without Canonicalize the bytes must match exactly.
	strict := route(newMiddleware(t, s, newClock(), nil), h)
	post(strict, "bob", `"k"`, `{"a":1}`)
	if w := post(strict, "bob", `"k"`, `{ "a":1}`); w.Code != http.StatusUnprocessableEntity {
		t.Fatalf("strict: status %d; want 422 for different bytes", w.Code)
	}
}

func TestCanonicalJSON(t *testing.T) {
	cases := []struct {
		ct, in, want string
		err          bool
	}{
		{"application/json", `{"b":1.50,"a":{"d":true,"c":null}}`, `{"a":{"c":null,"d":true},"b":1.50}`, false},
		{"application/merge-patch+json; charset=utf-8", ` [ 1 , "x" ] `, `[1,"x"]`, false},
		{"text/plain", `{"b":1,"a":2}`, `{"b":1,"a":2}`, false},
		{"application/json", `{"a":1} {"b":2}`, "", true},
		{"application/json", `{"a":`, "", true},
	}
	for _, tc := range cases {
		got, err := idempotency.CanonicalJSON(tc.ct, []byte(tc.in))
		if (err != nil) != tc.err || (!tc.err && string(got) != tc.want) {
			t.Errorf("CanonicalJSON(%q, %q) = %q, %v; want %q (error %v)", tc.ct, tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestErrorHandlerHook(t *testing.T) {
	s, _ := memstore.New(memstore.Config{})
	var got error
	srv := route(newMiddleware(t, s, newClock(), func(c *idempotency.Config) {
		c.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
			got = err
			w.WriteHeader(http.StatusTeapot)
		}
	}), &transfers{})
	if w := post(srv, "alice", "", body1); w.Code != http.StatusTeapot || !errors.Is(got, idempotency.ErrKeyMissing) {
		t.Fatalf("hook: status %d err %v", w.Code, got)
	}
}

// A client that hangs up does not stop the record from being completed:
// its retry gets the stored result instead of a second run.
func TestClientGoneStillCompletes(t *testing.T) {
	forEachStore(t, func(t *testing.T, s idempotency.Store) {
		h := &transfers{}
		srv := route(newMiddleware(t, s, newClock(), nil), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(w, r)
		}))
		ctx, cancel := context.WithCancel(context.Background())
		r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/transfers", strings.NewReader(body1))
		r.Header.Set("X-Test-User", "alice")
		r.Header.Set(idempotency.HeaderKey, `"k"`)
		gone := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			srv.ServeHTTP(w, r)
		})
		h.entered = make(chan struct{}, 1)
		h.gate = make(chan struct{})
		done := make(chan struct{})
		go func() { gone.ServeHTTP(httptest.NewRecorder(), r); close(done) }()
		<-h.entered
		cancel()
		close(h.gate)
		<-done
		h.entered, h.gate = nil, nil
		if w := post(srv, "alice", `"k"`, body1); w.Header().Get(idempotency.HeaderReplayed) != "true" || h.Calls() != 1 {
			t.Fatalf("retry after hang-up: status %d replayed %q calls %d", w.Code, w.Header().Get(idempotency.HeaderReplayed), h.Calls())
		}
	})
}

func TestNewValidates(t *testing.T) {
	s, _ := memstore.New(memstore.Config{})
	cases := map[string]idempotency.Config{
		"no store":             {Principal: principal},
		"no principal":         {Store: s},
		"principal and anon":   {Store: s, Principal: principal, AllowAnonymous: true},
		"short lease":          {Store: s, Principal: principal, Lease: time.Millisecond},
		"heartbeat >= lease":   {Store: s, Principal: principal, Lease: time.Second, Heartbeat: time.Second},
		"retention < lease":    {Store: s, Principal: principal, Lease: time.Minute, Retention: time.Second},
		"negative body cap":    {Store: s, Principal: principal, MaxBodyBytes: -1},
		"huge response cap":    {Store: s, Principal: principal, MaxResponseBytes: idempotency.MaxBodyLen + 1},
		"empty methods":        {Store: s, Principal: principal, Methods: []string{}},
		"lower-case method":    {Store: s, Principal: principal, Methods: []string{"post"}},
		"bad replay header":    {Store: s, Principal: principal, ReplayHeaders: []string{"Bad Header"}},
		"bad fp header":        {Store: s, Principal: principal, FingerprintHeaders: []string{""}},
		"negative retry-after": {Store: s, Principal: principal, UnavailableRetryAfter: -time.Second},
	}
	for name, cfg := range cases {
		if _, err := idempotency.New(cfg); !errors.Is(err, idempotency.ErrInvalidConfig) {
			t.Errorf("%s: New returned %v, want ErrInvalidConfig", name, err)
		}
	}
	cfg := idempotency.Config{Store: s, AllowAnonymous: true, Methods: []string{"PUT"}}
	if _, err := idempotency.New(cfg); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	if cfg.MaxBodyBytes != 0 || cfg.Lease != 0 {
		t.Fatal("New wrote defaults into the caller's Config")
	}
}

func TestLeaseInHandlerContext(t *testing.T) {
	s, _ := memstore.New(memstore.Config{})
	clk := newClock()
	var token uint64
	var extendErr error
	srv := route(newMiddleware(t, s, clk, nil), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l, ok := idempotency.FromContext(r.Context())
		if !ok {
			t.Error("no lease in the handler's context")
			return
		}
		token = l.Token()
		extendErr = l.Extend(r.Context(), 5*time.Minute)
		w.WriteHeader(http.StatusAccepted)
	}))
	if w := post(srv, "alice", `"k"`, body1); w.Code != http.StatusAccepted || token != 1 || extendErr != nil {
		t.Fatalf("status %d token %d extend %v", w.Code, token, extendErr)
	}
}

// A queue-fed endpoint that runs Do itself answers like the middleware.
func TestWriteErrorAndWriteResult(t *testing.T) {
	s, _ := memstore.New(memstore.Config{})
	m := newMiddleware(t, s, newClock(), nil)
	r := httptest.NewRequest(http.MethodPost, "/jobs", nil)
	w := httptest.NewRecorder()
	m.WriteError(w, r, &idempotency.InFlightError{RetryAfter: 2500 * time.Millisecond})
	if w.Code != http.StatusConflict || w.Header().Get("Retry-After") != "3" || problemType(t, w) != "idempotency-in-flight" {
		t.Fatalf("in flight: %d Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	w = httptest.NewRecorder()
	m.WriteError(w, r, fmt.Errorf("%w: dial tcp: refused", idempotency.ErrUnavailable))
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "1" || strings.Contains(w.Body.String(), "dial") {
		t.Fatalf("unavailable: %d %s", w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	m.WriteError(w, r, errors.New("something else"))
	if w.Code != http.StatusInternalServerError || strings.Contains(w.Body.String(), "something") {
		t.Fatalf("other: %d %s", w.Code, w.Body)
	}

	stored := http.Header{"Content-Type": {"application/json"}}
	w = httptest.NewRecorder()
	idempotency.WriteResult(w, r, idempotency.Result{Status: 201, Header: stored, Body: []byte(`{}`)}, true)
	w.Header()["Content-Type"][0] = "mutated"
	if w.Code != 201 || w.Body.String() != "{}" || w.Header().Get(idempotency.HeaderReplayed) != "true" || w.Header().Get("Content-Length") != "2" {
		t.Fatalf("WriteResult: %d %q %v", w.Code, w.Body, w.Header())
	}
	if stored.Get("Content-Type") != "application/json" {
		t.Fatal("WriteResult shares header slices with the stored result")
	}
}

// When the result cannot be stored the client still gets the handler's
// response and the hook hears about it.
func TestCompletionFailureStillResponds(t *testing.T) {
	mem, _ := memstore.New(memstore.Config{})
	s := &flakyStore{Store: mem, fail: 3}
	var seen error
	h := &transfers{}
	srv := route(newMiddleware(t, s, newClock(), func(c *idempotency.Config) {
		c.OnStoreError = func(_ *http.Request, err error) { seen = err }
	}), h)
	w := post(srv, "alice", `"k"`, body1)
	if w.Code != http.StatusCreated || !strings.Contains(w.Body.String(), `"execution":1`) {
		t.Fatalf("status %d body %s; want the handler's response", w.Code, w.Body)
	}
	if !errors.Is(seen, idempotency.ErrUnavailable) {
		t.Fatalf("OnStoreError got %v; want ErrUnavailable", seen)
	}
	// The record is still in flight (the lease has not ended): a retry is
	// told to wait rather than running the transfer again.
	if w := post(srv, "alice", `"k"`, body1); w.Code != http.StatusConflict || h.Calls() != 1 {
		t.Fatalf("retry: %d calls %d; want 409 and no second run", w.Code, h.Calls())
	}
}

// orderLog records the order of store completions and header writes.
type orderLog struct {
	mu     sync.Mutex
	events []string
}

func (o *orderLog) add(e string) {
	o.mu.Lock()
	o.events = append(o.events, e)
	o.mu.Unlock()
}

type orderStore struct {
	idempotency.Store
	log *orderLog
}

func (s orderStore) Complete(ctx context.Context, key string, rec idempotency.Record, now time.Time) error {
	s.log.add("complete")
	return s.Store.Complete(ctx, key, rec, now)
}

func (s orderStore) Release(ctx context.Context, key string, rec idempotency.Record) error {
	s.log.add("release")
	return s.Store.Release(ctx, key, rec)
}

type orderWriter struct {
	*httptest.ResponseRecorder
	log *orderLog
}

func (w orderWriter) WriteHeader(code int) {
	w.log.add("header")
	w.ResponseRecorder.WriteHeader(code)
}

// The record is finished before the first byte of the response leaves, so
// a client that sees the response and retries always meets the record.
func TestRecordFinishedBeforeResponse(t *testing.T) {
	for _, status := range []int{http.StatusCreated, http.StatusBadRequest, http.StatusBadGateway} {
		mem, _ := memstore.New(memstore.Config{})
		log := &orderLog{}
		srv := route(newMiddleware(t, orderStore{mem, log}, newClock(), nil), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(status)
			w.(http.Flusher).Flush() // deferred: must not send early
			io.WriteString(w, "body")
		}))
		r := asUser(httptest.NewRequest(http.MethodPost, "/transfers", strings.NewReader(body1)), "alice")
		r.Header.Set(idempotency.HeaderKey, `"k"`)
		w := orderWriter{httptest.NewRecorder(), log}
		srv.ServeHTTP(w, r)
		want := []string{"complete", "header"}
		if status >= 500 {
			want = []string{"release", "header"}
		}
		if diff := cmp.Diff(want, log.events); diff != "" {
			t.Fatalf("status %d: order (-want +got):\n%s", status, diff)
		}
		if w.Body.String() != "body" || w.Code != status {
			t.Fatalf("status %d: got %d %q", status, w.Code, w.Body)
		}
	}
}

// On a real server a guarded handler can still set deadlines, cannot
// hijack, and its Flush does not send the response early.
func TestResponseControllerOnGuardedRoute(t *testing.T) {
	s, _ := memstore.New(memstore.Config{})
	m := newMiddleware(t, s, newClock(), func(c *idempotency.Config) { c.AllowAnonymous, c.Principal = true, nil })
	var deadlineErr, hijackErr, flushErr error
	srv := httptest.NewServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		deadlineErr = rc.SetWriteDeadline(time.Now().Add(time.Minute))
		_, _, hijackErr = rc.Hijack()
		flushErr = rc.Flush()
		w.WriteHeader(http.StatusCreated)
	})))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/x", strings.NewReader("{}"))
	req.Header.Set(idempotency.HeaderKey, `"k"`)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || deadlineErr != nil || flushErr != nil || !errors.Is(hijackErr, http.ErrNotSupported) {
		t.Fatalf("status %d deadline %v flush %v hijack %v", resp.StatusCode, deadlineErr, flushErr, hijackErr)
	}
}

// Bare keys are refused by default and accepted with BareKeys; the bare
// and the quoted spelling of a key name the same record.
func TestBareKeys(t *testing.T) {
	s, _ := memstore.New(memstore.Config{})
	h := &transfers{}
	strict := route(newMiddleware(t, s, newClock(), nil), h)
	if w := post(strict, "alice", "8e03978e-40d5-43e8-bc93-6894a57f9324", body1); w.Code != http.StatusBadRequest || problemType(t, w) != "idempotency-key-invalid" {
		t.Fatalf("bare key by default: %d", w.Code)
	}
	lenient := route(newMiddleware(t, s, newClock(), func(c *idempotency.Config) { c.BareKeys = true }), h)
	first := post(lenient, "alice", "8e03978e-40d5-43e8-bc93-6894a57f9324", body1)
	if first.Code != http.StatusCreated || h.Calls() != 1 {
		t.Fatalf("bare key: %d after %d calls", first.Code, h.Calls())
	}
	again := post(lenient, "alice", `"8e03978e-40d5-43e8-bc93-6894a57f9324"`, body1)
	if again.Header().Get(idempotency.HeaderReplayed) != "true" || again.Body.String() != first.Body.String() || h.Calls() != 1 {
		t.Fatalf("the quoted spelling did not replay the bare one: %d %q", again.Code, again.Body)
	}
	for _, bad := range []string{"a b", "a,b", "k;x=1", strings.Repeat("k", 256)} {
		if w := post(lenient, "alice", bad, body1); w.Code != http.StatusBadRequest {
			t.Errorf("bare %q: %d", bad, w.Code)
		}
	}
}

// A custom ErrorHandler still gets Retry-After (in flight, store down) and
// Connection: close (body too large) set by the middleware; the exported
// default writes the documented problem.
func TestCustomErrorHandlerKeepsHeaders(t *testing.T) {
	s, _ := memstore.New(memstore.Config{})
	clk := newClock()
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	h := &transfers{gate: gate, entered: entered}
	var errs []error
	srv := route(newMiddleware(t, s, clk, func(c *idempotency.Config) {
		c.MaxBodyBytes = 16
		c.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
			errs = append(errs, err)
			w.WriteHeader(http.StatusTeapot)
		}
	}), h)
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- post(srv, "alice", `"k"`, `{"a":1}`) }()
	<-entered
	w := post(srv, "alice", `"k"`, `{"a":1}`)
	if w.Code != http.StatusTeapot || w.Header().Get("Retry-After") == "" || !errors.Is(errs[len(errs)-1], idempotency.ErrInFlight) {
		t.Fatalf("in flight: %d Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	close(gate)
	<-done
	w = post(srv, "alice", `"big"`, strings.Repeat("x", 64))
	if w.Code != http.StatusTeapot || w.Header().Get("Connection") != "close" || !errors.Is(errs[len(errs)-1], idempotency.ErrBodyTooLarge) {
		t.Fatalf("too large: %d Connection %q", w.Code, w.Header().Get("Connection"))
	}

	rec := httptest.NewRecorder()
	idempotency.DefaultErrorHandler(rec, httptest.NewRequest(http.MethodPost, "/", nil), fmt.Errorf("%w: redis down", idempotency.ErrUnavailable))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" || strings.Contains(rec.Body.String(), "redis") {
		t.Fatalf("DefaultErrorHandler: %d %q %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
}

// The counters follow what happened to each request; route.Handler in
// front of the mux scopes records by pattern as r.Pattern does inside it.
func TestStatsAndRouteHook(t *testing.T) {
	s, _ := memstore.New(memstore.Config{})
	h := &transfers{}
	m := newMiddleware(t, s, newClock(), nil)
	mux := http.NewServeMux()
	mux.Handle("POST /accounts/{id}/transfers", h)
	wrapped := routepkg.Handler(routepkg.ServeMux(mux))(m.Handler(mux))
	send := func(path, key, body string) int {
		r := asUser(httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)), "alice")
		r.Header.Set(idempotency.HeaderKey, key)
		w := httptest.NewRecorder()
		wrapped.ServeHTTP(w, r)
		return w.Code
	}
	send("/accounts/1/transfers", `"k"`, body1)
	send("/accounts/1/transfers", `"k"`, body1)     // replay
	send("/accounts/2/transfers", `"k"`, body1)     // same pattern: same record, replay
	send("/accounts/2/transfers", `"k"`, `{"x":2}`) // another payload: 422
	got := m.Stats()
	want := idempotency.Stats{Claimed: 1, Replayed: 2, Reused: 1}
	if got != want || h.Calls() != 1 {
		t.Fatalf("stats %+v, want %+v (calls %d)", got, want, h.Calls())
	}
}
