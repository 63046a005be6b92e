package correlation

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// runAlarm plays a script against an alarm and returns its events as
// "fire"/"resolve" words. Script tokens: "500x4" records four 500s,
// "+10s" steps the clock, "eval" calls Evaluate.
func runAlarm(t *testing.T, cfg AlarmConfig, script string) ([]string, *Alarm) {
	t.Helper()
	clk := newFakeClock()
	var events []string
	cfg.Now = clk.Now
	cfg.OnFire = func(ev AlarmEvent) {
		if !ev.Firing || ev.Errors == 0 {
			t.Errorf("fire event %+v", ev)
		}
		events = append(events, "fire")
	}
	cfg.OnResolve = func(ev AlarmEvent) {
		if ev.Firing {
			t.Errorf("resolve event %+v", ev)
		}
		events = append(events, "resolve")
	}
	if cfg.Logger == nil {
		cfg.Logger = jsonLogger(&syncBuffer{})
	}
	a, err := NewAlarm(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range strings.Fields(script) {
		switch {
		case tok == "eval":
			a.Evaluate()
		case strings.HasPrefix(tok, "+"):
			d, err := time.ParseDuration(tok[1:])
			if err != nil {
				t.Fatal(err)
			}
			clk.Advance(d)
		default:
			code, count, _ := strings.Cut(tok, "x")
			status, err1 := strconv.Atoi(code)
			n, err2 := strconv.Atoi(count)
			if err1 != nil || err2 != nil {
				t.Fatalf("bad token %q", tok)
			}
			for range n {
				a.Record(status)
			}
		}
	}
	return events, a
}

func TestAlarmSequences(t *testing.T) {
	cfg := AlarmConfig{Window: time.Minute, Buckets: 6, Threshold: 0.5, ResolveBelow: 0.2, MinRequests: 4}
	tests := []struct {
		name   string
		script string
		want   string
		firing bool
	}{
		{"too few requests never fire", "500x3", "", false},
		{"crossing fires once", "500x4 500x20", "fire", true},
		{"fires at the threshold exactly", "200x2 500x2", "fire", true},
		{"just under the threshold stays quiet", "200x11 500x10", "", false},
		{"4xx are not errors", "404x10 429x10", "", false},
		{"hysteresis band keeps firing", "500x4 200x9", "fire", true},
		{"falls below resolve level: resolves once", "500x4 200x16 200x100", "fire resolve", false},
		{"flapping around the threshold fires once", "500x4 200x1 500x1 200x1 500x1 200x1 500x1", "fire", true},
		{"window slides past old errors", "500x4 +61s 200x4", "fire resolve", false},
		{"old errors inside the window still count", "500x4 +49s 200x4", "fire", true},
		{"fires again after resolving", "500x4 +61s 200x4 +61s 500x4", "fire resolve fire", true},
		{"empty window resolves on Evaluate", "500x4 +70s eval", "fire resolve", false},
		{"Evaluate inside the window keeps firing", "500x4 +30s eval", "fire", true},
		{"partial window below min requests: no resolve", "500x10 +61s 200x3", "fire", true},
		{"errors spread over buckets add up", "500x1 +10s 500x1 +10s 500x1 +10s 500x1", "fire", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			events, a := runAlarm(t, cfg, tc.script)
			if got := strings.Join(events, " "); got != tc.want {
				t.Fatalf("events %q, want %q", got, tc.want)
			}
			if a.Firing() != tc.firing {
				t.Fatalf("Firing() = %v, want %v", a.Firing(), tc.firing)
			}
		})
	}
}

// TestAlarmMinHold: with a hold, a fired alarm stays firing through a
// dip below the resolve level and a resolved one stays quiet through a
// second burst inside the hold; past it, each changes once.
func TestAlarmMinHold(t *testing.T) {
	cfg := AlarmConfig{Window: time.Minute, Buckets: 6, Threshold: 0.5, ResolveBelow: 0.2, MinRequests: 4, MinHold: 30 * time.Second}
	tests := []struct {
		name   string
		script string
		want   string
		firing bool
	}{
		{"a dip inside the hold does not resolve", "500x4 200x100", "fire", true},
		{"an empty window inside the hold does not resolve", "500x4 +20s eval", "fire", true},
		{"past the hold the dip resolves once", "500x4 200x100 +31s 200x1 200x1", "fire resolve", false},
		{"a burst right after resolving waits for the hold", "500x4 +70s eval 500x10", "fire resolve", false},
		{"a burst past the hold fires again", "500x4 +70s eval +31s 500x10", "fire resolve fire", true},
		{"burst, quiet, burst: one page", "500x10 200x100 500x100 200x400 500x200", "fire", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			events, a := runAlarm(t, cfg, tc.script)
			if got := strings.Join(events, " "); got != tc.want {
				t.Fatalf("events %q, want %q", got, tc.want)
			}
			if a.Firing() != tc.firing {
				t.Fatalf("Firing() = %v, want %v", a.Firing(), tc.firing)
			}
		})
	}
}

func TestAlarmDefaults(t *testing.T) {
	// Defaults: 1 minute, 5 % threshold, 2.5 % resolve, 20 requests.
	events, _ := runAlarm(t, AlarmConfig{}, "200x18 500x1")
	if len(events) != 0 {
		t.Fatalf("fired with 19 requests: %v", events)
	}
	events, _ = runAlarm(t, AlarmConfig{}, "200x19 500x1 200x20 200x1")
	if strings.Join(events, " ") != "fire resolve" {
		t.Fatalf("events %v, want fire at 1/20 and resolve at 1/41 (1/40 is not below 2.5%%)", events)
	}
}

func TestAlarmLogs(t *testing.T) {
	logs := &syncBuffer{}
	_, _ = runAlarm(t, AlarmConfig{Name: "ledger_5xx", MinRequests: 2, Logger: jsonLogger(logs)}, "500x2 +2m eval")
	recs := logs.records(t)
	if len(recs) != 2 {
		t.Fatalf("%d log records, want 2: %s", len(recs), logs.String())
	}
	if recs[0]["level"] != "ERROR" || recs[0][LogKeyAlarm] != "ledger_5xx" || recs[0]["errors"] != float64(2) {
		t.Errorf("fire record %v", recs[0])
	}
	if recs[1]["level"] != "INFO" || recs[1][LogKeyAlarm] != "ledger_5xx" {
		t.Errorf("resolve record %v", recs[1])
	}
}

func TestAlarmClockStepBack(t *testing.T) {
	clk := newFakeClock()
	a, err := NewAlarm(AlarmConfig{Now: clk.Now, MinRequests: 4, Threshold: 0.5, Logger: jsonLogger(&syncBuffer{})})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		a.Record(500)
	}
	clk.Advance(-2 * time.Minute) // a stepped-back clock must not erase the errors
	a.Record(500)
	if !a.Firing() {
		t.Fatal("errors recorded before a clock step back were lost")
	}
}

func TestAlarmConcurrent(t *testing.T) {
	var mu sync.Mutex
	fires := 0
	a, err := NewAlarm(AlarmConfig{MinRequests: 10, Logger: jsonLogger(&syncBuffer{}),
		OnFire: func(AlarmEvent) { mu.Lock(); fires++; mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				a.Record(503)
			}
		})
	}
	wg.Wait()
	if fires != 1 {
		t.Fatalf("fired %d times under concurrency, want 1", fires)
	}
}

func TestAlarmConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  AlarmConfig
	}{
		{"negative window", AlarmConfig{Window: -time.Second}},
		{"too many buckets", AlarmConfig{Buckets: 4000}},
		{"negative buckets", AlarmConfig{Buckets: -1}},
		{"window shorter than buckets", AlarmConfig{Window: 5, Buckets: 10}},
		{"threshold above 1", AlarmConfig{Threshold: 1.5}},
		{"negative threshold", AlarmConfig{Threshold: -0.1}},
		{"resolve above threshold", AlarmConfig{Threshold: 0.1, ResolveBelow: 0.2}},
		{"resolve equal threshold", AlarmConfig{Threshold: 0.1, ResolveBelow: 0.1}},
		{"negative min requests", AlarmConfig{MinRequests: -5}},
		{"negative min hold", AlarmConfig{MinHold: -time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewAlarm(tc.cfg); !errors.Is(err, ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
		})
	}
}

func TestMiddlewareFeedsAlarm(t *testing.T) {
	clk := newFakeClock()
	fired := 0
	a, err := NewAlarm(AlarmConfig{Now: clk.Now, MinRequests: 3, Logger: jsonLogger(&syncBuffer{}), OnFire: func(AlarmEvent) { fired++ }})
	if err != nil {
		t.Fatal(err)
	}
	m := mustNew(t, Config{Alarm: a})
	h := m.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("x") }))
	for range 3 {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	}
	if fired != 1 {
		t.Fatalf("alarm fired %d times after 3 panics, want 1", fired)
	}
}

func TestAlarmRunResolvesIdleAlarm(t *testing.T) {
	clk := newFakeClock()
	resolved := make(chan AlarmEvent, 1)
	a, err := NewAlarm(AlarmConfig{Now: clk.Now, MinRequests: 2, Logger: jsonLogger(&syncBuffer{}),
		OnResolve: func(ev AlarmEvent) { resolved <- ev }})
	if err != nil {
		t.Fatal(err)
	}
	a.Record(500)
	a.Record(500)
	if !a.Firing() {
		t.Fatal("not firing")
	}
	clk.Advance(2 * time.Minute) // no traffic for two windows
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, time.Millisecond) }()
	ev := <-resolved
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
	if ev.Firing || ev.Requests != 0 || a.Firing() {
		t.Fatalf("resolve event %+v, firing %v", ev, a.Firing())
	}
}
