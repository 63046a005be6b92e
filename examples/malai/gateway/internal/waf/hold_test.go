package waf

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// A refusal a client earns by its own excess is answered RefusalDelay
// after the request arrived, holding no slot and no place in the queue:
// a client that retries at once gets one answer per connection per delay.
// Past MaxHeldPerClient held refusals the next is answered at once, and a
// client that leaves while held is written nothing.
func TestRefusalsAreHeld(t *testing.T) {
	const delay = 300 * time.Millisecond
	w := newSuiteWAF(t, Config{MaxConcurrent: 2, PerClient: 1, RefusalDelay: delay, MaxHeldPerClient: 2})
	w.cfg.MaxWait = 10 * time.Millisecond // past the client's share, a heavy request waits this long, then 503
	hd := newHolder(w)
	h := w.Handler(okHandler())
	key := netip.MustParsePrefix("198.51.100.60/32")
	var wg sync.WaitGroup
	wg.Go(func() { // holds the client's one heavy slot
		r := heavyPost("198.51.100.60")
		r.Header.Set("X-Hold", "slot")
		h.ServeHTTP(httptest.NewRecorder(), r)
	})
	<-hd.entered

	// Two refusals held at once (the per-client bound)...
	type answer struct {
		code  int
		after time.Duration
	}
	answers := make(chan answer, 2)
	for range 2 {
		wg.Go(func() {
			start := time.Now()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, heavyPost("198.51.100.60"))
			answers <- answer{rec.Code, time.Since(start)}
		})
	}
	waitHeld(t, w, key, 2)
	// ...so the third is answered at once, while the two are still held.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, heavyPost("198.51.100.60"))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("a refusal past the held bound: %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	if n, _ := w.held.count(key); n != 2 {
		t.Fatalf("%d refusals held while the third was answered, want 2", n)
	}
	// Another client is not held up by them: its light request passes.
	if rec := httptest.NewRecorder(); true {
		h.ServeHTTP(rec, lightGet("198.51.100.61", "/"))
		if rec.Code != http.StatusOK {
			t.Fatalf("another client's request while the refusals are held: %d", rec.Code)
		}
	}
	for range 2 {
		a := <-answers
		if a.code != http.StatusServiceUnavailable || a.after < delay {
			t.Fatalf("a held refusal: %d after %v, want 503 after at least %v", a.code, a.after, delay)
		}
	}

	// A client gone while its refusal is held: nothing is written, and
	// the hold is released.
	r := heavyPost("198.51.100.60")
	ctx, cancel := context.WithCancel(r.Context())
	gone := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(gone, r.WithContext(ctx))
	}()
	waitHeld(t, w, key, 1)
	cancel()
	<-done
	if gone.Code != StatusClientClosed || gone.Body.Len() != 0 {
		t.Fatalf("a client gone while held: %d %q, want %d and no body", gone.Code, gone.Body.String(), StatusClientClosed)
	}
	if n, total := w.held.count(key); n != 0 || total != 0 {
		t.Fatalf("held after the client left: %d of %d", n, total)
	}
	close(hd.hold)
	wg.Wait()

	// The bound in all: with one refusal held, another client's is
	// answered at once.
	all := newSuiteWAF(t, Config{InspectionRate: time.Nanosecond, InspectionBurst: time.Nanosecond, RefusalDelay: delay, MaxHeld: 1})
	ha := all.Handler(okHandler())
	ha.ServeHTTP(httptest.NewRecorder(), heavyPost("192.0.2.90"))
	ha.ServeHTTP(httptest.NewRecorder(), heavyPost("192.0.2.91"))
	heldDone := make(chan int, 1)
	go func() {
		rec := httptest.NewRecorder()
		ha.ServeHTTP(rec, heavyPost("192.0.2.90"))
		heldDone <- rec.Code
	}()
	waitHeld(t, all, netip.MustParsePrefix("192.0.2.90/32"), 1)
	rec = httptest.NewRecorder()
	ha.ServeHTTP(rec, heavyPost("192.0.2.91"))
	if n, total := all.held.count(netip.MustParsePrefix("192.0.2.90/32")); rec.Code != http.StatusTooManyRequests || n != 1 || total != 1 {
		t.Fatalf("past MaxHeld: %d with %d of %d held; want 429 at once while the first is still held", rec.Code, n, total)
	}
	if c := <-heldDone; c != http.StatusTooManyRequests {
		t.Fatalf("the held refusal: %d", c)
	}

	// Over the inspection-time budget: the 429 is held the same way.
	b := newSuiteWAF(t, Config{InspectionRate: time.Nanosecond, InspectionBurst: time.Nanosecond, RefusalDelay: delay})
	hb := b.Handler(okHandler())
	hb.ServeHTTP(httptest.NewRecorder(), heavyPost("192.0.2.70"))
	start := time.Now()
	rec = httptest.NewRecorder()
	hb.ServeHTTP(rec, heavyPost("192.0.2.70"))
	if rec.Code != http.StatusTooManyRequests || time.Since(start) < delay {
		t.Fatalf("over the budget: %d after %v, want 429 after at least %v", rec.Code, time.Since(start), delay)
	}
}

// waitHeld waits until n refusals of key are held (bounded: the requests
// were sent and have nothing else to do).
func waitHeld(t *testing.T, w *WAF, key netip.Prefix, n int) {
	t.Helper()
	for range 2000 {
		if c, _ := w.held.count(key); c >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("fewer than %d refusals held", n)
}
