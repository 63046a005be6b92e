package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/malai-sec/malai/correlation"
	"github.com/malai-sec/malai/examples/malai/internal/queue"
)

// TestJobContinuesTheQueuedTrace: a message carrying the accepting
// request's traceparent is handled in a span of that trace; the worker's
// log lines carry its trace id and the job's correlation id, the call to
// the ledger carries both, and the job is counted in the RED series.
func TestJobContinuesTheQueuedTrace(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	const cid = "01JD8ZQ3ABCDEFGH"
	var mu sync.Mutex
	var gotParent, gotID string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gotParent, gotID = r.Header.Get("Traceparent"), r.Header.Get(correlation.HeaderName)
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()

	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	var logs syncBuffer
	q := queue.NewMemory(queue.Options{Block: 10 * time.Millisecond}, nil)
	w, err := New(Config{
		Queue: q, LedgerURL: srv.URL,
		Client:         &http.Client{Transport: correlation.Transport(nil, tp)},
		Logger:         slog.New(correlation.NewLogHandler(slog.NewJSONHandler(&logs, nil))),
		TracerProvider: tp, MeterProvider: mp,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Publish(context.Background(), queue.Message{IdempotencyKey: "j1", CorrelationID: cid,
		TraceParent: "00-" + traceID + "-00f067aa0ba902b7-01", Body: []byte(`{"job":1}`)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		// The delivery's span ends once it was handled.
		for ctx.Err() == nil && len(spans.GetSpans()) < 2 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	_ = w.Run(ctx)

	mu.Lock()
	if !strings.Contains(gotParent, traceID) || gotID != cid {
		t.Errorf("the ledger got traceparent %q and correlation id %q, want trace %s and %s", gotParent, gotID, traceID, cid)
	}
	mu.Unlock()
	var job *tracetest.SpanStub
	for _, s := range spans.GetSpans() {
		if s.Name == "worker job" {
			job = &s
		}
	}
	if job == nil || job.SpanContext.TraceID().String() != traceID || job.Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Fatalf("no worker span continuing the queued trace: %+v", spans.GetSpans())
	}
	found := false
	for _, line := range bytes.Split(logs.Bytes(), []byte("\n")) {
		var rec map[string]any
		if json.Unmarshal(line, &rec) != nil || rec["msg"] != "worker: job done" {
			continue
		}
		found = true
		if rec[correlation.LogKeyTraceID] != traceID || rec[correlation.LogKeyRequestID] != cid {
			t.Errorf("the job's log line lacks its trace or correlation id: %s", line)
		}
	}
	if !found {
		t.Fatalf("no job log line: %s", logs.Bytes())
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var done int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == MetricJobs {
				for _, dp := range sum.DataPoints {
					if v, _ := dp.Attributes.Value("outcome"); v.AsString() == OutcomeDone {
						done += dp.Value
					}
				}
			}
		}
	}
	if done != 1 {
		t.Fatalf("%s{outcome=done} = %d, want 1", MetricJobs, done)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}

// TestFailingHandOffsFireTheAlarm: deliveries the ledger fails (5xx) or
// cannot take count as errors for the worker's alarm; done ones do not.
func TestFailingHandOffsFireTheAlarm(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusCreated)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(int(status.Load())) }))
	defer srv.Close()
	alarm, err := correlation.NewAlarm(correlation.AlarmConfig{MinRequests: 4, Threshold: 0.5, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{Queue: queue.NewMemory(queue.Options{}, nil), LedgerURL: srv.URL, Client: srv.Client(),
		Logger: slog.New(slog.DiscardHandler), Alarm: alarm, MaxBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	m := queue.Message{ID: "1", Body: []byte(`{"job":1}`), Deliveries: 1}
	for range 4 {
		_ = w.handle(context.Background(), m)
	}
	if alarm.Firing() {
		t.Fatal("successful hand-offs fired the alarm")
	}
	status.Store(http.StatusServiceUnavailable)
	for range 4 {
		_ = w.handle(context.Background(), m)
	}
	if !alarm.Firing() {
		t.Fatal("failing hand-offs did not fire the worker's alarm")
	}
}
