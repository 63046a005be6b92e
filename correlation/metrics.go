package correlation

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
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

// Metric attribute keys, from the OpenTelemetry HTTP semantic
// conventions, so stock HTTP server dashboards match. Every value comes
// from a bounded set: the method ("_OTHER" for unknown ones), the route
// pattern ([route.Unrouted] when none matched), the status code, the
// scheme ("http" or "https"), the protocol version ("1.0", "1.1", "2",
// "3") and, for 5xx answers, error.type set to the status code.
const (
	AttrMethod          = "http.request.method"
	AttrRoute           = "http.route"
	AttrStatusCode      = "http.response.status_code"
	AttrScheme          = "url.scheme"
	AttrProtocolVersion = "network.protocol.version"
	AttrErrorType       = "error.type"
)

// AttrStatusClass was the status attribute before the semantic-convention
// http.response.status_code replaced it.
//
// Deprecated: metrics carry [AttrStatusCode]; this key is no longer set.
const AttrStatusClass = "http.response.status_class"

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
	status        uint16
	https         bool
	proto         uint8 // protoVersions index
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

func (rm *redMetrics) record(ctx context.Context, r *http.Request, route string, status int, elapsed time.Duration) {
	if status < 100 || status > 999 {
		status = 0
	}
	k := labelKey{method: normalMethod(r.Method), route: route, status: uint16(status), https: r.TLS != nil, proto: protoIndex(r)}
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

// protoVersions are the network.protocol.version values; index 0 is an
// unknown version.
var protoVersions = [...]string{"", "1.0", "1.1", "2", "3"}

func protoIndex(r *http.Request) uint8 {
	switch {
	case r.ProtoMajor == 1 && r.ProtoMinor == 0:
		return 1
	case r.ProtoMajor == 1 && r.ProtoMinor == 1:
		return 2
	case r.ProtoMajor == 2:
		return 3
	case r.ProtoMajor == 3:
		return 4
	}
	return 0
}

func newLabelOpts(k labelKey) *labelOpts {
	kv := make([]attribute.KeyValue, 0, 6)
	scheme := "http"
	if k.https {
		scheme = "https"
	}
	kv = append(kv,
		attribute.String(AttrMethod, k.method),
		attribute.String(AttrRoute, k.route),
		attribute.String(AttrScheme, scheme))
	if k.status != 0 {
		kv = append(kv, attribute.Int(AttrStatusCode, int(k.status)))
	}
	if v := protoVersions[k.proto]; v != "" {
		kv = append(kv, attribute.String(AttrProtocolVersion, v))
	}
	if k.status >= 500 {
		kv = append(kv, attribute.String(AttrErrorType, strconv.Itoa(int(k.status))))
	}
	opt := metric.WithAttributeSet(attribute.NewSet(kv...))
	return &labelOpts{rec: []metric.RecordOption{opt}, add: []metric.AddOption{opt}}
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
