package jwtverify

import (
	"context"
	"github.com/malai-sec/malai/internal/fakeclock"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/malai-sec/malai/jwtverify/jwttest"
)

const (
	testIss = "https://id.malai.test"
	testAud = "ledger"
	// On a loaded shared machine with -race a loopback fetch can take
	// seconds; no test relies on a fetch timing out, so be generous.
	testFetchTimeout = time.Minute
	testWait         = time.Minute
)

// fakeClock is an injected clock tests move by hand.
type fakeClock = fakeclock.Clock

func newClock() *fakeClock { return fakeclock.New(time.Unix(1_800_000_000, 0)) }

// recorder collects Observe events.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) observe(_ context.Context, e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) all() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

func (r *recorder) last() Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) == 0 {
		return Event{}
	}
	return r.events[len(r.events)-1]
}

func newStatic(t *testing.T, clock *fakeClock, mod func(*Config), keys ...*jwttest.Key) *Verifier {
	t.Helper()
	cfg := Config{
		Issuers: []Issuer{{Issuer: testIss, Keys: jwttest.Set(t, keys...), Audiences: []string{testAud}}},
		Now:     clock.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

// routes returns a mux like a service: /user for user tokens, /internal for
// service tokens, /any for either, all behind v.Handler.
func routes(v *Verifier) http.Handler {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := FromContext(r.Context())
		_, _ = w.Write([]byte(c.Subject()))
	})
	mux := http.NewServeMux()
	mux.Handle("/user", v.RequireUser()(ok))
	mux.Handle("/internal", v.RequireService("ledger:write")(ok))
	mux.Handle("/any", ok)
	return v.Handler(mux)
}

func get(h http.Handler, path string, auth ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	for _, a := range auth {
		r.Header.Add("Authorization", a)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// recv returns the next value from ch, failing the test after testWait
// instead of hanging it.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testWait):
		t.Fatal("timed out waiting for an event")
		var zero T
		return zero
	}
}

// waitReady waits for v's first key sets, failing after testWait.
func waitReady(t *testing.T, v *Verifier) {
	t.Helper()
	select {
	case <-v.Ready():
	case <-time.After(testWait):
		t.Fatal("verifier never became ready")
	}
}
