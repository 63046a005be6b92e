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

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/malai-sec/malai/internal/reqid"
	"github.com/malai-sec/malai/internal/respwriter"
	"github.com/malai-sec/malai/problem"
)

// ErrPanic is passed to Config.ErrorHandler when the wrapped handler
// panicked before writing a response.
var ErrPanic = errors.New("correlation: handler panicked")

// ErrConfig wraps every configuration error returned by [New] and
// [NewAlarm].
var ErrConfig = errors.New("correlation: invalid configuration")

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
	// well-formed X-Request-ID ([ValidID]) is kept and a W3C traceparent
	// continues the caller's trace. Otherwise the id is replaced by a fresh
	// one and the span starts a new trace that links to the inbound one.
	// Nil trusts no hop: use it on anything that faces the Internet.
	TrustIncoming func(*http.Request) bool

	// Logger receives one access-log record per request, message "http
	// request", at INFO (ERROR for 5xx), with the keys method, route
	// (pattern), status, bytes (body bytes written), duration (a
	// slog.Duration: nanoseconds in JSON) and client_ip, plus request_id,
	// trace_id and span_id; it also receives panic reports. Records
	// logged through it with a request context carry the ids too (its
	// handler is wrapped with [NewLogHandler] unless it already is one).
	// Nil: no access log and no panic reports.
	Logger *slog.Logger

	// TracerProvider enables tracing through otelhttp's server handler:
	// one span per request, named "METHOD route", with the correlation id
	// as the [SpanAttribute] attribute. Nil: no spans.
	TracerProvider trace.TracerProvider

	// MeterProvider enables the RED metrics (see the package
	// documentation). Nil: no metrics.
	MeterProvider metric.MeterProvider

	// Alarm, if set, is told the status of every request.
	Alarm *Alarm

	// ClientIP returns the client address for the access log. Nil uses
	// the host part of r.RemoteAddr; behind proxies pass a resolver that
	// trusts only the configured proxies. The raw X-Forwarded-For header
	// is never used.
	ClientIP func(*http.Request) string

	// ErrorHandler writes the response when the handler panics before
	// writing one; err is [ErrPanic]. Nil writes a generic 500
	// problem+json carrying the correlation id.
	ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)

	// Now is the clock for request durations. Nil uses time.Now.
	Now func() time.Time
}

// Middleware assigns correlation ids and records logs, traces and
// metrics. Build one with [New]; the zero value is unusable. It is safe
// for concurrent use and holds no per-request state after a request ends.
type Middleware struct {
	cfg     Config
	logger  *slog.Logger // Config.Logger with a LogHandler
	access  slog.Handler // Config.Logger's handler without it
	metrics *redMetrics
	tracing bool
}

// New validates cfg and returns a Middleware. cfg is not modified.
func New(cfg Config) (*Middleware, error) {
	if cfg.Logger != nil && cfg.Logger.Handler() == nil {
		return nil, errors.Join(ErrConfig, errors.New("correlation: Logger has no handler"))
	}
	c := cfg
	if c.TrustIncoming == nil {
		c.TrustIncoming = func(*http.Request) bool { return false }
	}
	if c.ClientIP == nil {
		c.ClientIP = remoteHost
	}
	if c.ErrorHandler == nil {
		c.ErrorHandler = func(w http.ResponseWriter, r *http.Request, _ error) {
			problem.Write(w, r, problem.Internal)
		}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	m := &Middleware{cfg: c, tracing: c.TracerProvider != nil}
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
// the correlation id, the otelhttp span (if tracing), then access log,
// metrics and alarm around next.
//
// The route pattern labels spans, logs and metrics. A [http.ServeMux]
// placed directly inside is seen on its own; when other middleware sits
// between Handler and the mux, wrap the mux with [RecordPattern] (or call
// [SetRoute] from another router) so the pattern reaches the outer layers.
func (m *Middleware) Handler(next http.Handler) http.Handler {
	var inner http.Handler = &observe{m: m, next: next}
	if m.tracing {
		inner = otelhttp.NewHandler(inner, "",
			otelhttp.WithTracerProvider(m.cfg.TracerProvider),
			otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
			otelhttp.WithPropagators(propagation.TraceContext{}),
			otelhttp.WithPublicEndpointFn(func(r *http.Request) bool {
				st := stateFrom(r.Context())
				return st == nil || !st.trusted
			}),
		)
	}
	return &identify{m: m, next: inner}
}

// Transport wraps base (nil: http.DefaultTransport) so that outbound
// requests carry the correlation id and the trace context of the request
// being served, with a client span when the Middleware traces. See
// [Transport].
func (m *Middleware) Transport(base http.RoundTripper) http.RoundTripper {
	return Transport(base, m.cfg.TracerProvider)
}

// identify is the outermost layer: it settles the correlation id.
type identify struct {
	m    *Middleware
	next http.Handler
}

func (h *identify) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	trusted := h.m.cfg.TrustIncoming(r)
	id := ""
	if trusted {
		if vs := r.Header[headerKey]; len(vs) == 1 && ValidID(vs[0]) {
			id = vs[0]
		}
	}
	now := h.m.cfg.Now()
	if id == "" {
		id = NewID(now)
	}
	sc := &stateCtx{Context: r.Context(), st: requestState{trusted: trusted, start: now}}
	sc.st.header[0] = id
	w.Header()[headerKey] = sc.st.header[:]
	h.next.ServeHTTP(w, r.WithContext(reqid.NewContext(sc, id)))
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
	pattern := ""
	if st := stateFrom(r.Context()); st != nil && st.pattern != "" {
		pattern = st.pattern
	} else {
		pattern = r.Pattern
	}
	route := routeOf(pattern)
	if span.IsRecording() && route != "" {
		span.SetName(r.Method + " " + route)
		span.SetAttributes(attribute.String("http.route", route))
	}
	if m.metrics != nil {
		m.metrics.record(r.Context(), r.Method, route, status, elapsed)
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
			slog.String("panic_type", fmt.Sprintf("%T", p)), slog.String("route", route))
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
		slog.String("route", route),
		slog.Int("status", status),
		slog.Int64("bytes", written),
		// A Duration, not a float: slog encodes floats through
		// encoding/json, which costs more than the rest of the line.
		slog.Duration("duration", elapsed),
		slog.String("client_ip", m.cfg.ClientIP(r)),
	)
	rec := slog.NewRecord(end, level, "http request", 0)
	rec.AddAttrs(attrs...)
	_ = h.Handle(ctx, rec)
}

// routeOf returns the path part of a ServeMux pattern ("GET
// example.com/a/{id}" → "/a/{id}"), as the http.route convention asks.
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
	pattern string
	start   time.Time
	header  [1]string
	rw      respwriter.Writer
}

type stateKey struct{}

// stateCtx carries a requestState without a separate allocation for the
// value; it behaves exactly like context.WithValue.
type stateCtx struct {
	context.Context
	st requestState
}

func (c *stateCtx) Value(key any) any {
	if key == (stateKey{}) {
		return &c.st
	}
	return c.Context.Value(key)
}

func stateFrom(ctx context.Context) *requestState {
	st, _ := ctx.Value(stateKey{}).(*requestState)
	return st
}

// SetRoute records the route pattern that matched the request served with
// ctx, for routers other than [http.ServeMux] (with a ServeMux use
// [RecordPattern]). The first pattern set wins, so the innermost router of
// nested ones names the route. Call it from the goroutine serving the
// request, before the handler returns. Outside [Middleware.Handler] it
// does nothing.
func SetRoute(ctx context.Context, pattern string) {
	if st := stateFrom(ctx); st != nil && st.pattern == "" {
		st.pattern = pattern
	}
}

// RecordPattern wraps a router that sets [http.Request.Pattern] on the
// request it is given ([http.ServeMux] does) and passes the matched
// pattern to [Middleware.Handler] through the request context, so the
// pattern labels the span, the access log and the metrics even when other
// middleware replaced the request in between.
func RecordPattern(mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { SetRoute(r.Context(), r.Pattern) }()
		mux.ServeHTTP(w, r)
	})
}
