package route

import (
	"context"
	"net/http"
)

// Unrouted is the label of a request that matched no route: refused
// before routing (rate limited, unauthenticated, a malformed client
// address), a 404 or a 405. Metrics and logs use it instead of a path, so
// an attacker probing random paths cannot grow their label sets.
const Unrouted = "unrouted"

// Resolver returns the pattern of the route that serves r, or "" when no
// route does. It must decide exactly as the router will (the same method,
// the same path field, the same cleaning), must not run any handler, and
// must be safe for concurrent use. [ServeMux] builds one for
// [http.ServeMux]; the package documentation has recipes for chi and
// gorilla/mux.
type Resolver func(r *http.Request) string

// ServeMux returns a Resolver for mux: the pattern [http.ServeMux.Handler]
// reports, which is the one mux.ServeHTTP will route to. A request mux
// would redirect (to a cleaned path or a trailing slash) or refuse (404,
// 405) resolves to "".
func ServeMux(mux *http.ServeMux) Resolver {
	return func(r *http.Request) string {
		_, pattern := mux.Handler(r)
		return pattern
	}
}

type patternKey struct{}

// NewContext returns a copy of ctx carrying the route pattern of the
// request it belongs to, for [Pattern] and [FromContext].
func NewContext(ctx context.Context, pattern string) context.Context {
	return context.WithValue(ctx, patternKey{}, pattern)
}

// FromContext returns the pattern [NewContext] or [Handler] stored.
func FromContext(ctx context.Context) (string, bool) {
	p, ok := ctx.Value(patternKey{}).(string)
	return p, ok && p != ""
}

// Pattern returns the route pattern of r: the one resolved by [Handler]
// (or stored with [NewContext]), else [http.Request.Pattern] (set by
// [http.ServeMux] on the request it passes to the matched handler), else
// "". Every Malai package that labels, scopes or authorises by route reads
// it through this function.
func Pattern(r *http.Request) string {
	if p, ok := FromContext(r.Context()); ok {
		return p
	}
	return r.Pattern
}

// Label returns [Pattern], or [Unrouted] when it is empty.
func Label(r *http.Request) string {
	if p := Pattern(r); p != "" {
		return p
	}
	return Unrouted
}

// Handler returns middleware that resolves the route of every request once,
// before next runs, and stores it in the request context ([NewContext]),
// so middleware placed before the router (as chi's Use does) sees the
// route it is about to serve. It also reports the pattern to an outer
// [RecorderContext], so an access log outside sees it. A request that
// resolves to "" passes through unchanged: it is unrouted.
func Handler(resolve Resolver) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p := resolve(r)
			if p == "" {
				next.ServeHTTP(w, r)
				return
			}
			Record(r.Context(), p)
			next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), p)))
		})
	}
}

type recorderKey struct{}

// RecorderContext is a context that learns the route matched further in,
// for a layer outside the router that reports on the request after it ran
// (an access log, metrics, a span). Its zero value is unusable; call
// [RecorderContext.Init]. Embed it in a per-request struct to save an
// allocation, or use [WithRecorder]. It is not safe for concurrent use:
// [Record] must be called from the goroutine serving the request, before
// the handler returns.
type RecorderContext struct {
	context.Context
	pattern string
}

// Init makes c a child of parent with nothing recorded.
func (c *RecorderContext) Init(parent context.Context) {
	c.Context, c.pattern = parent, ""
}

// Value implements context.Context.
func (c *RecorderContext) Value(key any) any {
	if key == (recorderKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// Recorded returns the first pattern recorded, or "".
func (c *RecorderContext) Recorded() string { return c.pattern }

// WithRecorder returns a context that records routes, and the recorder.
func WithRecorder(parent context.Context) (context.Context, *RecorderContext) {
	c := &RecorderContext{}
	c.Init(parent)
	return c, c
}

// Record tells the nearest enclosing [RecorderContext] of ctx that the
// request matched pattern. The first non-empty pattern wins: a resolver
// in front of the router records before the router runs, and with nested
// routers recorded on the way out ([RecordPattern]) the innermost one
// records first. Without a RecorderContext it does nothing.
func Record(ctx context.Context, pattern string) {
	if pattern == "" {
		return
	}
	if c, ok := ctx.Value(recorderKey{}).(*RecorderContext); ok && c.pattern == "" {
		c.pattern = pattern
	}
}

// RecordPattern wraps an [http.ServeMux] (which sets
// [http.Request.Pattern] on the request it routes) and records the matched
// pattern for an outer [RecorderContext] once the mux returns, also when
// the handler panics. Use it when other middleware sits between that
// outer layer and the mux; a mux directly inside needs nothing.
func RecordPattern(mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { Record(r.Context(), r.Pattern) }()
		mux.ServeHTTP(w, r)
	})
}
