package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malai-sec/malai/correlation"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
)

// TestAllModeEndToEnd runs the end-to-end tests over real HTTPS on one
// all-in-one system with its demo data.
//
// testAsyncTransferIsTraced follows one asynchronous transfer through the
// running system: its correlation id and trace id are on the
// gateway's, the ledger's and the worker's log lines (the queue carries
// both to the worker, the worker back to the ledger) and on the spans
// each exported; and every component's /metrics, on its internal
// listener, shows its RED series.
func TestAllModeEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system")
	}
	ctx := context.Background()
	logs := &lineBuffer{}
	notices := make(chan platform.AlarmNotice, 16)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n platform.AlarmNotice
		if json.NewDecoder(r.Body).Decode(&n) == nil && n.Component == platform.Gateway {
			select {
			case notices <- n:
			default:
			}
		}
	}))
	t.Cleanup(hook.Close)
	sys, err := Start(ctx, Options{Addr: "127.0.0.1:0", DataDir: t.TempDir(), PerIP: 10_000, LogMirror: logs,
		// A short window and hold, so the alarm clears within the test.
		Alarm:     correlation.AlarmConfig{Window: 3 * time.Second, Buckets: 3, MinRequests: 10, MinHold: 2 * time.Second},
		AlarmHook: platform.AlarmHook{Webhook: hook.URL}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Close() })
	if err := startEmbedded(ctx, sys, true); err != nil {
		t.Fatal(err)
	}
	t.Run("async transfer traced", func(t *testing.T) { testAsyncTransferIsTraced(t, sys, logs) })
	t.Run("flows", func(t *testing.T) { testFlowsInAllMode(t, sys) })
	// Last: it stops the ledger.
	t.Run("alarm fires once and clears once", func(t *testing.T) { testAlarmBurst(t, sys, logs, notices) })
}

// testAlarmBurst injects an error burst (the ledger stopped: the gateway
// answers 5xx) mixed with healthy requests, and expects the gateway's
// alarm to fire once and, once the burst is over, to clear once: one log
// line, one webhook notice and the gauge for each change.
func testAlarmBurst(t *testing.T, sys *System, logs *lineBuffer, notices <-chan platform.AlarmNotice) {
	ctx := context.Background()
	var creds demoFile
	b, _ := os.ReadFile(filepath.Join(sys.DataDir, demoCredentialsFile))
	if err := json.Unmarshal(b, &creds); err != nil {
		t.Fatal(err)
	}
	c := demoClient{sys: sys, http: sys.HTTPClient()}
	tok, err := c.signIn(ctx, creds.Users[0])
	if err != nil {
		t.Fatal(err)
	}
	if sys.Telemetry[platform.Gateway].Alarm.Firing() {
		t.Fatal("the gateway's alarm fires before the burst")
	}
	if err := sys.Stop(platform.Ledger); err != nil {
		t.Fatal(err)
	}
	codes := map[int]int{}
	for i := range 60 {
		path := "/v1/accounts"
		if i%3 == 2 {
			path = "/healthz"
		}
		st, _, err := c.do(ctx, "GET", path, tok, nil)
		if err != nil {
			t.Fatal(err)
		}
		codes[st]++
	}
	if !sys.Telemetry[platform.Gateway].Alarm.Firing() {
		t.Fatalf("the burst %v did not fire the gateway's alarm", codes)
	}
	deadline := time.Now().Add(20 * time.Second)
	for sys.Telemetry[platform.Gateway].Alarm.Firing() && time.Now().Before(deadline) {
		// Healthy traffic meanwhile: it must not make the alarm flap.
		_, _, _ = c.do(ctx, "GET", "/healthz", "", nil)
		time.Sleep(100 * time.Millisecond)
	}
	if sys.Telemetry[platform.Gateway].Alarm.Firing() {
		t.Fatal("the gateway's alarm did not clear after the burst")
	}
	var fired, resolved int
	for _, rec := range logs.records() {
		if rec["component"] != platform.Gateway {
			continue
		}
		switch {
		case strings.HasPrefix(fmt.Sprint(rec["msg"]), "alarm firing"):
			fired++
		case strings.HasPrefix(fmt.Sprint(rec["msg"]), "alarm resolved"):
			resolved++
		}
	}
	if fired != 1 || resolved != 1 {
		t.Errorf("gateway log: %d firing and %d resolved lines, want 1 and 1", fired, resolved)
	}
	var got []bool
	timeout := time.After(10 * time.Second)
	for len(got) < 2 {
		select {
		case n := <-notices:
			if n.Component == platform.Gateway {
				got = append(got, n.Firing)
			}
		case <-timeout:
			t.Fatalf("webhook notices from the gateway: %v, want fired then resolved", got)
		}
	}
	if !got[0] || got[1] {
		t.Fatalf("webhook notices from the gateway: %v, want fired then resolved", got)
	}
}

func testAsyncTransferIsTraced(t *testing.T, sys *System, logs *lineBuffer) {
	ctx := context.Background()
	var creds demoFile
	b, _ := os.ReadFile(filepath.Join(sys.DataDir, demoCredentialsFile))
	if err := json.Unmarshal(b, &creds); err != nil {
		t.Fatal(err)
	}
	alice, bob := creds.Users[0], creds.Users[1]
	c := demoClient{sys: sys, http: sys.HTTPClient()}
	tok, err := c.signIn(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}

	body, _ := json.Marshal(map[string]any{"from": alice.AccountID, "to": bob.AccountID, "amount": 250})
	req, _ := http.NewRequest("POST", sys.GatewayURL+"/v1/transfers/async", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Idempotency-Key", "trace-e2e-1")
	res, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(res.Body)
	res.Body.Close()
	cid := res.Header.Get(correlation.HeaderName)
	if res.StatusCode != http.StatusAccepted || cid == "" {
		t.Fatalf("async transfer: %d %s (correlation id %q)", res.StatusCode, rb, cid)
	}
	var acc struct{ Job string }
	_ = json.Unmarshal(rb, &acc)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, jb, err := c.do(ctx, "GET", "/v1/jobs/"+acc.Job, tok, nil)
		if err == nil && st == http.StatusOK && bytes.Contains(jb, []byte(`"status":"succeeded"`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job did not succeed: %d %s %v", st, jb, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The gateway's access line for the request names its trace.
	var traceID string
	byComponent := map[string]int{}
	for _, rec := range logs.records() {
		if rec["request_id"] != cid {
			continue
		}
		if rec["component"] == platform.Gateway && traceID == "" {
			traceID, _ = rec["trace_id"].(string)
		}
	}
	if traceID == "" {
		t.Fatalf("no gateway log line with correlation id %s and a trace id", cid)
	}
	for _, rec := range logs.records() {
		if rec["request_id"] == cid && rec["trace_id"] == traceID {
			byComponent[rec["component"].(string)]++
		}
	}
	workerDone := false
	for _, rec := range logs.records() {
		if rec["component"] == platform.Worker && rec["msg"] == "worker: job done" && rec["request_id"] == cid && rec["trace_id"] == traceID {
			workerDone = true
		}
	}
	if byComponent[platform.Gateway] == 0 || byComponent[platform.Ledger] < 2 || !workerDone {
		t.Fatalf("log lines with correlation id %s and trace %s by component: %v (worker's job line: %v)", cid, traceID, byComponent, workerDone)
	}
	// Every hop's spans are in its exporter, under the one trace.
	for _, name := range []string{platform.Gateway, platform.Ledger, platform.Worker} {
		n := 0
		for _, s := range sys.Telemetry[name].Spans.GetSpans() {
			if s.SpanContext.TraceID().String() == traceID {
				n++
			}
		}
		if n == 0 {
			t.Errorf("%s exported no span of trace %s", name, traceID)
		}
	}

	// RED: rate and errors (the request counter by status) and duration,
	// on every component's internal listener; the worker's jobs too.
	mon, err := sys.ComponentClient(platform.Monitor)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		platform.Gateway:  {"http_server_request_duration_seconds_count{", `http_response_status_code="202"`, "malai_alarm_firing{"},
		platform.Identity: {"http_server_request_duration_seconds_count{", "malai_alarm_firing{"},
		platform.Ledger:   {"http_server_request_duration_seconds_count{", `http_route="/internal/v1/transfers"`, "malai_alarm_firing{"},
		platform.Worker:   {`malai_worker_jobs_total{`, `outcome="done"`, "malai_worker_job_duration_seconds_count{", "malai_alarm_firing{"},
	}
	for name, series := range want {
		res, err := mon.Get(sys.URLs[name] + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		mb, _ := io.ReadAll(res.Body)
		res.Body.Close()
		for _, s := range series {
			if !bytes.Contains(mb, []byte(s)) {
				t.Errorf("%s /metrics lacks %s:\n%s", name, s, grepLines(mb, "http_server_request_duration_seconds_count"))
			}
		}
	}
}

// lineBuffer collects JSON log lines from every component.
type lineBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lineBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lineBuffer) records() []map[string]any {
	l.mu.Lock()
	data := append([]byte(nil), l.b.Bytes()...)
	l.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

// grepLines returns the lines of b containing s.
func grepLines(b []byte, s string) string {
	var out []string
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
