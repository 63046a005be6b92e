package platform

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/malai-sec/malai/correlation"
)

// TestAlarmBurstFiresOnceAndClearsOnce injects an error burst into a
// component's telemetry, then traffic that swings around the alarm's
// levels: the alarm fires once and, after the traffic stops, clears
// once, and each change is surfaced as a log line, the
// malai_alarm_firing gauge, a webhook POST and a command run.
func TestAlarmBurstFiresOnceAndClearsOnce(t *testing.T) {
	var mu sync.Mutex
	var notices []AlarmNotice
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n AlarmNotice
		if err := json.NewDecoder(r.Body).Decode(&n); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		mu.Lock()
		notices = append(notices, n)
		mu.Unlock()
	}))
	defer hook.Close()
	ran := filepath.Join(t.TempDir(), "alarm-command.log")
	logs := &lockedBuffer{}
	tele, err := NewTelemetry(TelemetryConfig{
		Component: "ledger", Mirror: logs,
		Alarm:     correlation.AlarmConfig{Window: 4 * time.Second, Buckets: 4, MinRequests: 10, Threshold: 0.2, MinHold: 3 * time.Second},
		AlarmHook: AlarmHook{Webhook: hook.URL + "/page?token=s3cret", Command: []string{"/bin/sh", "-c", `cat >> "$0"; echo >> "$0"`, ran}},
	})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			tele.Close()
		}
	}()
	var failing atomic.Bool
	h := tele.Middleware.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	serve := func(n int, fail bool) {
		failing.Store(fail)
		for range n {
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/accounts", nil))
		}
	}
	gauge := func() string {
		rec := httptest.NewRecorder()
		tele.Metrics.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		for line := range strings.SplitSeq(rec.Body.String(), "\n") {
			if strings.HasPrefix(line, "malai_alarm_firing{") && strings.Contains(line, `alarm="ledger_http_error_rate"`) {
				return line[strings.LastIndexByte(line, ' ')+1:]
			}
		}
		return "missing"
	}

	// The burst, then swings: successes that pull the ratio under the
	// resolve level (30/430 < 10%) and errors that push it over the
	// threshold again (230/630 > 20%), then under again (230/2630):
	// without the hold, fire resolve fire resolve.
	serve(30, true)
	if !tele.Alarm.Firing() || gauge() != "1" {
		t.Fatalf("the burst did not fire the alarm (gauge %s)", gauge())
	}
	serve(400, false)
	serve(200, true)
	serve(2000, false)
	if !tele.Alarm.Firing() {
		t.Fatal("the alarm resolved inside its hold")
	}
	// Quiet: the window empties and the ticker clears the alarm.
	deadline := time.Now().Add(15 * time.Second)
	for tele.Alarm.Firing() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if tele.Alarm.Firing() || gauge() != "0" {
		t.Fatalf("the alarm did not clear once traffic stopped (gauge %s)", gauge())
	}
	// Close delivers what the hook still holds.
	closed = true
	tele.Close()

	var fired, resolved int
	for line := range strings.SplitSeq(logs.String(), "\n") {
		switch {
		case strings.Contains(line, `"msg":"alarm firing`):
			fired++
		case strings.Contains(line, `"msg":"alarm resolved`):
			resolved++
		}
		if strings.Contains(line, "s3cret") {
			t.Errorf("the webhook's token reached the log: %s", line)
		}
	}
	if fired != 1 || resolved != 1 {
		t.Errorf("log: %d firing and %d resolved lines, want 1 and 1", fired, resolved)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(notices) != 2 || !notices[0].Firing || notices[1].Firing || notices[0].Component != "ledger" || notices[0].Errors < 10 {
		t.Errorf("webhook got %+v, want one firing then one resolved notice", notices)
	}
	b, err := os.ReadFile(ran)
	if err != nil {
		t.Fatal(err)
	}
	var runs []AlarmNotice
	for sc := bufio.NewScanner(bytes.NewReader(b)); sc.Scan(); {
		var n AlarmNotice
		if json.Unmarshal(sc.Bytes(), &n) == nil {
			runs = append(runs, n)
		}
	}
	if len(runs) != 2 || !runs[0].Firing || runs[1].Firing {
		t.Errorf("the command ran with %s, want one firing then one resolved notice", b)
	}
}

// TestAlarmHookRefusesBadConfig: a webhook that is not an http(s) URL and
// an empty command are configuration errors, not silent no-ops.
func TestAlarmHookRefusesBadConfig(t *testing.T) {
	for _, h := range []AlarmHook{{Webhook: "file:///etc/passwd"}, {Webhook: "not a url"}, {Command: []string{}}, {Command: []string{""}}} {
		if _, err := NewTelemetry(TelemetryConfig{Component: "ledger", AlarmHook: h}); err == nil {
			t.Errorf("%+v accepted", h)
		}
	}
	if _, err := NewTelemetry(TelemetryConfig{Component: "ledger", OTLPEndpoint: "127.0.0.1:4318"}); err == nil {
		t.Error("an OTLP endpoint without a scheme accepted")
	}
}

// TestSpansGoToOTLPWhenConfigured: with an OTLP endpoint, a request's
// span reaches the collector (OTLP/HTTP protobuf) with the trace id the
// request's log line carries; the bounded ring keeps it too.
func TestSpansGoToOTLPWhenConfigured(t *testing.T) {
	got := make(chan *coltrace.ExportTraceServiceRequest, 16)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("collector got %s %s", r.URL.Path, r.Header.Get("Content-Type"))
		}
		b, _ := io.ReadAll(r.Body)
		var req coltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			t.Errorf("collector: %v", err)
		}
		got <- &req
	}))
	defer collector.Close()
	logs := &lockedBuffer{}
	tele, err := NewTelemetry(TelemetryConfig{Component: "gateway", Mirror: logs, OTLPEndpoint: collector.URL})
	if err != nil {
		t.Fatal(err)
	}
	h := tele.Middleware.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tele.Logger.InfoContext(r.Context(), "handled")
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/healthz", nil))
	// Shutdown flushes the batch.
	if err := tele.Close(); err != nil {
		t.Fatal(err)
	}
	var rec struct {
		TraceID string `json:"trace_id"`
	}
	for line := range strings.SplitSeq(logs.String(), "\n") {
		if strings.Contains(line, `"msg":"handled"`) {
			_ = json.Unmarshal([]byte(line), &rec)
		}
	}
	if rec.TraceID == "" {
		t.Fatalf("no trace id in the log: %s", logs.String())
	}
	if len(tele.Spans.GetSpans()) == 0 {
		t.Error("the ring kept no span")
	}
	select {
	case req := <-got:
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					if hex.EncodeToString(sp.TraceId) == rec.TraceID {
						return
					}
				}
			}
		}
		t.Fatalf("the collector got no span of trace %s", rec.TraceID)
	case <-time.After(10 * time.Second):
		t.Fatal("the collector got nothing")
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestCloseWithACollectorDown: a collector that refuses connections
// neither fails NewTelemetry nor holds Close past its bound.
func TestCloseWithACollectorDown(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	tele, err := NewTelemetry(TelemetryConfig{Component: "worker", OTLPEndpoint: url})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tele.Tracer.Tracer("test").Start(t.Context(), "lost")
	span.End()
	done := make(chan struct{})
	go func() { _ = tele.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second): // the exporter's own retries last a minute
		t.Fatal("Close hangs while the collector is down")
	}
}
