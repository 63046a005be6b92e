package correlation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
	"unsafe"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/malai-sec/malai/clientip"
	"github.com/malai-sec/malai/internal/reqid"
	"github.com/malai-sec/malai/internal/respwriter"
	"github.com/malai-sec/malai/problem"
	"github.com/malai-sec/malai/route"
)

// ErrPanic is passed to Config.ErrorHandler when the wrapped handler
// panicked before writing a response.
var ErrPanic = errors.New("correlation: handler panicked")

// ErrInvalidConfig wraps every configuration error returned by [New],
// [NewAlarm] and [NewEncryptedWriter].
var ErrInvalidConfig = errors.New("correlation: invalid configuration")

// ErrConfig is the former name of [ErrInvalidConfig].
//
// Deprecated: use ErrInvalidConfig (the same error value).
var ErrConfig = ErrInvalidConfig

// SpanAttribute is the span attribute that carries the correlation id.
const SpanAttribute = "correlation.id"

// instrumentationName names the tracer and meter.
const instrumentationName = "github.com/malai-sec/malai/correlation"

// Config configures [New]. The zero value is the strict default: inbound
// ids and trace contexts are never trusted, and only the correlation id is
// handled (no access log, no traces, no metrics, no alarm) until the
// corresponding field is set.
type Config struct {
	// TrustIncoming reports whether the hop that sent r is trusted to
	// choose the correlation id and the trace parent, for example because
	// it presented the gateway's client certificate. For a trusted hop a
	// well-formed id header ([ValidID]) is kept and the propagated trace
	// context continues the caller's trace. Otherwise the id is replaced by
	// a fresh one and the span starts a new trace that links to the
	// inbound one. Nil trusts no hop: use it on anything that faces the
	// Internet.
	TrustIncoming func(*http.Request) bool

	// Header is the request and response header that carries the id.
	// Default [HeaderName] (X-Request-ID); X-Correlation-ID and
	// Request-Id are common alternatives. [Middleware.Transport] sends the
	// same header.
	Header string

	// Logger receives one access-log record per request, message "http
	// request", at INFO (ERROR for 5xx), with the keys method, route
	// (the matched pattern, or [route.Unrouted]), status, bytes (body
	// bytes written), duration (seconds, a float, as OpenTelemetry and
	// slog conventions measure time) and client_ip, plus request_id,
	// trace_id and span_id, then any attributes added with [AddAttrs]; it
	// also receives panic reports. Records logged through it with a
	// request context carry the ids too (its handler is wrapped with
	// [NewLogHandler] unless it already is one). Nil: no access log and no
	// panic reports.
	Logger *slog.Logger

	// TracerProvider enables tracing: one server span per request, named
	// "METHOD route" (the method alone when no route matched), with the
	// correlation id as the [SpanAttribute] attribute and the OpenTelemetry
	// HTTP server span attributes (method, scheme, path, server and peer
	// address, the client address as [Config.ClientIP] resolved it, user
	// agent, protocol version, status code, response size; error status
	// and error.type for a 5xx). Nil: no spans.
	TracerProvider trace.TracerProvider

	// Propagator reads and writes the trace context on trusted hops and
	// outbound calls. Default W3C TraceContext; pass
	// propagation.NewCompositeTextMapPropagator(propagation.TraceContext{},
	// propagation.Baggage{}) to carry baggage, or a B3 or Jaeger
	// propagator from go.opentelemetry.io/contrib/propagators.
	Propagator propagation.TextMapPropagator

	// MeterProvider enables the RED metrics (see the package
	// documentation). Nil: no metrics.
	MeterProvider metric.MeterProvider

	// Alarm, if set, is told the status of every request.
	Alarm *Alarm

	// ClientIP resolves the client address (trusting forwarding headers
	// only from its configured proxies). It runs once, before the handler,
	// and the address is stored in the request context
	// ([clientip.NewContext]), where ratelimit, headers and the
	// application read it instead of resolving again. An address already
	// in the context (an outer [clientip.Resolver.Handler]) is used as is.
	// Nil: the address in the context, else the TCP peer. The raw
	// X-Forwarded-For header is never used.
	ClientIP *clientip.Resolver

	// Route resolves the route pattern before the handler runs and stores
	// it in the request context ([route.NewContext]), so every layer
	// inside, including middleware in front of a router, labels and
	// authorises by it. Nil: the pattern recorded by [route.Handler] or
	// [route.RecordPattern] inside, else [http.Request.Pattern] of a
	// ServeMux directly inside. A request no route matched is labelled
	// [route.Unrouted].
	Route route.Resolver

	// ErrorHandler writes the response when the handler panics before
	// writing one; err is [ErrPanic]. Default [DefaultErrorHandler].
	ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)

	// Now is the clock for request durations. Nil uses time.Now.
	Now func() time.Time
}

// DefaultErrorHandler is the ErrorHandler of a zero Config: a generic 500
// problem+json carrying the correlation id, never the panic value.
func DefaultErrorHandler(w http.ResponseWriter, r *http.Request, _ error) {
	problem.Write(w, r, problem.Internal)
}

// Middleware assigns correlation ids and records logs, traces and
// metrics. Build one with [New]; the zero value is unusable. It is safe
// for concurrent use and holds no per-request state after a request ends.
type Middleware struct {
	cfg     Config
	header  string       // Config.Header in canonical form
	logger  *slog.Logger // Config.Logger with a LogHandler
	access  slog.Handler // Config.Logger's handler without it
	metrics *redMetrics
	tracer  trace.Tracer // nil: no spans
}

// New validates cfg and returns a Middleware. cfg is not modified.
func New(cfg Config) (*Middleware, error) {
	if cfg.Logger != nil && cfg.Logger.Handler() == nil {
		return nil, fmt.Errorf("%w: Logger has no handler", ErrInvalidConfig)
	}
	c := cfg
	if c.TrustIncoming == nil {
		c.TrustIncoming = func(*http.Request) bool { return false }
	}
	if c.Header == "" {
		c.Header = HeaderName
	}
	if !validHeaderName(c.Header) {
		return nil, fmt.Errorf("%w: Header %q is not a header name", ErrInvalidConfig, c.Header)
	}
	if c.Propagator == nil {
		c.Propagator = propagation.TraceContext{}
	}
	if c.ErrorHandler == nil {
		c.ErrorHandler = DefaultErrorHandler
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	m := &Middleware{cfg: c, header: http.CanonicalHeaderKey(c.Header)}
	if c.TracerProvider != nil {
		m.tracer = c.TracerProvider.Tracer(instrumentationName)
	}
	if c.Logger != nil {
		// The access log adds the ids itself; a LogHandler the caller
		// already wrapped around the handler is unwrapped so they are not
		// added twice.
		h := c.Logger.Handler()
		if lh, ok := h.(*LogHandler); ok {
			h = lh.next
		}
		m.access = h
		m.logger = slog.New(NewLogHandler(h))
	}
	if c.MeterProvider != nil {
		rm, err := newREDMetrics(c.MeterProvider)
		if err != nil {
			return nil, err
		}
		m.metrics = rm
	}
	return m, nil
}

// Handler returns next wrapped in the correlation layers, outermost first:
// the correlation id and the server span (if tracing), then access log,
// metrics and alarm around next.
//
// The route pattern labels spans, logs and metrics: see [Config.Route]. A
// [http.ServeMux] placed directly inside is seen on its own; when other
// middleware sits between Handler and the mux, wrap the mux with
// [route.RecordPattern], or put [route.Handler] with the router's resolver
// inside, so the pattern reaches the outer layers.
func (m *Middleware) Handler(next http.Handler) http.Handler {
	inner := &observe{m: m, next: next}
	return &identify{m: m, next: inner}
}

// Transport wraps base (nil: http.DefaultTransport) so that outbound
// requests carry the correlation id and the trace context of the request
// being served, with a client span when the Middleware traces. See
// [Transport].
func (m *Middleware) Transport(base http.RoundTripper) http.RoundTripper {
	return newTransport(base, m.cfg.TracerProvider, m.cfg.Propagator, m.header)
}

// identify is the outermost layer: it settles the correlation id.
type identify struct {
	m    *Middleware
	next http.Handler
}

func (h *identify) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := h.m
	trusted := m.cfg.TrustIncoming(r)
	id := ""
	if trusted {
		if vs := r.Header[m.header]; len(vs) == 1 && ValidID(vs[0]) {
			id = vs[0]
		}
	}
	now := m.cfg.Now()
	sc := &stateCtx{st: requestState{trusted: trusted, start: now}}
	if id == "" {
		// The id's bytes live in the request state, which is allocated
		// anyway: written once here, never changed, so the string over
		// them is immutable like any other.
		newID(&sc.st.idBuf, now)
		id = unsafe.String(&sc.st.idBuf[0], IDLength)
	}
	sc.RecorderContext.Init(r.Context())
	sc.st.rec = &sc.RecorderContext
	sc.st.header[0] = id
	sc.st.id = id
	w.Header()[m.header] = sc.st.header[:]
	var ctx context.Context = sc // answers reqid.Key{} itself
	if m.cfg.ClientIP != nil {
		if _, ok := clientip.FromContext(ctx); !ok {
			// A malformed forwarding header is left for the layers that
			// must refuse it (ratelimit answers 400); the log then names
			// the TCP peer.
			if a, err := m.cfg.ClientIP.Resolve(r); err == nil {
				ctx = clientip.NewContext(ctx, a)
			}
		}
	}
	if m.cfg.Route != nil {
		if p := m.cfg.Route(r); p != "" {
			route.Record(sc, p)
			ctx = route.NewContext(ctx, p)
		}
	}
	if m.tracer != nil {
		ctx = m.startSpan(ctx, r, &sc.st)
	}
	h.next.ServeHTTP(w, r.WithContext(ctx))
}

// observe records the access log, metrics and alarm around next.
type observe struct {
	m    *Middleware
	next http.Handler
}

func (o *observe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := o.m
	ctx := r.Context()
	span := trace.SpanFromContext(ctx)
	id, _ := reqid.FromContext(ctx)
	if span.IsRecording() {
		span.SetAttributes(attribute.String(SpanAttribute, id))
	}
	// The request started when the outermost layer saw it; reusing that
	// reading saves a clock call (not free on every VM).
	var rw *respwriter.Writer
	var start time.Time
	if st := stateFrom(ctx); st != nil {
		rw = &st.rw
		rw.Reset(w, nil)
		start = st.start
	} else {
		rw = respwriter.New(w, nil)
		start = m.cfg.Now()
	}
	defer func() {
		p := recover()
		status := rw.Status()
		abort := false
		if p != nil {
			if p == http.ErrAbortHandler || rw.WroteHeader() || rw.Hijacked() {
				// The response is already on its way, or the handler
				// aborted it on purpose: make net/http cut the connection
				// so a truncated answer is not mistaken for a whole one.
				abort = true
				status = http.StatusInternalServerError
			} else {
				m.cfg.ErrorHandler(rw, r, ErrPanic)
				status = rw.Status()
			}
		}
		if status == 0 {
			status = http.StatusOK // net/http sends 200 for an empty response
		}
		o.finish(r, span, start, status, rw.BytesWritten(), p)
		if st := stateFrom(ctx); st != nil && st.span != nil {
			endSpan(st.span, status, rw.BytesWritten())
		}
		if abort {
			panic(http.ErrAbortHandler)
		}
	}()
	o.next.ServeHTTP(rw, r)
}

func (o *observe) finish(r *http.Request, span trace.Span, start time.Time, status int, written int64, p any) {
	m := o.m
	var end time.Time
	var elapsed time.Duration
	if m.metrics != nil || m.logger != nil {
		end = m.cfg.Now()
		elapsed = end.Sub(start)
	}
	st := stateFrom(r.Context())
	pattern := ""
	if st != nil {
		pattern = st.recorded()
	}
	if pattern == "" {
		pattern = route.Pattern(r)
	}
	routeLabel := routeOf(pattern)
	if span.IsRecording() && routeLabel != "" {
		span.SetName(spanMethod(normalMethod(r.Method)) + " " + routeLabel)
		span.SetAttributes(attribute.String("http.route", routeLabel))
	}
	if routeLabel == "" {
		routeLabel = route.Unrouted
	}
	if m.metrics != nil {
		m.metrics.record(r.Context(), r, routeLabel, status, elapsed)
	}
	if m.cfg.Alarm != nil {
		m.cfg.Alarm.Record(status)
	}
	if m.logger == nil {
		return
	}
	ctx := r.Context()
	if p != nil && p != http.ErrAbortHandler {
		// The panic value may hold request data; log only its type.
		m.logger.LogAttrs(ctx, slog.LevelError, "handler panicked",
			slog.String("panic_type", fmt.Sprintf("%T", p)), slog.String("route", routeLabel))
	}
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	h := m.access
	if !h.Enabled(ctx, level) {
		return
	}
	// Build the record here rather than through Logger.LogAttrs: that
	// skips a runtime.Callers walk (the source of an access log is always
	// this line) and lets the ids and the fields share one allocation.
	var buf [3 + 6]slog.Attr
	attrs := appendIDs(buf[:0], ctx)
	attrs = append(attrs,
		slog.String("method", r.Method),
		slog.String("route", routeLabel),
		slog.Int("status", status),
		slog.Int64("bytes", written),
		slog.Float64("duration", elapsed.Seconds()),
		slog.String("client_ip", clientAddr(r)),
	)
	rec := slog.NewRecord(end, level, "http request", 0)
	rec.AddAttrs(attrs...)
	if st != nil && len(st.attrs) > 0 {
		rec.AddAttrs(st.attrs...)
	}
	_ = h.Handle(ctx, rec)
}

// clientAddr is the address the access log names: the one in the context
// (resolved at entry by Config.ClientIP, or by an inner layer), else the
// TCP peer.
func clientAddr(r *http.Request) string {
	if a, ok := clientip.FromContext(r.Context()); ok {
		return a.String()
	}
	return remoteHost(r)
}

// routeOf returns the path part of a ServeMux pattern ("GET
// example.com/a/{id}" → "/a/{id}"), as the http.route convention asks;
// other routers' patterns ("/a/{id}") are returned as they are.
func routeOf(pattern string) string {
	if i := strings.IndexByte(pattern, '/'); i >= 0 {
		return pattern[i:]
	}
	return ""
}

func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return ""
	}
	return host
}

// requestState is the per-request holder that inner layers fill for the
// outer ones. It also holds the request's recording writer and the
// response header value, so that one allocation covers all three.
type requestState struct {
	trusted bool
	start   time.Time
	header  [1]string // the id, as the response header's value
	id      string    // the id, for reqid.Key{} (a handler may edit header)
	idBuf   [IDLength]byte
	attrs   []slog.Attr // added by AddAttrs
	span    trace.Span  // the server span, when the Middleware traces
	rw      respwriter.Writer
	rec     *route.RecorderContext
}

func (st *requestState) recorded() string { return st.rec.Recorded() }

type stateKey struct{}

// stateCtx carries a requestState and the correlation id, and records the
// route for route.Record, without a separate allocation for any of them;
// it behaves exactly like nested context.WithValue calls.
type stateCtx struct {
	route.RecorderContext
	st requestState
}

func (c *stateCtx) Value(key any) any {
	switch key {
	case stateKey{}:
		return &c.st
	case reqid.Key{}:
		return &c.st.id // a pointer into the state: no boxing
	}
	return c.RecorderContext.Value(key)
}

func stateFrom(ctx context.Context) *requestState {
	st, _ := ctx.Value(stateKey{}).(*requestState)
	return st
}

// AddAttrs adds attributes to the access-log record of the request served
// with ctx, after the standard fields: the verified subject, a tenant, an
// audit id. Call it from the goroutine serving the request (a middleware
// after authentication, or the handler), before the handler returns.
// Outside [Middleware.Handler] it does nothing. Never add secrets, and
// bound what an attacker controls.
func AddAttrs(ctx context.Context, attrs ...slog.Attr) {
	if st := stateFrom(ctx); st != nil {
		st.attrs = append(st.attrs, attrs...)
	}
}

// SetRoute records the route pattern that matched the request served with
// ctx.
//
// Deprecated: use [route.Record], which this calls.
func SetRoute(ctx context.Context, pattern string) { route.Record(ctx, pattern) }

// RecordPattern wraps an [http.ServeMux] so the pattern it matched reaches
// [Middleware.Handler] even when other middleware replaced the request in
// between.
//
// Deprecated: use [route.RecordPattern], which this calls.
func RecordPattern(mux http.Handler) http.Handler { return route.RecordPattern(mux) }
