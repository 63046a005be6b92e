// Package correlationbench measures the per-request cost of the
// correlation stack against a bare handler, the floor of its output, and
// the anchor stack (chi RequestID + otelhttp + slog), in the same run.
package correlationbench

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-chi/chi/v5/middleware"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/malai-sec/malai/correlation"
	"github.com/malai-sec/malai/route"
)

// discard is a minimal ResponseWriter whose header map is cleared, not
// reallocated, between requests, so only the middleware's own allocations
// show.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(int)             {}

func app() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /accounts/{id}", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"balance":10}`)
	})
	return mux
}

// providers returns an SDK tracer provider that samples nothing (spans
// are created, ids generated, nothing recorded) and an SDK meter provider
// with a manual reader, as in production minus the exporter.
func providers(b *testing.B) (*sdktrace.TracerProvider, *sdkmetric.MeterProvider) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	return tp, mp
}

func run(b *testing.B, h http.Handler) {
	req := httptest.NewRequest("GET", "/accounts/42", nil)
	req.RemoteAddr = "192.0.2.7:51234"
	w := &discard{h: make(http.Header)}
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
	cpu.report(b)
}

// cpuClock measures the process's CPU time (user+system, GC included)
// across a benchmark loop. On a shared, oversubscribed machine wall time
// per op swings with other tenants' load; CPU time per op does much less,
// so every benchmark here reports both (cpu-ns/op).
type cpuClock struct{ start time.Duration }

func startCPU() cpuClock { return cpuClock{start: cpuNow()} }

func (c cpuClock) report(b *testing.B) {
	b.ReportMetric(float64(cpuNow()-c.start)/float64(b.N), "cpu-ns/op")
}

func jsonLogger() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }

func mustNew(b *testing.B, cfg correlation.Config) *correlation.Middleware {
	m, err := correlation.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// Bare: the mux and handler alone.
func BenchmarkBare(b *testing.B) { run(b, app()) }

// OtelhttpAlone: the peer, otelhttp's handler with sampling off and SDK
// metrics (its own http.server.request.duration histogram).
func BenchmarkOtelhttpAlone(b *testing.B) {
	tp, mp := providers(b)
	run(b, otelhttp.NewHandler(app(), "", otelhttp.WithTracerProvider(tp), otelhttp.WithMeterProvider(mp)))
}

// CorrelationIDOnly: the zero Config, correlation id alone.
func BenchmarkCorrelationIDOnly(b *testing.B) {
	run(b, mustNew(b, correlation.Config{}).Handler(app()))
}

// CorrelationLayer: id + JSON access log + RED metrics + alarm, no
// tracing: the layer the 2 µs goal in BENCHMARKS.md is about.
func BenchmarkCorrelationLayer(b *testing.B) {
	_, mp := providers(b)
	alarm, err := correlation.NewAlarm(correlation.AlarmConfig{MeterProvider: mp, Logger: jsonLogger()})
	if err != nil {
		b.Fatal(err)
	}
	run(b, mustNew(b, correlation.Config{Logger: jsonLogger(), MeterProvider: mp, Alarm: alarm}).Handler(app()))
}

// CorrelationFull: the whole stack as the reference system wires it, with
// otelhttp tracing sampled off.
func BenchmarkCorrelationFull(b *testing.B) {
	tp, mp := providers(b)
	alarm, err := correlation.NewAlarm(correlation.AlarmConfig{MeterProvider: mp, Logger: jsonLogger()})
	if err != nil {
		b.Fatal(err)
	}
	m := mustNew(b, correlation.Config{Logger: jsonLogger(), TracerProvider: tp, MeterProvider: mp, Alarm: alarm})
	run(b, m.Handler(route.RecordPattern(app())))
}

// CorrelationFullSampled: the whole stack with every span recorded (into
// a span processor that drops them), for scale.
func BenchmarkCorrelationFullSampled(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	_, mp := providers(b)
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	m := mustNew(b, correlation.Config{Logger: jsonLogger(), TracerProvider: tp, MeterProvider: mp})
	run(b, m.Handler(app()))
}

// peerAccessLog is the access-log middleware a chi + slog service
// writes: chi's WrapResponseWriter for status and bytes, one slog line
// with the same keys as correlation's. It logs the path, not the
// pattern: the ServeMux inside sets the pattern on its own request copy.
func peerAccessLog(l *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		level := slog.LevelInfo
		if ww.Status() >= 500 {
			level = slog.LevelError
		}
		l.LogAttrs(r.Context(), level, "http request",
			slog.String("request_id", middleware.GetReqID(r.Context())),
			slog.String("method", r.Method),
			slog.String("route", r.URL.Path),
			slog.Int("status", ww.Status()),
			slog.Int("bytes", ww.BytesWritten()),
			slog.Float64("duration", time.Since(start).Seconds()),
			slog.String("client_ip", r.RemoteAddr))
	})
}

// peerChain is the anchor stack: chi RequestID, otelhttp (its own
// duration and size histograms, spans from tp) and the slog access log.
func peerChain(tp *sdktrace.TracerProvider, mp *sdkmetric.MeterProvider) http.Handler {
	opts := []otelhttp.Option{otelhttp.WithMeterProvider(mp)}
	if tp != nil {
		opts = append(opts, otelhttp.WithTracerProvider(tp))
	} else {
		opts = append(opts, otelhttp.WithTracerProvider(tracenoop.NewTracerProvider()))
	}
	return middleware.RequestID(otelhttp.NewHandler(peerAccessLog(jsonLogger(), app()), "", opts...))
}

// PeerLayer: chi RequestID + otelhttp with a no-op tracer (metrics only)
// + slog access log, the peer of CorrelationLayer.
func BenchmarkPeerLayer(b *testing.B) {
	_, mp := providers(b)
	run(b, peerChain(nil, mp))
}

// PeerFull: the same with otelhttp's spans from an SDK tracer that
// samples nothing, the peer of CorrelationFull.
func BenchmarkPeerFull(b *testing.B) {
	tp, mp := providers(b)
	run(b, peerChain(tp, mp))
}

// Floor: the work the layer's output itself costs, without the layer:
// two clock readings, a fresh id, one histogram record with a
// precomputed attribute set into the same SDK, and the same access-log
// record (the same keys and values) through the same JSON handler.
func BenchmarkFloor(b *testing.B) {
	_, mp := providers(b)
	hist, err := mp.Meter("floor").Float64Histogram("http.server.request.duration", metric.WithUnit("s"))
	if err != nil {
		b.Fatal(err)
	}
	set := metric.WithAttributeSet(attribute.NewSet(
		attribute.String("http.request.method", "GET"), attribute.String("http.route", "/accounts/{id}"),
		attribute.String("url.scheme", "http"), attribute.Int("http.response.status_code", 200),
		attribute.String("network.protocol.version", "1.1")))
	h := slog.NewJSONHandler(io.Discard, nil)
	ctx := context.Background()
	mux := app()
	req := httptest.NewRequest("GET", "/accounts/42", nil)
	w := &discard{h: make(http.Header)}
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		clear(w.h)
		start := time.Now()
		id := correlation.NewID(start)
		mux.ServeHTTP(w, req)
		end := time.Now()
		elapsed := end.Sub(start).Seconds()
		hist.Record(ctx, elapsed, set)
		rec := slog.NewRecord(end, slog.LevelInfo, "http request", 0)
		rec.AddAttrs(slog.String("request_id", id), slog.String("method", "GET"),
			slog.String("route", "/accounts/{id}"), slog.Int("status", 200), slog.Int64("bytes", 14),
			slog.Float64("duration", elapsed), slog.String("client_ip", "192.0.2.7"))
		_ = h.Handle(ctx, rec)
	}
	cpu.report(b)
}

// logLine is a typical access-log-sized record.
func logLine(l *slog.Logger) {
	l.LogAttrs(context.Background(), slog.LevelInfo, "http request",
		slog.String("method", "GET"), slog.String("route", "/accounts/{id}"), slog.Int("status", 200))
}

// SlogJSON: one JSON log line to a discarding writer, the baseline for
// the encrypted stream.
func BenchmarkSlogJSON(b *testing.B) {
	l := jsonLogger()
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		logLine(l)
	}
	cpu.report(b)
}

// SlogJSONEncrypted: the same line sealed by the encrypted log stream.
func BenchmarkSlogJSONEncrypted(b *testing.B) {
	k, err := correlation.NewKey()
	if err != nil {
		b.Fatal(err)
	}
	ring, err := correlation.NewKeyRing("k1", map[string]correlation.Key{"k1": k})
	if err != nil {
		b.Fatal(err)
	}
	w, err := correlation.NewEncryptedWriter(io.Discard, ring)
	if err != nil {
		b.Fatal(err)
	}
	l := slog.New(slog.NewJSONHandler(w, nil))
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		logLine(l)
	}
	cpu.report(b)
}
