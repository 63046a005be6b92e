package correlation

import (
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/malai-sec/malai/internal/reqid"
)

// Transport wraps base (nil: http.DefaultTransport) for outbound calls
// made while serving a request, so the next hop continues the same
// correlation id and trace:
//
//   - X-Request-ID is set to the id in the request's context (replacing
//     any value the caller set); without an id the header is left alone.
//   - With a non-nil tp, otelhttp's client transport records a client span
//     and sends its W3C traceparent. With a nil tp no span is made, but
//     the traceparent of the span in the context is still sent.
//
// The outgoing *http.Request is never modified; a copy with the added
// headers goes to base. The returned RoundTripper is safe for concurrent
// use when base is.
func Transport(base http.RoundTripper, tp trace.TracerProvider) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	if tp == nil {
		return &idTransport{base: base, inject: true}
	}
	return otelhttp.NewTransport(&idTransport{base: base},
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelhttp.WithPropagators(propagation.TraceContext{}),
	)
}

type idTransport struct {
	base http.RoundTripper
	// inject makes the transport itself send the traceparent, when no
	// otelhttp transport does.
	inject bool
}

func (t *idTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	id, hasID := reqid.FromContext(ctx)
	hasSpan := t.inject && trace.SpanContextFromContext(ctx).IsValid()
	if !hasID && !hasSpan {
		return t.base.RoundTrip(req)
	}
	r2 := new(http.Request)
	*r2 = *req
	r2.Header = req.Header.Clone()
	if r2.Header == nil {
		r2.Header = make(http.Header)
	}
	if hasID {
		r2.Header[headerKey] = []string{id}
	}
	if hasSpan {
		propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(r2.Header))
	}
	return t.base.RoundTrip(r2)
}
