package platform

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// Component names. A component's certificate names it (its subject common
// name), so these are also the names a route's Callers list.
const (
	Gateway  = "gateway"
	Identity = "identity"
	Ledger   = "ledger"
	Worker   = "worker"
	Web      = "web"
	// Evidence is the evidence pass playing a privileged client. No
	// runtime component has its certificate: the evidence command issues
	// one from the development CA when it runs.
	Evidence = "evidence"
	// Monitor is a metrics scraper: its certificate reaches /metrics on
	// every internal listener and nothing else.
	Monitor = "monitor"
	// Operator is an operator's command-line certificate (revoking a
	// component's key, rotating keys on a running system).
	Operator = "operator"
)

// Components are the runtime components, in start order (identity first:
// the others verify its tokens).
var Components = []string{Identity, Ledger, Worker, Web, Gateway}

// Token is the class of bearer token a route requires.
type Token uint8

const (
	// NoToken: the route takes no bearer token (sign-up, sign-in, JWKS).
	NoToken Token = iota
	// UserToken: a user access token (audience [AudienceUser]).
	UserToken
	// ServiceToken: a component's client-credentials token (audience
	// [AudienceService]).
	ServiceToken
)

func (t Token) String() string {
	switch t {
	case NoToken:
		return "none"
	case UserToken:
		return "user"
	case ServiceToken:
		return "service"
	}
	return fmt.Sprintf("Token(%d)", uint8(t))
}

// Audiences of the two token classes (identity issues them; every
// verifier checks them).
const (
	AudienceUser    = "malai-api"
	AudienceService = "malai-internal"
)

// Route is one row of a component's route table: everything the system
// needs to know about a route, written once. The component's internal
// listener serves it (admitting only Callers, verifying Token and Scope);
// the gateway mounts it when Public (checking Token and Scope first); the
// Casbin policy is checked against it.
type Route struct {
	// Pattern is the http.ServeMux pattern, method first:
	// "POST /v1/transfers", "GET /v1/accounts/{id}".
	Pattern string
	// Token is the bearer token class the route requires.
	Token Token
	// Scope, when set, must be granted to the token. Only with a token.
	Scope string
	// Public routes are mounted by the gateway at the same pattern and
	// forwarded to the component; the gateway's certificate is then an
	// allowed caller.
	Public bool
	// Callers are the other components whose client certificate the
	// route admits on the internal listener, besides the gateway for a
	// public route. A certificate naming any other component is refused
	// with 403 before the handler runs.
	Callers []string
	// MaxBody is the largest request body the route accepts, in bytes;
	// the gateway refuses a larger one before inspecting it. 0: the route
	// takes no body.
	MaxBody int64
	// MediaTypes are the body media types the route accepts; the gateway
	// refuses another (415) before inspecting it.
	MediaTypes []string
	// PasswordFields are the form or JSON fields that carry a password:
	// the WAF exempts them from its injection rules (a password may look
	// like anything) and the service validates them itself.
	PasswordFields []string
	// Report marks a CSP report endpoint: the WAF admits the browsers'
	// report media types there.
	Report bool
	// Cacheable marks a public document (a key set, metadata) whose
	// handler's Cache-Control is kept by both header layers; every other
	// response is no-store.
	Cacheable bool
	// Handler serves the route. Nil in a table read only for its data
	// (the gateway's copy, the policy test).
	Handler http.Handler
}

// Method and Path split the pattern.
func (r Route) Method() string { m, _, _ := strings.Cut(r.Pattern, " "); return m }

// Path is the pattern's path ("/v1/accounts/{id}"), the Casbin object.
func (r Route) Path() string { _, p, _ := strings.Cut(r.Pattern, " "); return p }

// Scopes is the route's required scopes as a list (empty: none).
func (r Route) Scopes() []string {
	if r.Scope == "" {
		return nil
	}
	return []string{r.Scope}
}

// Admits reports whether a caller with a certificate naming component may
// call the route.
func (r Route) Admits(component string) bool {
	return component != "" && ((r.Public && component == Gateway) || slices.Contains(r.Callers, component))
}

// Table is a component's route table.
type Table []Route

// Validate checks a table: method-qualified unique patterns, a scope only
// with a token, no public service-token route, known caller names, and a
// handler on every route when handlers are required.
func (t Table) Validate(needHandlers bool) error {
	seen := map[string]bool{}
	var errs []error
	for _, r := range t {
		m, p, ok := strings.Cut(r.Pattern, " ")
		if !ok || m == "" || !strings.HasPrefix(p, "/") {
			errs = append(errs, fmt.Errorf("%q: a pattern is \"METHOD /path\"", r.Pattern))
		}
		if seen[r.Pattern] {
			errs = append(errs, fmt.Errorf("%q: listed twice", r.Pattern))
		}
		seen[r.Pattern] = true
		if r.Scope != "" && r.Token == NoToken {
			errs = append(errs, fmt.Errorf("%q: a scope needs a token class", r.Pattern))
		}
		if r.Public && r.Token == ServiceToken {
			errs = append(errs, fmt.Errorf("%q: a service-token route cannot be public", r.Pattern))
		}
		if !r.Public && len(r.Callers) == 0 {
			errs = append(errs, fmt.Errorf("%q: an internal route needs callers", r.Pattern))
		}
		for _, c := range r.Callers {
			if !knownCaller(c) {
				errs = append(errs, fmt.Errorf("%q: unknown caller %q", r.Pattern, c))
			}
		}
		if needHandlers && r.Handler == nil {
			errs = append(errs, fmt.Errorf("%q: no handler", r.Pattern))
		}
	}
	return errors.Join(errs...)
}

func knownCaller(c string) bool {
	return slices.Contains(Components, c) || c == Evidence || c == Monitor || c == Operator
}

// Public returns the public routes, without handlers: what the gateway
// mounts.
func (t Table) Public() Table {
	var out Table
	for _, r := range t {
		if r.Public {
			r.Handler = nil
			out = append(out, r)
		}
	}
	return out
}

// Data returns the table without handlers.
func (t Table) Data() Table {
	out := slices.Clone(t)
	for i := range out {
		out[i].Handler = nil
	}
	return out
}

// CacheablePaths are the paths of the table's Cacheable routes.
func (t Table) CacheablePaths() []string {
	var out []string
	for _, r := range t {
		if r.Cacheable {
			out = append(out, r.Path())
		}
	}
	return out
}

// Lookup returns the route with pattern p.
func (t Table) Lookup(p string) (Route, bool) {
	i := slices.IndexFunc(t, func(r Route) bool { return r.Pattern == p })
	if i < 0 {
		return Route{}, false
	}
	return t[i], true
}

// Binding ties a row of a domain's route table to the handler it serves,
// built from the domain's service S at start. Declaring the table as
// []Binding keeps each route in one place while the table stays readable
// without a running service ([Declare]).
type Binding[S any] struct {
	Route
	Bind func(S) http.Handler
}

// Declare returns the table's data (no handlers).
func Declare[S any](bs []Binding[S]) Table {
	t := make(Table, len(bs))
	for i, b := range bs {
		t[i] = b.Route
		t[i].Handler = nil
	}
	return t
}

// Bind returns the table with every handler built from s.
func Bind[S any](bs []Binding[S], s S) Table {
	t := make(Table, len(bs))
	for i, b := range bs {
		t[i] = b.Route
		if b.Bind != nil {
			t[i].Handler = b.Bind(s)
		}
	}
	return t
}

// HandlerFunc adapts a method expression, (*Service).transfer, to a
// Binding's Bind.
func HandlerFunc[S any](f func(S, http.ResponseWriter, *http.Request)) func(S) http.Handler {
	return func(s S) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f(s, w, r) })
	}
}
