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
//
// [Middleware.Transport] does the same with the Middleware's id header
// and propagator.
func Transport(base http.RoundTripper, tp trace.TracerProvider) http.RoundTripper {
	return newTransport(base, tp, propagation.TraceContext{}, headerKey)
}

func newTransport(base http.RoundTripper, tp trace.TracerProvider, prop propagation.TextMapPropagator, header string) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	if tp == nil {
		return &idTransport{base: base, inject: true, prop: prop, header: header}
	}
	return otelhttp.NewTransport(&idTransport{base: base, prop: prop, header: header},
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelhttp.WithPropagators(prop),
	)
}

type idTransport struct {
	base   http.RoundTripper
	prop   propagation.TextMapPropagator
	header string // canonical
	// inject makes the transport itself send the trace context, when no
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
		r2.Header[t.header] = []string{id}
	}
	if hasSpan {
		t.prop.Inject(ctx, propagation.HeaderCarrier(r2.Header))
	}
	return t.base.RoundTrip(r2)
}
