package rbac

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/casbin/casbin/v2"
	"github.com/malai-sec/malai/problem"
	"github.com/malai-sec/malai/route"
)

// Enforcer is the policy decision point the middleware calls. Every Casbin
// enforcer satisfies it. The middleware calls Enforce(sub, obj, act), or
// Enforce(sub, dom, obj, act) when [Config].Domain is set, with strings.
// Enforce must be safe for concurrent use.
//
// When the enforcer also has EnforceEx (all Casbin enforcers do) and
// [Config].OnDecision is set, the middleware calls EnforceEx instead so
// that the decision carries the policy line that matched.
type Enforcer interface {
	Enforce(rvals ...any) (bool, error)
}

// explainer is the optional EnforceEx method of Casbin enforcers.
type explainer interface {
	EnforceEx(rvals ...any) (bool, []string, error)
}

// policyLoader is the optional LoadPolicy method of Casbin enforcers.
type policyLoader interface {
	LoadPolicy() error
}

// Errors passed to [Config].ErrorHandler, and returned by [New] and
// [Middleware.Reload]. Match them with errors.Is.
var (
	// ErrNoSubject: the Subject function found no verified subject (401).
	ErrNoSubject = errors.New("rbac: no verified subject")
	// ErrNoRoute: the request matched no route pattern, so there is no
	// object to authorise (403).
	ErrNoRoute = errors.New("rbac: request matched no route pattern")
	// ErrNoDomain: Domain is configured and found no domain (403).
	ErrNoDomain = errors.New("rbac: no domain for request")
	// ErrNoAction: the Action function returned "" (403).
	ErrNoAction = errors.New("rbac: no action for request")
	// ErrForbidden: no policy line allows the request (403).
	ErrForbidden = errors.New("rbac: forbidden by policy")
	// ErrEnforcer: the enforcer returned an error; the request is refused
	// (503, fail closed). The enforcer's error is wrapped.
	ErrEnforcer = errors.New("rbac: enforcer failed")
	// ErrInvalidConfig: [New] was given an invalid Config.
	ErrInvalidConfig = errors.New("rbac: invalid config")
	// ErrConfig is the former name of ErrInvalidConfig (the same value).
	//
	// Deprecated: use ErrInvalidConfig.
	ErrConfig = ErrInvalidConfig
	// ErrReload: [Middleware.Reload] could not reload the policy; the
	// previous policy and its cached decisions stay in force.
	ErrReload = errors.New("rbac: reload failed")
)

// Reason says why a [Decision] came out as it did.
type Reason string

const (
	// ReasonAllowed: a policy line allows the request.
	ReasonAllowed Reason = "allowed"
	// ReasonDenied: no policy line allows the request.
	ReasonDenied Reason = "denied"
	// ReasonNoSubject: no verified subject; see [ErrNoSubject].
	ReasonNoSubject Reason = "no_subject"
	// ReasonNoRoute: no route pattern matched; see [ErrNoRoute].
	ReasonNoRoute Reason = "no_route"
	// ReasonNoDomain: no domain; see [ErrNoDomain].
	ReasonNoDomain Reason = "no_domain"
	// ReasonNoAction: no action; see [ErrNoAction].
	ReasonNoAction Reason = "no_action"
	// ReasonError: the enforcer failed; see [ErrEnforcer].
	ReasonError Reason = "enforcer_error"
)

// Decision is one authorisation decision, as given to
// [Config].OnDecision. It is a plain value, ready for an audit record;
// the zero Decision is a refusal (Allowed is false).
type Decision struct {
	// Allowed is true only when Reason is ReasonAllowed.
	Allowed bool
	Reason  Reason
	// Subject, Domain, Object and Action are the request values the
	// decision was made on. Object and Action are filled whenever the
	// request has them, even when the subject is missing; Subject and
	// Domain are empty when Reason says they were missing, and Domain is
	// empty when Config.Domain is nil.
	Subject string
	Domain  string
	Object  string
	Action  string
	// Policy is the policy line that allowed the request, fields joined
	// by ", " as in a policy CSV ("role:teller, /accounts/{id}, GET").
	// It is empty for a denial, and when OnDecision is nil or the
	// enforcer has no EnforceEx.
	Policy string
	// Cached reports that the decision came from the decision cache.
	Cached bool
	// Err is the enforcer's error when Reason is ReasonError, else nil.
	Err error
}

// DefaultCacheSize is the decision cache capacity when
// [Config].CacheSize is zero.
const DefaultCacheSize = 10_000

// Config configures [New]. Enforcer and Subject are required; every other
// field has a strict default.
type Config struct {
	// Enforcer decides. Required. [NewEnforcer] and [NewFileEnforcer]
	// build one from an embedded model; any Casbin enforcer works.
	Enforcer Enforcer

	// Subject returns the verified subject of the request, normally read
	// from the claims a JWT verifier put in the context. Required. When
	// it returns false or "", the request is refused with 401.
	//
	// The subject must never be able to equal a role name, or a user
	// whose token says "sub": "role:admin" would hold that role's grants.
	// Prefix subjects by kind with [UserSubject] and [ServiceSubject], and
	// name roles "role:…".
	Subject func(*http.Request) (string, bool)

	// Domain returns the request's domain (tenant) for the
	// [RBACWithDomains] model. Nil: no domain, Enforce gets three values.
	// When set and it returns false or "", the request is refused (403).
	// Domains usually come from the token, not from the URL; if they come
	// from the URL, every tenant name a client sends is a distinct cache
	// key (the cache stays bounded, but churns).
	Domain func(*http.Request) (string, bool)

	// Object returns the object to authorise. Nil: the route pattern that
	// matched, without its method ([PatternObject]): "/accounts/{id}" for
	// the pattern "GET /accounts/{id}". When it returns "", the request
	// is refused (403). Objects should come from a bounded set (route
	// patterns), never from raw paths.
	Object func(*http.Request) string

	// Action returns the action to authorise. Nil: the request method,
	// as sent ("HEAD" is not "GET"). When it returns "", the request is
	// refused (403).
	Action func(*http.Request) string

	// OnDecision, if set, receives every decision, allowed or not, before
	// the response is written. It runs on the request's goroutine: keep
	// it fast and do not modify the request. With OnDecision set and an
	// enforcer that has EnforceEx, decisions carry the matched policy
	// line.
	OnDecision func(*http.Request, Decision)

	// ErrorHandler writes the response when a request is refused; err is
	// one of the Err values above (ErrEnforcer wrapping the cause). Nil:
	// application/problem+json, 401 "unauthenticated" with
	// WWW-Authenticate for ErrNoSubject, 503 "service-unavailable" for
	// ErrEnforcer, and otherwise the same 403 "forbidden" whatever the
	// reason, so a client cannot tell an unknown route from a denied one
	// or learn anything about the policy.
	ErrorHandler func(http.ResponseWriter, *http.Request, error)

	// CacheSize is the number of decisions kept. Zero means
	// DefaultCacheSize; it must otherwise be at least 2. Decisions are
	// cached by (subject, domain, object, action).
	CacheSize int

	// DisableCache turns the decision cache off: every request calls the
	// enforcer. Use it when the policy changes behind the middleware's
	// back (through the enforcer's management API) and calling
	// [Middleware.InvalidateCache] after each change is impractical.
	DisableCache bool
}

// Middleware enforces the policy on every request it wraps. It is safe
// for concurrent use, including Reload and InvalidateCache while requests
// run. The zero value is not usable; build one with [New].
type Middleware struct {
	enf      Enforcer
	ex       explainer // nil unless OnDecision is set and enf has EnforceEx
	subject  func(*http.Request) (string, bool)
	domain   func(*http.Request) (string, bool)
	object   func(*http.Request) string
	action   func(*http.Request) string
	onDec    func(*http.Request, Decision)
	onErr    func(http.ResponseWriter, *http.Request, error)
	size     int
	noCache  bool
	cache    atomic.Pointer[decisionCache]
	reloadMu sync.Mutex
}

// New validates cfg and returns the middleware. cfg is not modified.
func New(cfg Config) (*Middleware, error) {
	if cfg.Enforcer == nil {
		return nil, fmt.Errorf("%w: Enforcer is required", ErrInvalidConfig)
	}
	if cfg.Subject == nil {
		return nil, fmt.Errorf("%w: Subject is required", ErrInvalidConfig)
	}
	if cfg.CacheSize < 0 || cfg.CacheSize == 1 {
		return nil, fmt.Errorf("%w: CacheSize must be 0 (default) or at least 2", ErrInvalidConfig)
	}
	m := &Middleware{
		enf:     cfg.Enforcer,
		subject: cfg.Subject,
		domain:  cfg.Domain,
		object:  cfg.Object,
		action:  cfg.Action,
		onDec:   cfg.OnDecision,
		onErr:   cfg.ErrorHandler,
		size:    cfg.CacheSize,
		noCache: cfg.DisableCache,
	}
	if m.object == nil {
		m.object = PatternObject
	}
	if m.action == nil {
		m.action = method
	}
	if m.onErr == nil {
		m.onErr = DefaultErrorHandler
	}
	if m.size == 0 {
		m.size = DefaultCacheSize
	}
	if m.onDec != nil {
		m.ex, _ = cfg.Enforcer.(explainer)
	}
	if !m.noCache {
		m.cache.Store(newDecisionCache(m.size))
	}
	return m, nil
}

func method(r *http.Request) string { return r.Method }

// PatternObject returns the route pattern of r ([route.Pattern]: resolved
// in front of the router by [route.Handler], or set by [http.ServeMux])
// without its method and the blanks after it: "/accounts/{id}" for "GET
// /accounts/{id}", "api.example.com/v1/" for "api.example.com/v1/"; a chi
// or gorilla/mux pattern ("/accounts/{id}") as it is. It returns "" when
// the request is unrouted: no route matched, or the middleware runs in
// front of the router with no resolver (see package route and
// [MuxObject]).
func PatternObject(r *http.Request) string { return patternObject(route.Pattern(r)) }

func patternObject(p string) string {
	// A pattern is "[METHOD ][HOST]/[PATH]", and ServeMux separates the
	// method with spaces or tabs. A blank before the first '/' ends the
	// method; a '/' first means there is no method. (A blank inside the
	// host or path is not a separator; ServeMux rejects such patterns.)
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '/':
			return p
		case ' ', '\t':
			j := i + 1
			for j < len(p) && (p[j] == ' ' || p[j] == '\t') {
				j++
			}
			return p[j:]
		}
	}
	return p
}

// MuxObject returns an Object function for a middleware that wraps a whole
// [http.ServeMux] rather than each route's handler. ServeMux sets
// r.Pattern only on the request it passes to the matched handler, so
// outside the mux the pattern is unknown; MuxObject asks mux which
// pattern the request will match ([http.ServeMux.Handler], one extra
// route lookup) and returns it without its method, or "" (denied) when
// nothing matches. Register every route before serving: the pattern is
// looked up before mux dispatches the request.
//
// Wrapping each route's handler inside the mux, with the default Object,
// is cheaper and needs no MuxObject.
func MuxObject(mux *http.ServeMux) func(*http.Request) string {
	return func(r *http.Request) string {
		if p := route.Pattern(r); p != "" {
			return patternObject(p)
		}
		_, p := mux.Handler(r)
		return patternObject(p)
	}
}

// UserSubject returns the subject for a user id: "user:" + id. Policies
// grant roles to users as "g, user:alice, role:teller".
func UserSubject(id string) string { return "user:" + id }

// ServiceSubject returns the subject for a service (an OAuth client
// authenticated with client credentials): "service:" + id. Policies grant
// roles to services as "g, service:worker, role:transfer-runner".
func ServiceSubject(id string) string { return "service:" + id }

// Handler returns next wrapped in the authorisation check. Only allowed
// requests reach next; every other request is answered by ErrorHandler.
//
// next must not be nil. With the default Object, Handler must wrap a
// route's handler inside the mux, where r.Pattern is set:
//
//	mux.Handle("GET /accounts/{id}", authz.Handler(getAccount))
func (m *Middleware) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := m.decide(r)
		if m.onDec != nil {
			m.onDec(r, d)
		}
		if d.Allowed {
			next.ServeHTTP(w, r)
			return
		}
		err := d.error()
		// The headers the answer needs are set before any ErrorHandler
		// runs, so a custom one keeps them.
		switch {
		case errors.Is(err, ErrNoSubject):
			w.Header().Set("WWW-Authenticate", "Bearer")
		case errors.Is(err, ErrEnforcer):
			w.Header().Set("Retry-After", "1")
		}
		m.onErr(w, r, err)
	})
}

func (m *Middleware) decide(r *http.Request) Decision {
	// Every refusal carries what is known of the request, for the audit
	// record; the checks run in the order of their status codes.
	d := Decision{Object: m.object(r), Action: m.action(r)}
	sub, ok := m.subject(r)
	if !ok || sub == "" {
		d.Reason = ReasonNoSubject
		return d
	}
	d.Subject = sub
	if m.domain != nil {
		dom, ok := m.domain(r)
		if !ok || dom == "" {
			d.Reason = ReasonNoDomain
			return d
		}
		d.Domain = dom
	}
	if d.Object == "" {
		d.Reason = ReasonNoRoute
		return d
	}
	if d.Action == "" {
		d.Reason = ReasonNoAction
		return d
	}
	k := key{d.Subject, d.Domain, d.Object, d.Action}

	// Load the cache before enforcing: if a reload swaps in a new cache
	// meanwhile, this decision lands in the discarded one.
	c := m.cache.Load()
	if c != nil {
		if e, hit := c.get(k); hit {
			d.Cached = true
			return d.with(e)
		}
	}
	e, err := m.enforce(k)
	if err != nil {
		d.Reason = ReasonError
		d.Err = err
		return d
	}
	if c != nil {
		c.put(k, e)
	}
	return d.with(e)
}

func (d Decision) with(e entry) Decision {
	d.Allowed = e.allowed
	if e.allowed {
		d.Reason = ReasonAllowed
		d.Policy = e.policy
	} else {
		d.Reason = ReasonDenied
	}
	return d
}

func (d Decision) error() error {
	switch d.Reason {
	case ReasonNoSubject:
		return ErrNoSubject
	case ReasonNoDomain:
		return ErrNoDomain
	case ReasonNoRoute:
		return ErrNoRoute
	case ReasonNoAction:
		return ErrNoAction
	case ReasonError:
		return fmt.Errorf("%w: %w", ErrEnforcer, d.Err)
	default:
		return ErrForbidden
	}
}

func (m *Middleware) enforce(k key) (entry, error) {
	var (
		ok      bool
		explain []string
		err     error
	)
	switch {
	case m.ex != nil && m.domain != nil:
		ok, explain, err = m.ex.EnforceEx(k.sub, k.dom, k.obj, k.act)
	case m.ex != nil:
		ok, explain, err = m.ex.EnforceEx(k.sub, k.obj, k.act)
	case m.domain != nil:
		ok, err = m.enf.Enforce(k.sub, k.dom, k.obj, k.act)
	default:
		ok, err = m.enf.Enforce(k.sub, k.obj, k.act)
	}
	if err != nil {
		return entry{}, err
	}
	e := entry{allowed: ok}
	if ok && len(explain) > 0 {
		e.policy = strings.Join(explain, ", ")
	}
	return e, nil
}

// Reload reloads the enforcer's policy from its adapter (when the
// enforcer has LoadPolicy) and then replaces the decision cache. Requests
// keep being served throughout: a Casbin SyncedEnforcer reads the new
// policy beside the old one and swaps it in under its lock. Every request
// that starts after Reload returns is decided on the new policy; requests
// already running may finish on the old one. If loading fails, the old
// policy and its cache stay in force and the error wraps [ErrReload].
//
// Reload refuses the unsynchronised *casbin.Enforcer and
// *casbin.CachedEnforcer, whose LoadPolicy races with Enforce; use
// [NewEnforcer] or casbin.NewSyncedEnforcer. Concurrent Reloads run one at
// a time.
func (m *Middleware) Reload() error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	switch m.enf.(type) {
	case *casbin.Enforcer, *casbin.CachedEnforcer:
		return fmt.Errorf("%w: %T cannot load policy while enforcing; use a SyncedEnforcer", ErrReload, m.enf)
	}
	if l, ok := m.enf.(policyLoader); ok {
		if err := l.LoadPolicy(); err != nil {
			return fmt.Errorf("%w: %w", ErrReload, err)
		}
	}
	m.InvalidateCache()
	return nil
}

// InvalidateCache drops every cached decision, atomically: requests that
// start afterwards consult the enforcer again. Call it after changing the
// policy through the enforcer's own API (AddPolicy, AddRoleForUser…).
func (m *Middleware) InvalidateCache() {
	if m.noCache {
		return
	}
	m.cache.Store(newDecisionCache(m.size))
}

var forbidden = problem.Problem{
	Status: http.StatusForbidden,
	Type:   "forbidden",
	Title:  "Forbidden",
	Detail: "You do not have permission to perform this action.",
}

var unauthenticated = problem.Problem{
	Status: http.StatusUnauthorized,
	Type:   "unauthenticated",
	Title:  "Unauthenticated",
	Detail: "This request requires an authenticated subject.",
}

// DefaultErrorHandler is the ErrorHandler of a zero Config: problem+json,
// 401 "unauthenticated" for [ErrNoSubject], 503 "service-unavailable" for
// [ErrEnforcer], and otherwise the same 403 "forbidden" whatever the
// reason. The middleware has already set WWW-Authenticate (401) and
// Retry-After (503); called on its own, it sets them when missing.
func DefaultErrorHandler(w http.ResponseWriter, r *http.Request, err error) {
	setMissing := func(k, v string) {
		if w.Header().Get(k) == "" {
			w.Header().Set(k, v)
		}
	}
	switch {
	case errors.Is(err, ErrNoSubject):
		setMissing("WWW-Authenticate", "Bearer")
		problem.Write(w, r, unauthenticated)
	case errors.Is(err, ErrEnforcer):
		setMissing("Retry-After", "1")
		problem.Write(w, r, problem.Unavailable)
	default:
		problem.Write(w, r, forbidden)
	}
}
