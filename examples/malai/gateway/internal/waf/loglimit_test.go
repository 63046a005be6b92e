package waf

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestRefusalLogsAreBounded floods the WAF with requests over a client's
// inspection budget: every one is refused and counted, at most
// refusalLogBurst a second are logged, and the next second's first line
// says how many were left out.
func TestRefusalLogsAreBounded(t *testing.T) {
	w := newSuiteWAF(t, Config{InspectionRate: time.Nanosecond, InspectionBurst: time.Nanosecond})
	var buf syncBuffer
	now := time.Unix(1_700_000_000, 0)
	w.budgetLog = newLogLimiter(slog.New(slog.NewJSONHandler(&buf, nil)), refusalLogBurst, func() time.Time { return now })
	h := w.Handler(okHandler())
	send := func() int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, heavyPost("192.0.2.9"))
		return rec.Code
	}
	if code := send(); code != http.StatusOK {
		t.Fatalf("first heavy request: %d", code)
	}
	const flood = 100
	for i := range flood {
		if code := send(); code != http.StatusTooManyRequests {
			t.Fatalf("request %d over the budget: %d", i, code)
		}
	}
	lines := func() []map[string]any {
		var out []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("log line %q: %v", l, err)
			}
			out = append(out, m)
		}
		return out
	}
	if got := lines(); len(got) != refusalLogBurst {
		t.Fatalf("%d refusals logged in one second, want %d", len(got), refusalLogBurst)
	}
	now = now.Add(time.Second)
	if code := send(); code != http.StatusTooManyRequests {
		t.Fatalf("the next second's request: %d", code)
	}
	got := lines()
	last := got[len(got)-1]
	if len(got) != refusalLogBurst+1 || last["suppressed"] != float64(flood-refusalLogBurst) {
		t.Fatalf("the next second's line: %v (of %d), want suppressed %d", last, len(got), flood-refusalLogBurst)
	}
	if s := w.Stats(); s.OverBudget != flood+1 {
		t.Fatalf("counted %d refusals, want %d", s.OverBudget, flood+1)
	}
}
