package idempotency

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/malai-sec/malai/problem"
	"github.com/malai-sec/malai/route"
)

// DefaultMaxBodyBytes caps the request body the middleware reads to
// fingerprint it.
const DefaultMaxBodyBytes = 1 << 20

// DefaultReplayHeaders are the response headers stored and replayed when
// Config.ReplayHeaders is nil. Set-Cookie is deliberately absent: a replay
// must not hand one caller's session to a retry.
var defaultReplayHeaders = []string{
	"Content-Type", "Content-Language", "Content-Encoding", "Content-Location",
	"Location", "Etag", "Last-Modified",
}

// DefaultReplayHeaders returns the header names replayed by default.
func DefaultReplayHeaders() []string { return slices.Clone(defaultReplayHeaders) }

// Config configures the HTTP [Middleware]. The zero value plus a Store
// and a Principal is the strict default: every POST and PATCH must carry a
// key, bodies are compared byte for byte, and a store failure answers 503.
type Config struct {
	// Store keeps the records. Required (see [RunnerConfig.Store]).
	Store Store
	// Principal returns the verified caller of r, for example the subject
	// of the JWT that jwtverify put in the context. Records are scoped to
	// it, so one caller can never replay another's response. Required
	// unless AllowAnonymous is set; when it returns false the request is
	// refused with 401 ([ErrNoPrincipal]).
	Principal func(r *http.Request) (string, bool)
	// AllowAnonymous loosens the default: without a Principal every caller
	// shares one key space. Only for routes that have no caller identity.
	AllowAnonymous bool
	// Optional loosens the default: a request without an Idempotency-Key
	// passes through unprotected instead of being refused with 400.
	Optional bool
	// Methods are the methods the middleware guards; others pass through.
	// Default POST and PATCH.
	Methods []string
	// Route returns the route a request's record is scoped to. Default:
	// r.Pattern (set by http.ServeMux; wrap each route, not the mux),
	// falling back to the method and the escaped path when it is empty.
	Route func(r *http.Request) string
	// FingerprintHeaders are request headers whose values join the body in
	// the fingerprint (for example a header selecting an API version).
	FingerprintHeaders []string
	// Canonicalize, when set, maps the body to its canonical form before it
	// is fingerprinted; [CanonicalJSON] makes JSON bodies that differ only
	// in key order or whitespace count as the same payload. When it fails
	// the raw body is fingerprinted. Default: the raw bytes.
	Canonicalize func(contentType string, body []byte) ([]byte, error)
	// ReplayHeaders are the response headers stored with the result and
	// replayed. Default [DefaultReplayHeaders].
	ReplayHeaders []string
	// MaxBodyBytes caps the request body; a larger one is refused with 413
	// ([ErrBodyTooLarge]) before any claim. Default [DefaultMaxBodyBytes].
	MaxBodyBytes int64
	// BareKeys also accepts a key sent without quotes
	// (Idempotency-Key: 8e03978e-40d5-43e8-bc93-6894a57f9324), as most
	// clients and SDKs send it: 1 to [MaxKeyLen] visible ASCII characters
	// without quote, backslash, comma or semicolon. A quoted value and the
	// same bare value name the same record. Off by default: the draft
	// standard defines the field as a structured-field string.
	BareKeys bool
	// Now, Lease, Heartbeat, HeartbeatLimit, Retention, MaxResultBytes,
	// StoreTimeout and Logger configure the [Runner] underneath and mean
	// what the [RunnerConfig] fields of the same names mean; a larger
	// response than MaxResultBytes is sent once and recorded as not
	// replayable.
	Now            func() time.Time
	Lease          time.Duration
	Heartbeat      time.Duration
	HeartbeatLimit time.Duration
	Retention      time.Duration
	MaxResultBytes int
	StoreTimeout   time.Duration
	Logger         *slog.Logger
	// MaxResponseBytes is the former name of MaxResultBytes, used when
	// MaxResultBytes is zero.
	//
	// Deprecated: set MaxResultBytes.
	MaxResponseBytes int
	// UnavailableRetryAfter is the Retry-After sent with a 503 when the
	// store fails. Default one second.
	UnavailableRetryAfter time.Duration
	// FailOpen loosens the default: when the store fails, the request runs
	// unprotected (a retry may repeat its side effect) instead of being
	// answered with 503. OnStoreError, if set, sees those failures and
	// every failure to store a handler's result (ErrLeaseLost or
	// ErrUnavailable), after which the response is still sent.
	FailOpen     bool
	OnStoreError func(r *http.Request, err error)
	// ErrorHandler writes every error response. The error matches one of
	// ErrKeyMissing, ErrKeyInvalid, ErrNoPrincipal, ErrBodyTooLarge,
	// ErrBodyUnreadable, ErrKeyReused, ErrInFlight (an [*InFlightError]),
	// ErrNotReplayable or ErrUnavailable. Retry-After (for ErrInFlight and
	// ErrUnavailable) and Connection: close (for ErrBodyTooLarge) are set
	// before it is called, so a custom handler keeps them. Default
	// [DefaultErrorHandler].
	ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)
}

// runnerConfig is the part of c the Runner takes.
func (c Config) runnerConfig() RunnerConfig {
	max := c.MaxResultBytes
	if max == 0 {
		max = c.MaxResponseBytes
	}
	return RunnerConfig{
		Store: c.Store, Now: c.Now, Lease: c.Lease, Heartbeat: c.Heartbeat, HeartbeatLimit: c.HeartbeatLimit,
		Retention: c.Retention, MaxResultBytes: max, StoreTimeout: c.StoreTimeout, Logger: c.Logger,
	}
}

// Middleware enforces Idempotency-Key on HTTP writes. Build it with [New];
// it is safe for concurrent use and has no zero value.
type Middleware struct {
	cfg       Config
	run       *Runner
	methods   []string
	fpHeaders []string
	replay    []string
	retry     string
	bare      bool
}

// New validates cfg and returns the middleware. cfg is not modified.
func New(cfg Config) (*Middleware, error) {
	r, err := NewRunner(cfg.runnerConfig())
	if err != nil {
		return nil, err
	}
	c := cfg
	if c.Principal == nil && !c.AllowAnonymous {
		return nil, fmt.Errorf("%w: Principal is required (or set AllowAnonymous)", ErrInvalidConfig)
	}
	if c.Principal != nil && c.AllowAnonymous {
		return nil, fmt.Errorf("%w: Principal and AllowAnonymous are exclusive", ErrInvalidConfig)
	}
	m := &Middleware{run: r}
	m.methods = []string{http.MethodPost, http.MethodPatch}
	if c.Methods != nil {
		if len(c.Methods) == 0 {
			return nil, fmt.Errorf("%w: Methods is empty", ErrInvalidConfig)
		}
		m.methods = nil
		for _, meth := range c.Methods {
			if meth == "" || strings.ToUpper(meth) != meth {
				return nil, fmt.Errorf("%w: method %q is not an upper-case token", ErrInvalidConfig, meth)
			}
			m.methods = append(m.methods, meth)
		}
	}
	for _, h := range c.FingerprintHeaders {
		if !validHeaderName(h) {
			return nil, fmt.Errorf("%w: FingerprintHeaders: %q is not a header name", ErrInvalidConfig, h)
		}
		m.fpHeaders = append(m.fpHeaders, http.CanonicalHeaderKey(h))
	}
	replay := c.ReplayHeaders
	if replay == nil {
		replay = defaultReplayHeaders
	}
	for _, h := range replay {
		if !validHeaderName(h) {
			return nil, fmt.Errorf("%w: ReplayHeaders: %q is not a header name", ErrInvalidConfig, h)
		}
		ch := http.CanonicalHeaderKey(h)
		if ch == "Content-Length" || ch == HeaderReplayed {
			continue // computed on replay
		}
		m.replay = append(m.replay, ch)
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("%w: negative MaxBodyBytes %d", ErrInvalidConfig, c.MaxBodyBytes)
	}
	if c.UnavailableRetryAfter == 0 {
		c.UnavailableRetryAfter = time.Second
	}
	if c.UnavailableRetryAfter < 0 {
		return nil, fmt.Errorf("%w: negative UnavailableRetryAfter %v", ErrInvalidConfig, c.UnavailableRetryAfter)
	}
	m.retry = retryAfter(c.UnavailableRetryAfter)
	if c.Route == nil {
		c.Route = defaultRoute
	}
	m.bare = c.BareKeys
	if c.ErrorHandler == nil {
		c.ErrorHandler = DefaultErrorHandler
	}
	c.Methods, c.FingerprintHeaders, c.ReplayHeaders = nil, nil, nil // use the copies above
	m.cfg = c
	return m, nil
}

// Runner returns the transport-neutral core the middleware runs on, for
// workers in the same process.
func (m *Middleware) Runner() *Runner { return m.run }

// Stats returns the counters of the Runner underneath.
func (m *Middleware) Stats() Stats { return m.run.Stats() }

// defaultRoute scopes a record to the route pattern ([route.Pattern]), or
// to the method and the escaped path of an unrouted request.
func defaultRoute(r *http.Request) string {
	if p := route.Pattern(r); p != "" {
		return p
	}
	return r.Method + " " + r.URL.EscapedPath()
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTChar(s[i]) {
			return false
		}
	}
	return true
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Handler guards next. The middleware must see the route pattern, so wrap
// each route (mux.Handle("POST /transfers", m.Handler(h))) rather than the
// whole mux, or set Config.Route.
func (m *Middleware) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !slices.Contains(m.methods, r.Method) {
			next.ServeHTTP(w, r)
			return
		}
		vals := r.Header.Values(HeaderKey)
		if len(vals) == 0 {
			if m.cfg.Optional {
				next.ServeHTTP(w, r)
				return
			}
			m.fail(w, r, ErrKeyMissing)
			return
		}
		if len(vals) > 1 {
			m.fail(w, r, ErrKeyInvalid)
			return
		}
		parse := ParseKey
		if m.bare {
			parse = ParseBareKey
		}
		key, err := parse(vals[0])
		if err != nil {
			m.fail(w, r, err)
			return
		}
		var principal string
		if m.cfg.Principal != nil {
			p, ok := m.cfg.Principal(r)
			if !ok {
				m.fail(w, r, ErrNoPrincipal)
				return
			}
			principal = p
		}
		buf := bufPool.Get().(*bytes.Buffer)
		defer func() {
			if buf.Cap() <= 4*DefaultMaxResultBytes {
				buf.Reset()
				bufPool.Put(buf)
			}
		}()
		buf.Reset()
		if err := readBody(buf, r.Body, m.cfg.MaxBodyBytes); err != nil {
			m.fail(w, r, err)
			return
		}
		body := buf.Bytes()
		canon := body
		if m.cfg.Canonicalize != nil {
			if c, err := m.cfg.Canonicalize(r.Header.Get("Content-Type"), body); err == nil {
				canon = c
			}
		}
		fp := Fingerprint(canon, r.Header, m.fpHeaders...)
		skey := httpStoreKey(principal, r.Method, m.cfg.Route(r), key)

		lease, rec, err := m.run.begin(r.Context(), skey, fp)
		switch {
		case errors.Is(err, ErrUnavailable) && m.cfg.FailOpen:
			if m.cfg.OnStoreError != nil {
				m.cfg.OnStoreError(r, err)
			}
			next.ServeHTTP(w, withBody(r, r.Context(), body))
			return
		case err != nil:
			m.fail(w, r, err)
			return
		case lease == nil:
			WriteResult(w, r, rec.Result, true)
			return
		}
		m.execute(w, r, next, lease, body)
	})
}

func readBody(buf *bytes.Buffer, body io.Reader, limit int64) error {
	if body == nil || body == http.NoBody {
		return nil
	}
	n, err := buf.ReadFrom(io.LimitReader(body, limit+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return ErrBodyTooLarge
		}
		return ErrBodyUnreadable
	}
	if n > limit {
		return ErrBodyTooLarge
	}
	return nil
}

func withBody(r *http.Request, ctx context.Context, body []byte) *http.Request {
	r2 := r.WithContext(ctx)
	r2.Body = io.NopCloser(bytes.NewReader(body))
	r2.ContentLength = int64(len(body))
	return r2
}

// WriteError answers err the way the middleware does (Config.ErrorHandler,
// by default the problem+json mapping in the package documentation). A
// queue-fed endpoint that calls [Runner.Do] itself uses it so its 409, 422
// and 503 answers match the synchronous route's.
func (m *Middleware) WriteError(w http.ResponseWriter, r *http.Request, err error) {
	m.fail(w, r, err)
}

// fail sets the headers that belong to err's answer and calls the error
// handler.
func (m *Middleware) fail(w http.ResponseWriter, r *http.Request, err error) {
	var inflight *InFlightError
	switch {
	case errors.As(err, &inflight):
		w.Header().Set("Retry-After", retryAfter(inflight.RetryAfter))
	case errors.Is(err, ErrUnavailable):
		w.Header().Set("Retry-After", m.retry)
	case errors.Is(err, ErrBodyTooLarge):
		// The rest of an oversized body is not read: close the connection
		// rather than let it be parsed as the next request.
		w.Header().Set("Connection", "close")
	}
	m.cfg.ErrorHandler(w, r, err)
}

// WriteResult writes res as the middleware writes a stored response: the
// status (0 as 200), res.Header, Content-Length, the body, and
// Idempotent-Replayed: true when replayed. The header values are copied,
// so a later change to w's header cannot reach a stored record.
func WriteResult(w http.ResponseWriter, r *http.Request, res Result, replayed bool) {
	h := w.Header()
	for k, v := range res.Header {
		h[k] = slices.Clone(v)
	}
	if replayed {
		h[HeaderReplayed] = []string{"true"}
	}
	h["Content-Length"] = []string{strconv.Itoa(len(res.Body))}
	status := res.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(res.Body)
	}
}

// execute runs next under the lease, buffering the response so that the
// record is completed (or released) before a byte reaches the client.
func (m *Middleware) execute(w http.ResponseWriter, r *http.Request, next http.Handler, lease *Lease, body []byte) {
	ctx, stop := lease.watch(r.Context())
	defer stop()
	out := bufPool.Get().(*bytes.Buffer)
	out.Reset()
	rec := &recorder{w: w, m: m, lease: lease, r: r, buf: out}
	defer func() {
		if out.Cap() <= 4*DefaultMaxResultBytes {
			out.Reset()
			bufPool.Put(out)
		}
	}()
	panicked := true
	defer func() {
		if panicked {
			lease.release(r.Context())
		}
	}()
	next.ServeHTTP(rec, withBody(r, ctx, body))
	panicked = false
	rec.finish()
}

// recorder buffers a guarded handler's response. Until the record is
// finished nothing reaches the client; Flush is deferred and Hijack is
// not supported (http.ResponseController reports ErrNotSupported);
// deadlines pass through.
type recorder struct {
	w           http.ResponseWriter
	m           *Middleware
	lease       *Lease
	r           *http.Request
	buf         *bytes.Buffer
	status      int
	wroteHeader bool
	passthrough bool // the record is finished; writes go straight to w
}

func (rw *recorder) Header() http.Header { return rw.w.Header() }

func (rw *recorder) WriteHeader(code int) {
	if rw.wroteHeader {
		return
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		rw.w.WriteHeader(code) // informational: sent, not recorded
		return
	}
	rw.wroteHeader = true
	rw.status = code
}

func (rw *recorder) Write(p []byte) (int, error) {
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
	if rw.passthrough {
		return rw.w.Write(p)
	}
	if rw.buf.Len()+len(p) > rw.m.run.cfg.MaxResultBytes {
		// Too large to replay: finish the record as not replayable, then
		// stream what the handler wrote and everything after it.
		rw.settle(false)
		if _, err := rw.w.Write(rw.buf.Bytes()); err != nil {
			return 0, err
		}
		return rw.w.Write(p)
	}
	return rw.buf.Write(p)
}

// Flush is deferred until the record is finished; after that it flushes.
func (rw *recorder) Flush() { _ = rw.FlushError() }

// FlushError is Flush for http.ResponseController.
func (rw *recorder) FlushError() error {
	if !rw.passthrough {
		return nil
	}
	return http.NewResponseController(rw.w).Flush()
}

// SetReadDeadline, SetWriteDeadline and EnableFullDuplex reach the
// underlying writer for http.ResponseController (Unwrap is deliberately
// absent: it would let Flush bypass the buffer).
func (rw *recorder) SetReadDeadline(t time.Time) error {
	return http.NewResponseController(rw.w).SetReadDeadline(t)
}

func (rw *recorder) SetWriteDeadline(t time.Time) error {
	return http.NewResponseController(rw.w).SetWriteDeadline(t)
}

func (rw *recorder) EnableFullDuplex() error {
	return http.NewResponseController(rw.w).EnableFullDuplex()
}

// settle finishes the record (complete, or release on 5xx) and sends the
// header. replayable is false when the body overflowed the cap.
func (rw *recorder) settle(replayable bool) {
	rw.passthrough = true
	status := rw.status
	if status == 0 {
		status = http.StatusOK
	}
	if status >= 500 {
		rw.lease.release(rw.r.Context())
	} else {
		var err error
		if replayable {
			err = rw.lease.complete(rw.r.Context(), Result{Status: status, Header: rw.snapshot(), Body: rw.buf.Bytes()})
		} else {
			err = rw.lease.completeNotReplayable(rw.r.Context(), status)
		}
		if err != nil && rw.m.cfg.OnStoreError != nil {
			rw.m.cfg.OnStoreError(rw.r, err)
		}
	}
	rw.w.WriteHeader(status)
}

func (rw *recorder) snapshot() http.Header {
	src := rw.w.Header()
	var h http.Header
	for _, name := range rw.m.replay {
		if v := src[name]; len(v) > 0 {
			if h == nil {
				h = make(http.Header, len(rw.m.replay))
			}
			h[name] = slices.Clone(v)
		}
	}
	return h
}

// finish runs after the handler returned normally.
func (rw *recorder) finish() {
	if rw.passthrough {
		return
	}
	rw.settle(true)
	if rw.buf.Len() > 0 && rw.r.Method != http.MethodHead {
		_, _ = rw.w.Write(rw.buf.Bytes())
	}
}

func retryAfter(d time.Duration) string {
	s := int64(math.Ceil(d.Seconds()))
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(s, 10)
}

// Problems written by the default error handler; slugs are documented in
// docs/problems.md.
var (
	problemKeyMissing = problem.Problem{Status: http.StatusBadRequest, Type: "idempotency-key-missing",
		Title: "Idempotency-Key required", Detail: "This request must carry an Idempotency-Key header."}
	problemKeyInvalid = problem.Problem{Status: http.StatusBadRequest, Type: "idempotency-key-invalid",
		Title: "Invalid Idempotency-Key", Detail: "The Idempotency-Key must be one value of 1 to 255 printable ASCII characters, sent as a quoted string."}
	problemKeyReused = problem.Problem{Status: http.StatusUnprocessableEntity, Type: "idempotency-key-reused",
		Title: "Idempotency-Key reused", Detail: "This key was already used with a different request payload."}
	problemInFlight = problem.Problem{Status: http.StatusConflict, Type: "idempotency-in-flight",
		Title: "Request in progress", Detail: "A request with this key is still being processed; retry later."}
	problemNotReplayable = problem.Problem{Status: http.StatusConflict, Type: "idempotency-not-replayable",
		Title: "Response not replayable", Detail: "The request with this key completed, but its response was too large to store. It will not run again."}
	problemNoPrincipal = problem.Problem{Status: http.StatusUnauthorized, Type: "idempotency-unauthenticated",
		Title: "Unauthenticated", Detail: "Idempotent requests require an authenticated caller."}
	problemBodyTooLarge = problem.Problem{Status: http.StatusRequestEntityTooLarge, Type: "idempotency-body-too-large",
		Title: "Request body too large", Detail: "The request body exceeds the size accepted for idempotent requests."}
	problemBodyUnreadable = problem.Problem{Status: http.StatusBadRequest, Type: "idempotency-body-unreadable",
		Title: "Request body unreadable", Detail: "The request body could not be read."}
)

// DefaultErrorHandler is the ErrorHandler of a zero Config: problem+json
// with the status and type listed in the package documentation and a
// generic detail, never the error text. Retry-After is added for
// ErrInFlight and ErrUnavailable when the caller has not set it (the
// middleware sets it before calling any ErrorHandler).
func DefaultErrorHandler(w http.ResponseWriter, r *http.Request, err error) {
	var inflight *InFlightError
	setRetry := func(v string) {
		if w.Header().Get("Retry-After") == "" {
			w.Header().Set("Retry-After", v)
		}
	}
	switch {
	case errors.As(err, &inflight):
		setRetry(retryAfter(inflight.RetryAfter))
		problem.Write(w, r, problemInFlight)
	case errors.Is(err, ErrKeyMissing):
		problem.Write(w, r, problemKeyMissing)
	case errors.Is(err, ErrKeyInvalid):
		problem.Write(w, r, problemKeyInvalid)
	case errors.Is(err, ErrKeyReused):
		problem.Write(w, r, problemKeyReused)
	case errors.Is(err, ErrNotReplayable):
		problem.Write(w, r, problemNotReplayable)
	case errors.Is(err, ErrNoPrincipal):
		problem.Write(w, r, problemNoPrincipal)
	case errors.Is(err, ErrBodyTooLarge):
		problem.Write(w, r, problemBodyTooLarge)
	case errors.Is(err, ErrBodyUnreadable):
		problem.Write(w, r, problemBodyUnreadable)
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrOutcomeUnknown):
		setRetry("1")
		problem.Write(w, r, problem.Unavailable)
	default:
		problem.Write(w, r, problem.Internal)
	}
}

// CanonicalJSON is a Config.Canonicalize function for JSON bodies
// (application/json and any +json type): object keys sorted, insignificant
// whitespace removed, numbers kept as written. Other content types pass
// through unchanged. Duplicate object keys keep the last value, as
// encoding/json does when a handler decodes the body.
func CanonicalJSON(contentType string, body []byte) ([]byte, error) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return body, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("idempotency: canonical JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("idempotency: canonical JSON: trailing data")
	}
	return json.Marshal(v)
}
