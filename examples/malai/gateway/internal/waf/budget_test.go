package waf

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/malai-sec/malai/internal/fakeclock"
)

func TestBudgetDrainsAndRefuses(t *testing.T) {
	clk := fakeclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	b := newBudget(250*time.Millisecond, 2*time.Second, clk.Now)
	a, other := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("192.0.2.2/32")
	for range 19 {
		b.charge(a, 100*time.Millisecond)
	}
	if ok, _ := b.allow(a); !ok {
		t.Fatal("refused below the burst (1.9 s of 2 s)")
	}
	b.charge(a, 300*time.Millisecond) // 2.2 s: 0.2 s over
	ok, wait := b.allow(a)
	if ok || wait < 800*time.Millisecond || wait > 801*time.Millisecond {
		t.Fatalf("over the burst: allowed %v, wait %v; want refused, 0.8 s (0.2 s at 250 ms/s)", ok, wait)
	}
	if ok, _ := b.allow(other); !ok {
		t.Fatal("another client refused")
	}
	clk.Advance(801 * time.Millisecond)
	if ok, _ := b.allow(a); !ok {
		t.Fatal("still refused once drained below the burst")
	}
	clk.Advance(time.Minute)
	b.charge(other, time.Millisecond) // sweeps the drained entries
	if _, kept := b.used[a]; kept {
		t.Fatal("a drained client's entry is kept")
	}
	if newBudget(-1, time.Second, clk.Now) != nil {
		t.Fatal("a negative rate keeps a budget")
	}
}

// A client that has used its inspection time gets 429 + Retry-After for
// its heavy requests, uninspected; its light requests and every other
// client pass.
func TestInspectionBudget(t *testing.T) {
	w := newSuiteWAF(t, Config{InspectionRate: time.Nanosecond, InspectionBurst: time.Nanosecond})
	h := w.Handler(okHandler())
	send := func(r *http.Request) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec
	}
	if rec := send(heavyPost("192.0.2.1")); rec.Code != http.StatusOK {
		t.Fatalf("first heavy request: %d", rec.Code)
	}
	before := w.Stats().Inspected()
	rec := send(heavyPost("192.0.2.1"))
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("heavy request over the budget: %d Retry-After %q %s", rec.Code, rec.Header().Get("Retry-After"), rec.Header().Get("Content-Type"))
	}
	if w.Stats().Inspected() != before || w.Stats().OverBudget != 1 {
		t.Fatalf("the refused request was inspected, or not counted: %+v", w.Stats())
	}
	if rec := send(lightGet("192.0.2.1", "/")); rec.Code != http.StatusOK {
		t.Fatalf("a light request of the same client: %d", rec.Code)
	}
	if rec := send(heavyPost("192.0.2.2")); rec.Code != http.StatusOK {
		t.Fatalf("another client's heavy request: %d", rec.Code)
	}
	off := newSuiteWAF(t, Config{InspectionRate: -1})
	ho := off.Handler(okHandler())
	for i := range 3 {
		rec := httptest.NewRecorder()
		ho.ServeHTTP(rec, heavyPost("192.0.2.1"))
		if rec.Code != http.StatusOK {
			t.Fatalf("budget off, request %d: %d", i, rec.Code)
		}
	}
}

// A heavy request the rules refuse costs its client's budget four times
// its inspection time; one that passes costs its time.
func TestBlockedRequestsCostTheBudgetMore(t *testing.T) {
	w := newSuiteWAF(t, Config{InspectionRate: time.Nanosecond, InspectionBurst: time.Hour})
	w.since = func(time.Time) time.Duration { return 10 * time.Millisecond }
	h := w.Handler(okHandler())
	used := func(ip string) time.Duration {
		w.budget.mu.Lock()
		defer w.budget.mu.Unlock()
		s := w.budget.used[netip.MustParsePrefix(ip+"/32")]
		if s == nil {
			return 0
		}
		return s.d
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, heavyPost("192.0.2.80"))
	if rec.Code != http.StatusOK {
		t.Fatalf("a benign post: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, withClient(jsonPost("/v1/transfers", `{"memo":"<script>alert(document.cookie)</script>"}`), "192.0.2.81"))
	if rec.Code != http.StatusForbidden {
		t.Fatalf("an attack: %d", rec.Code)
	}
	// Drained by at most a few nanoseconds since.
	if p, b := used("192.0.2.80"), used("192.0.2.81"); p < 9*time.Millisecond || p > 10*time.Millisecond || b < 39*time.Millisecond || b > 40*time.Millisecond {
		t.Fatalf("budget used: passing post %v (want 10ms), blocked post %v (want 40ms)", p, b)
	}
}
