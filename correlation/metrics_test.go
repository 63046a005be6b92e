package correlation

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

func TestREDMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	clk := newFakeClock()
	m := mustNew(t, Config{MeterProvider: mp, Now: clk.Now})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok/{id}", func(w http.ResponseWriter, r *http.Request) { clk.Advance(20 * time.Millisecond) })
	mux.HandleFunc("POST /fail", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
	h := m.Handler(withValue(RecordPattern(mux)))
	for _, rq := range []struct{ method, path string }{
		{"GET", "/ok/1"}, {"GET", "/ok/2"}, {"GET", "/ok/3"}, {"POST", "/fail"}, {"POST", "/fail"},
		{"BREW", "/ok/1"}, {"GET", "/nowhere"},
	} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(rq.method, rq.path, nil))
	}
	data := collect(t, reader)
	hist, ok := data[MetricDuration].(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("no %s histogram: %v", MetricDuration, data)
	}
	type key struct {
		method, route string
		status        int64
		scheme, proto string
		errType       string
	}
	counts := map[key]uint64{}
	sums := map[key]float64{}
	for _, dp := range hist.DataPoints {
		get := func(k string) string { v, _ := dp.Attributes.Value(attribute.Key(k)); return v.AsString() }
		code, _ := dp.Attributes.Value(AttrStatusCode)
		if _, ok := dp.Attributes.Value(AttrStatusClass); ok {
			t.Errorf("the deprecated %s is still set", AttrStatusClass)
		}
		k := key{get(AttrMethod), get(AttrRoute), code.AsInt64(), get(AttrScheme), get(AttrProtocolVersion), get(AttrErrorType)}
		counts[k] += dp.Count
		sums[k] += dp.Sum
	}
	want := map[key]uint64{
		{"GET", "/ok/{id}", 200, "http", "1.1", ""}:    3,
		{"POST", "/fail", 503, "http", "1.1", "503"}:   2,
		{"_OTHER", "unrouted", 405, "http", "1.1", ""}: 1, // BREW is not a method ServeMux routes
		{"GET", "unrouted", 404, "http", "1.1", ""}:    1,
	}
	for k, n := range want {
		if counts[k] != n {
			t.Errorf("count%v = %d, want %d (all: %v)", k, counts[k], n, counts)
		}
	}
	if len(counts) != len(want) {
		t.Errorf("label sets %v, want %v", counts, want)
	}
	if s := sums[key{"GET", "/ok/{id}", 200, "http", "1.1", ""}]; s < 0.0599 || s > 0.0601 {
		t.Errorf("duration sum %v s, want 0.06", s)
	}
	errs, ok := data[MetricErrors].(metricdata.Sum[int64])
	if !ok || len(errs.DataPoints) != 1 || errs.DataPoints[0].Value != 2 || !errs.IsMonotonic {
		t.Fatalf("%s = %+v", MetricErrors, data[MetricErrors])
	}
}

// TestPrometheusExposition wires the metrics the way the reference system
// does: otel SDK → Prometheus exporter → /metrics.
func TestPrometheusExposition(t *testing.T) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	clk := newFakeClock()
	alarm, err := NewAlarm(AlarmConfig{MeterProvider: mp, Now: clk.Now, MinRequests: 1, Logger: jsonLogger(&syncBuffer{})})
	if err != nil {
		t.Fatal(err)
	}
	m := mustNew(t, Config{MeterProvider: mp, Alarm: alarm})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boom", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := httptest.NewServer(m.Handler(mux))
	defer srv.Close()
	for range 2 {
		resp, err := http.Get(srv.URL + "/boom")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, want := range []string{
		`http_server_request_duration_seconds_count{error_type="500",http_request_method="GET",http_response_status_code="500",http_route="/boom",network_protocol_version="1.1"`,
		`malai_http_server_errors_total{error_type="500",http_request_method="GET",http_response_status_code="500",http_route="/boom",network_protocol_version="1.1"`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s\n%s", want, text)
		}
	}
	for _, re := range []string{`(?m)^malai_alarm_firing\{alarm="http_error_rate",[^}]*\} 1$`, `(?m)^malai_alarm_error_ratio\{alarm="http_error_rate",[^}]*\} 1$`} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("/metrics lacks %s (alarm firing after 2 of 2 requests failed)\n%s", re, text)
		}
	}
}
