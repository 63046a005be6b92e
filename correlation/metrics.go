package correlation

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Metric names. The duration histogram follows the OpenTelemetry HTTP
// semantic conventions; its count is the request rate. In Prometheus
// format they read http_server_request_duration_seconds_{bucket,sum,count}
// and malai_http_server_errors_total.
const (
	MetricDuration = "http.server.request.duration"
	MetricErrors   = "malai.http.server.errors"
)

// Metric attribute keys. Method and route follow the HTTP semantic
// conventions; the status is reduced to its class ("2xx" … "5xx") to keep
// cardinality low.
const (
	AttrMethod      = "http.request.method"
	AttrRoute       = "http.route"
	AttrStatusClass = "http.response.status_class"
)

// durationBuckets are the semantic conventions' advised boundaries, in
// seconds.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

type redMetrics struct {
	duration metric.Float64Histogram
	errors   metric.Int64Counter
	sets     sync.Map // labelKey → *labelOpts
}

type labelKey struct {
	method, route string
	class         uint8
}

// labelOpts caches the option slices for one label set, so recording a
// request allocates nothing once its label set has been seen.
type labelOpts struct {
	rec []metric.RecordOption
	add []metric.AddOption
}

func newREDMetrics(mp metric.MeterProvider) (*redMetrics, error) {
	meter := mp.Meter(instrumentationName)
	d, err1 := meter.Float64Histogram(MetricDuration,
		metric.WithUnit("s"),
		metric.WithDescription("Duration of HTTP server requests."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	e, err2 := meter.Int64Counter(MetricErrors,
		metric.WithUnit("{request}"),
		metric.WithDescription("HTTP server requests answered with a 5xx status."))
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("correlation: creating metrics: %w", err)
	}
	return &redMetrics{duration: d, errors: e}, nil
}

func (rm *redMetrics) record(ctx context.Context, method, route string, status int, elapsed time.Duration) {
	k := labelKey{method: normalMethod(method), route: route, class: uint8(status / 100)}
	v, ok := rm.sets.Load(k)
	if !ok {
		v, _ = rm.sets.LoadOrStore(k, newLabelOpts(k))
	}
	lo := v.(*labelOpts)
	rm.duration.Record(ctx, elapsed.Seconds(), lo.rec...)
	if status >= 500 {
		rm.errors.Add(ctx, 1, lo.add...)
	}
}

func newLabelOpts(k labelKey) *labelOpts {
	kv := make([]attribute.KeyValue, 0, 3)
	kv = append(kv, attribute.String(AttrMethod, k.method), attribute.String(AttrStatusClass, statusClass(k.class)))
	if k.route != "" {
		kv = append(kv, attribute.String(AttrRoute, k.route))
	}
	opt := metric.WithAttributeSet(attribute.NewSet(kv...))
	return &labelOpts{rec: []metric.RecordOption{opt}, add: []metric.AddOption{opt}}
}

func statusClass(c uint8) string {
	if c >= 1 && c <= 5 {
		return string(rune('0'+c)) + "xx"
	}
	return "_OTHER"
}

// normalMethod maps the method to itself when it is a known one and to
// "_OTHER" otherwise, as the semantic conventions ask, so a client cannot
// mint label values.
func normalMethod(m string) string {
	switch m {
	case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "QUERY":
		return m
	}
	return "_OTHER"
}
