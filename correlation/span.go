package correlation

import (
	"context"
	"net"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/malai-sec/malai/clientip"
)

// Span attribute keys beyond the metric ones, from the OpenTelemetry HTTP
// server span conventions.
const (
	attrMethodOriginal = "http.request.method_original"
	attrURLPath        = "url.path"
	attrServerAddress  = "server.address"
	attrServerPort     = "server.port"
	attrPeerAddress    = "network.peer.address"
	attrPeerPort       = "network.peer.port"
	attrClientAddress  = "client.address"
	attrUserAgent      = "user_agent.original"
	attrResponseSize   = "http.response.body.size"
)

// startSpan starts the request's server span on ctx. A trusted hop's
// propagated context is the parent; anyone else's becomes a link of a new
// root, so an Internet client cannot choose the trace. The span carries
// the attributes a sampler may decide on (method, scheme, path); the rest
// are added only to a span that records, so an unsampled request pays
// for none of them.
func (m *Middleware) startSpan(ctx context.Context, r *http.Request, st *requestState) context.Context {
	carrier := propagation.HeaderCarrier(r.Header)
	opts := make([]trace.SpanStartOption, 0, 4)
	opts = append(opts, trace.WithSpanKind(trace.SpanKindServer))
	if st.trusted {
		ctx = m.cfg.Propagator.Extract(ctx, carrier)
	} else {
		opts = append(opts, trace.WithNewRoot())
		if sc := trace.SpanContextFromContext(m.cfg.Propagator.Extract(ctx, carrier)); sc.IsValid() && sc.IsRemote() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
		}
	}
	method := normalMethod(r.Method)
	opts = append(opts, trace.WithAttributes(
		attribute.String(AttrMethod, method),
		attribute.String(AttrScheme, scheme(r)),
		attribute.String(attrURLPath, r.URL.Path),
	))
	ctx, span := m.tracer.Start(ctx, spanMethod(method), opts...)
	st.span = span
	if !span.IsRecording() {
		return ctx
	}
	attrs := make([]attribute.KeyValue, 0, 8)
	if method == "_OTHER" {
		attrs = append(attrs, attribute.String(attrMethodOriginal, r.Method))
	}
	if host, port := splitHostPort(r.Host); host != "" {
		attrs = append(attrs, attribute.String(attrServerAddress, host))
		if port > 0 {
			attrs = append(attrs, attribute.Int(attrServerPort, port))
		}
	}
	peer, peerPort := splitHostPort(r.RemoteAddr)
	if peer != "" {
		attrs = append(attrs, attribute.String(attrPeerAddress, peer))
		if peerPort > 0 {
			attrs = append(attrs, attribute.Int(attrPeerPort, peerPort))
		}
	}
	// The client address is the resolved one (trusted proxies only),
	// never X-Forwarded-For as sent.
	if a, ok := clientip.FromContext(ctx); ok {
		attrs = append(attrs, attribute.String(attrClientAddress, a.String()))
	} else if peer != "" {
		attrs = append(attrs, attribute.String(attrClientAddress, peer))
	}
	if ua := r.UserAgent(); ua != "" {
		attrs = append(attrs, attribute.String(attrUserAgent, ua))
	}
	if v := protoVersions[protoIndex(r)]; v != "" {
		attrs = append(attrs, attribute.String(AttrProtocolVersion, v))
	}
	span.SetAttributes(attrs...)
	return ctx
}

// endSpan records the outcome on the request's span and ends it. A 5xx is
// an error (error.type is the status code); a 4xx is not, on a server
// span.
func endSpan(span trace.Span, status int, written int64) {
	if span.IsRecording() {
		span.SetAttributes(attribute.Int(AttrStatusCode, status), attribute.Int64(attrResponseSize, written))
		if status >= 500 {
			span.SetAttributes(attribute.String(AttrErrorType, strconv.Itoa(status)))
			span.SetStatus(codes.Error, "")
		}
	}
	span.End()
}

// spanMethod is the span name's method: "HTTP" for a method outside the
// known set, so a client cannot mint span names.
func spanMethod(normal string) string {
	if normal == "_OTHER" {
		return "HTTP"
	}
	return normal
}

func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// splitHostPort splits "host:port", "[v6]:port" or a bare host; port is
// 0 when absent or malformed.
func splitHostPort(hostport string) (string, int) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport, 0
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p > 65535 {
		return host, 0
	}
	return host, p
}
