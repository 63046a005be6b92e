package rbac_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/casbin/casbin/v2"
	stringadapter "github.com/casbin/casbin/v2/persist/string-adapter"
	"github.com/google/go-cmp/cmp"
	"github.com/malai-sec/malai/internal/reqid"
	"github.com/malai-sec/malai/rbac"
	"github.com/malai-sec/malai/route"
)

// principal stands in for the verified claims a JWT verifier puts in the
// context.
type principal struct {
	id      string
	service bool
	tenant  string
}

type principalKey struct{}

func withPrincipal(r *http.Request, p principal) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
}

func subject(r *http.Request) (string, bool) {
	p, ok := r.Context().Value(principalKey{}).(principal)
	if !ok || p.id == "" {
		return "", false
	}
	if p.service {
		return rbac.ServiceSubject(p.id), true
	}
	return rbac.UserSubject(p.id), true
}

func tenant(r *http.Request) (string, bool) {
	p, ok := r.Context().Value(principalKey{}).(principal)
	return p.tenant, ok && p.tenant != ""
}

// recorder collects decisions from OnDecision.
type recorder struct {
	mu sync.Mutex
	ds []rbac.Decision
}

func (rec *recorder) on(_ *http.Request, d rbac.Decision) {
	rec.mu.Lock()
	rec.ds = append(rec.ds, d)
	rec.mu.Unlock()
}

func (rec *recorder) last(t *testing.T) rbac.Decision {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.ds) == 0 {
		t.Fatal("OnDecision was not called")
	}
	return rec.ds[len(rec.ds)-1]
}

func fileEnforcer(t testing.TB, m rbac.Model, path string) *casbin.SyncedEnforcer {
	t.Helper()
	e, err := rbac.NewFileEnforcer(m, path)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// routes wraps every route's handler in authz, as the reference service
// does; reached counts the requests that got through.
func routes(authz *rbac.Middleware, reached *atomic.Int64) *http.ServeMux {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		w.WriteHeader(http.StatusOK)
	})
	mux := http.NewServeMux()
	mux.Handle("GET /accounts/{id}", authz.Handler(ok))
	mux.Handle("HEAD /accounts/{id}", authz.Handler(ok))
	mux.Handle("POST /transfers", authz.Handler(ok))
	mux.Handle("GET /audit", authz.Handler(ok))
	return mux
}

type problemBody struct {
	Type          string `json:"type"`
	Title         string `json:"title"`
	Status        int    `json:"status"`
	Detail        string `json:"detail"`
	CorrelationID string `json:"correlation_id"`
}

func decodeProblem(t *testing.T, rr *httptest.ResponseRecorder) problemBody {
	t.Helper()
	if ct := rr.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json", ct)
	}
	var p problemBody
	if err := json.Unmarshal(rr.Body.Bytes(), &p); err != nil {
		t.Fatalf("problem body %q: %v", rr.Body.String(), err)
	}
	return p
}

func TestHandlerRBAC(t *testing.T) {
	tests := []struct {
		name       string
		who        *principal
		method     string
		path       string
		wantStatus int
		wantReason rbac.Reason
		wantPolicy string
	}{
		{"role granted directly", &principal{id: "bob"}, "GET", "/accounts/7", 200, rbac.ReasonAllowed, "role:viewer, /accounts/{id}, GET"},
		{"role inherited two levels", &principal{id: "alice"}, "GET", "/accounts/7", 200, rbac.ReasonAllowed, "role:viewer, /accounts/{id}, GET"},
		{"role inherited one level", &principal{id: "alice"}, "POST", "/transfers", 200, rbac.ReasonAllowed, "role:teller, /transfers, POST"},
		{"service holds a role", &principal{id: "worker", service: true}, "POST", "/transfers", 200, rbac.ReasonAllowed, "role:teller, /transfers, POST"},
		{"service inherits a role", &principal{id: "worker", service: true}, "GET", "/accounts/9", 200, rbac.ReasonAllowed, "role:viewer, /accounts/{id}, GET"},
		{"role lacks the action", &principal{id: "bob"}, "POST", "/transfers", 403, rbac.ReasonDenied, ""},
		{"no role grants the route", &principal{id: "alice"}, "GET", "/audit", 403, rbac.ReasonDenied, ""},
		{"unknown user", &principal{id: "mallory"}, "GET", "/accounts/7", 403, rbac.ReasonDenied, ""},
		{"user named like a service", &principal{id: "worker"}, "POST", "/transfers", 403, rbac.ReasonDenied, ""},
		{"user named like a role", &principal{id: "role:admin"}, "POST", "/transfers", 403, rbac.ReasonDenied, ""},
		{"HEAD is not GET", &principal{id: "bob"}, "HEAD", "/accounts/7", 403, rbac.ReasonDenied, ""},
		{"missing subject", nil, "GET", "/accounts/7", 401, rbac.ReasonNoSubject, ""},
		{"empty subject", &principal{}, "GET", "/accounts/7", 401, rbac.ReasonNoSubject, ""},
	}
	var rec recorder
	authz, err := rbac.New(rbac.Config{
		Enforcer:   fileEnforcer(t, rbac.RBAC, "testdata/policy.csv"),
		Subject:    subject,
		OnDecision: rec.on,
	})
	if err != nil {
		t.Fatal(err)
	}
	var reached atomic.Int64
	mux := routes(authz, &reached)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Twice: the second answer comes from the cache and must agree.
			for i, cached := range []bool{false, true} {
				before := reached.Load()
				req := httptest.NewRequest(tt.method, tt.path, nil)
				if tt.who != nil {
					req = withPrincipal(req, *tt.who)
				}
				rr := httptest.NewRecorder()
				mux.ServeHTTP(rr, req)
				if rr.Code != tt.wantStatus {
					t.Fatalf("round %d: status = %d, want %d", i, rr.Code, tt.wantStatus)
				}
				if got, want := reached.Load()-before, int64(0); tt.wantStatus == 200 {
					if got != 1 {
						t.Fatalf("round %d: handler ran %d times, want 1", i, got)
					}
				} else if got != want {
					t.Fatalf("round %d: refused request reached the handler", i)
				}
				d := rec.last(t)
				if d.Reason != tt.wantReason || d.Allowed != (tt.wantStatus == 200) || d.Policy != tt.wantPolicy {
					t.Fatalf("round %d: decision = %+v, want reason %q policy %q", i, d, tt.wantReason, tt.wantPolicy)
				}
				if tt.wantReason == rbac.ReasonAllowed || tt.wantReason == rbac.ReasonDenied {
					if d.Cached != cached {
						t.Fatalf("round %d: Cached = %v, want %v", i, d.Cached, cached)
					}
					if d.Object != strings.TrimPrefix(strings.TrimPrefix(req.Pattern, "GET "), "HEAD ") &&
						d.Object != strings.TrimPrefix(req.Pattern, "POST ") {
						t.Fatalf("round %d: Object = %q for pattern %q", i, d.Object, req.Pattern)
					}
					if d.Action != tt.method {
						t.Fatalf("round %d: Action = %q, want %q", i, d.Action, tt.method)
					}
				}
			}
		})
	}
}

func TestHandlerRBACWithDomains(t *testing.T) {
	tests := []struct {
		name       string
		who        principal
		method     string
		path       string
		wantStatus int
		wantReason rbac.Reason
		wantPolicy string
	}{
		{"role in its domain", principal{id: "alice", tenant: "tenant-a"}, "POST", "/transfers", 200, rbac.ReasonAllowed, "role:teller, tenant-a, /transfers, POST"},
		{"inherited role in its domain", principal{id: "alice", tenant: "tenant-a"}, "GET", "/accounts/1", 200, rbac.ReasonAllowed, "role:viewer, tenant-a, /accounts/{id}, GET"},
		{"lesser role in another domain", principal{id: "alice", tenant: "tenant-b"}, "GET", "/accounts/1", 200, rbac.ReasonAllowed, "role:viewer, tenant-b, /accounts/{id}, GET"},
		{"role does not cross domains", principal{id: "alice", tenant: "tenant-b"}, "POST", "/transfers", 403, rbac.ReasonDenied, ""},
		{"service role in its domain", principal{id: "worker", service: true, tenant: "tenant-b"}, "GET", "/accounts/1", 200, rbac.ReasonAllowed, "role:viewer, tenant-b, /accounts/{id}, GET"},
		{"service role not in other domain", principal{id: "worker", service: true, tenant: "tenant-a"}, "POST", "/transfers", 403, rbac.ReasonDenied, ""},
		{"unknown domain", principal{id: "alice", tenant: "tenant-z"}, "GET", "/accounts/1", 403, rbac.ReasonDenied, ""},
		{"missing domain", principal{id: "alice"}, "GET", "/accounts/1", 403, rbac.ReasonNoDomain, ""},
	}
	var rec recorder
	authz, err := rbac.New(rbac.Config{
		Enforcer:   fileEnforcer(t, rbac.RBACWithDomains, "testdata/policy_domains.csv"),
		Subject:    subject,
		Domain:     tenant,
		OnDecision: rec.on,
	})
	if err != nil {
		t.Fatal(err)
	}
	var reached atomic.Int64
	mux := routes(authz, &reached)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for round := range 2 {
				rr := httptest.NewRecorder()
				mux.ServeHTTP(rr, withPrincipal(httptest.NewRequest(tt.method, tt.path, nil), tt.who))
				if rr.Code != tt.wantStatus {
					t.Fatalf("round %d: status = %d, want %d", round, rr.Code, tt.wantStatus)
				}
				d := rec.last(t)
				if d.Reason != tt.wantReason || d.Policy != tt.wantPolicy {
					t.Fatalf("round %d: decision = %+v, want reason %q policy %q", round, d, tt.wantReason, tt.wantPolicy)
				}
				if tt.wantReason != rbac.ReasonNoDomain && d.Domain != tt.who.tenant {
					t.Fatalf("round %d: Domain = %q, want %q", round, d.Domain, tt.who.tenant)
				}
			}
		})
	}
}

// TestRefusalBodies checks the status, problem type and headers of each
// refusal, and that no body reveals the subject, the route or the policy.
func TestRefusalBodies(t *testing.T) {
	failing := enforcerFunc(func(...any) (bool, error) {
		return false, errors.New("adapter: dial tcp 10.0.0.7:5432: secret-dsn")
	})
	tests := []struct {
		name     string
		enf      rbac.Enforcer
		who      *principal
		wantCode int
		wantType string
		wantHdr  map[string]string
	}{
		{"denied", fileEnforcer(t, rbac.RBAC, "testdata/policy.csv"), &principal{id: "bob"}, 403, "forbidden", nil},
		{"no subject", fileEnforcer(t, rbac.RBAC, "testdata/policy.csv"), nil, 401, "unauthenticated", map[string]string{"WWW-Authenticate": "Bearer"}},
		{"enforcer error", failing, &principal{id: "bob"}, 503, "service-unavailable", map[string]string{"Retry-After": "1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			authz, err := rbac.New(rbac.Config{Enforcer: tt.enf, Subject: subject})
			if err != nil {
				t.Fatal(err)
			}
			var reached atomic.Int64
			req := httptest.NewRequest("POST", "/transfers", nil)
			req = req.WithContext(reqid.NewContext(req.Context(), "req-123"))
			if tt.who != nil {
				req = withPrincipal(req, *tt.who)
			}
			rr := httptest.NewRecorder()
			routes(authz, &reached).ServeHTTP(rr, req)
			if rr.Code != tt.wantCode {
				t.Fatalf("status = %d, want %d", rr.Code, tt.wantCode)
			}
			if reached.Load() != 0 {
				t.Fatal("refused request reached the handler")
			}
			p := decodeProblem(t, rr)
			if !strings.HasSuffix(p.Type, "#"+tt.wantType) || p.Status != tt.wantCode || p.CorrelationID != "req-123" {
				t.Fatalf("problem = %+v, want type %q status %d", p, tt.wantType, tt.wantCode)
			}
			for h, v := range tt.wantHdr {
				if got := rr.Header().Get(h); got != v {
					t.Fatalf("%s = %q, want %q", h, got, v)
				}
			}
			for _, secret := range []string{"bob", "transfers", "role:", "secret-dsn", "10.0.0.7", "policy"} {
				if strings.Contains(rr.Body.String(), secret) {
					t.Fatalf("body reveals %q: %s", secret, rr.Body.String())
				}
			}
		})
	}
}

type enforcerFunc func(...any) (bool, error)

func (f enforcerFunc) Enforce(rvals ...any) (bool, error) { return f(rvals...) }

func TestEnforcerFailure(t *testing.T) {
	cause := errors.New("boom")
	var calls atomic.Int64
	failing := enforcerFunc(func(...any) (bool, error) { calls.Add(1); return false, cause })
	// A domain model called without a domain makes Casbin itself fail.
	domainModel := fileEnforcer(t, rbac.RBACWithDomains, "testdata/policy_domains.csv")

	for _, tc := range []struct {
		name string
		enf  rbac.Enforcer
		want error
	}{
		{"enforcer returns an error", failing, cause},
		{"request arity mismatch", domainModel, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rec recorder
			var gotErr error
			authz, err := rbac.New(rbac.Config{
				Enforcer:     tc.enf,
				Subject:      subject,
				OnDecision:   rec.on,
				ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) { gotErr = err; w.WriteHeader(599) },
			})
			if err != nil {
				t.Fatal(err)
			}
			var reached atomic.Int64
			mux := routes(authz, &reached)
			for round := range 2 {
				rr := httptest.NewRecorder()
				mux.ServeHTTP(rr, withPrincipal(httptest.NewRequest("GET", "/accounts/1", nil), principal{id: "alice"}))
				if rr.Code != 599 || reached.Load() != 0 {
					t.Fatalf("round %d: status %d reached %d; want refusal through ErrorHandler", round, rr.Code, reached.Load())
				}
				if !errors.Is(gotErr, rbac.ErrEnforcer) || (tc.want != nil && !errors.Is(gotErr, tc.want)) {
					t.Fatalf("round %d: ErrorHandler got %v", round, gotErr)
				}
				d := rec.last(t)
				if d.Allowed || d.Reason != rbac.ReasonError || d.Err == nil || d.Cached {
					t.Fatalf("round %d: decision = %+v", round, d)
				}
			}
			if tc.want != nil && calls.Load() != 2 {
				t.Fatalf("enforcer called %d times; errors must not be cached", calls.Load())
			}
		})
	}
}

func TestErrorHandlerErrors(t *testing.T) {
	enf := fileEnforcer(t, rbac.RBACWithDomains, "testdata/policy_domains.csv")
	tests := []struct {
		name   string
		cfg    rbac.Config
		who    *principal
		method string
		want   error
	}{
		{"no subject", rbac.Config{}, nil, "GET", rbac.ErrNoSubject},
		{"no domain", rbac.Config{Domain: tenant}, &principal{id: "alice"}, "GET", rbac.ErrNoDomain},
		{"no route", rbac.Config{Domain: tenant, Object: func(*http.Request) string { return "" }}, &principal{id: "alice", tenant: "tenant-a"}, "GET", rbac.ErrNoRoute},
		{"no action", rbac.Config{Domain: tenant, Action: func(*http.Request) string { return "" }}, &principal{id: "alice", tenant: "tenant-a"}, "GET", rbac.ErrNoAction},
		{"forbidden", rbac.Config{Domain: tenant}, &principal{id: "alice", tenant: "tenant-b"}, "POST", rbac.ErrForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got error
			cfg := tt.cfg
			cfg.Enforcer, cfg.Subject = enf, subject
			cfg.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, err error) { got = err; w.WriteHeader(418) }
			authz, err := rbac.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var reached atomic.Int64
			req := httptest.NewRequest(tt.method, "/transfers", nil)
			if tt.method == "GET" {
				req = httptest.NewRequest("GET", "/accounts/1", nil)
			}
			if tt.who != nil {
				req = withPrincipal(req, *tt.who)
			}
			rr := httptest.NewRecorder()
			routes(authz, &reached).ServeHTTP(rr, req)
			if rr.Code != 418 || reached.Load() != 0 {
				t.Fatalf("status %d, reached %d", rr.Code, reached.Load())
			}
			if !errors.Is(got, tt.want) {
				t.Fatalf("ErrorHandler got %v, want %v", got, tt.want)
			}
			// A custom handler keeps the challenge the refusal needs.
			if wantAuth := errors.Is(tt.want, rbac.ErrNoSubject); (rr.Header().Get("WWW-Authenticate") == "Bearer") != wantAuth {
				t.Fatalf("WWW-Authenticate %q under a custom handler", rr.Header().Get("WWW-Authenticate"))
			}
		})
	}
}

// TestOutsideMux covers the middleware wrapped around a whole mux: with
// the default Object r.Pattern is empty there, so everything is refused;
// with MuxObject the pattern is looked up and an unknown route is refused.
func TestOutsideMux(t *testing.T) {
	enf := fileEnforcer(t, rbac.RBAC, "testdata/policy.csv")
	var reached atomic.Int64
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) })
	mux := http.NewServeMux()
	mux.Handle("GET /accounts/{id}", ok)
	mux.Handle("GET /public/", ok)

	tests := []struct {
		name       string
		object     func(*http.Request) string
		path       string
		wantStatus int
		wantReason rbac.Reason
		resolve    bool // route.Handler(route.ServeMux(mux)) in front
	}{
		{"default object outside the mux", nil, "/accounts/1", 403, rbac.ReasonNoRoute, false},
		{"route hook, known route", nil, "/accounts/1", 200, rbac.ReasonAllowed, true},
		{"route hook, unknown route", nil, "/nowhere", 403, rbac.ReasonNoRoute, true},
		{"route hook, route without grant", nil, "/public/x", 403, rbac.ReasonDenied, true},
		{"route hook, redirect to a granted route", nil, "/x/../accounts/1", 307, rbac.ReasonAllowed, true},
		{"route hook, redirect to a denied route", nil, "/x/../public/y", 403, rbac.ReasonDenied, true},
		{"MuxObject known route", rbac.MuxObject(mux), "/accounts/1", 200, rbac.ReasonAllowed, false},
		{"MuxObject unknown route", rbac.MuxObject(mux), "/nowhere", 403, rbac.ReasonNoRoute, false},
		{"MuxObject route without grant", rbac.MuxObject(mux), "/public/x", 403, rbac.ReasonDenied, false},
		// ServeMux answers an unclean path with a redirect to the cleaned
		// one; it is authorised as the route it leads to, and the
		// redirected request is checked again.
		{"MuxObject redirect to a granted route", rbac.MuxObject(mux), "/x/../accounts/1", 307, rbac.ReasonAllowed, false},
		{"MuxObject redirect to a denied route", rbac.MuxObject(mux), "/x/../public/y", 403, rbac.ReasonDenied, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec recorder
			authz, err := rbac.New(rbac.Config{Enforcer: enf, Subject: subject, Object: tt.object, OnDecision: rec.on})
			if err != nil {
				t.Fatal(err)
			}
			before := reached.Load()
			rr := httptest.NewRecorder()
			req := withPrincipal(httptest.NewRequest("GET", "/", nil), principal{id: "bob"})
			req.URL.Path = tt.path
			h := authz.Handler(mux)
			if tt.resolve {
				h = route.Handler(route.ServeMux(mux))(h)
			}
			h.ServeHTTP(rr, req)
			if rr.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d", rr.Code, tt.wantStatus)
			}
			if d := rec.last(t); d.Reason != tt.wantReason {
				t.Fatalf("decision = %+v, want reason %q", d, tt.wantReason)
			}
			if (reached.Load() > before) != (tt.wantStatus == 200) {
				t.Fatal("handler reached for a refused request, or not reached for an allowed one")
			}
		})
	}
}

func TestPatternObject(t *testing.T) {
	tests := []struct{ pattern, want string }{
		{"", ""},
		{"/", "/"},
		{"GET /accounts/{id}", "/accounts/{id}"},
		{"POST  /transfers", "/transfers"},
		{"GET\t/x", "/x"},
		{"example.com/v1/", "example.com/v1/"},
		{"DELETE example.com/v1/{id}", "example.com/v1/{id}"},
		{"/files/{path...}", "/files/{path...}"},
		{"/a b", "/a b"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		r.Pattern = tt.pattern
		if got := rbac.PatternObject(r); got != tt.want {
			t.Errorf("PatternObject(%q) = %q, want %q", tt.pattern, got, tt.want)
		}
	}
}

func TestNew(t *testing.T) {
	enf := enforcerFunc(func(...any) (bool, error) { return true, nil })
	tests := []struct {
		name string
		cfg  rbac.Config
		want error
	}{
		{"zero config", rbac.Config{}, rbac.ErrConfig},
		{"no enforcer", rbac.Config{Subject: subject}, rbac.ErrConfig},
		{"no subject", rbac.Config{Enforcer: enf}, rbac.ErrConfig},
		{"negative cache", rbac.Config{Enforcer: enf, Subject: subject, CacheSize: -1}, rbac.ErrConfig},
		{"cache of one", rbac.Config{Enforcer: enf, Subject: subject, CacheSize: 1}, rbac.ErrConfig},
		{"minimal", rbac.Config{Enforcer: enf, Subject: subject}, nil},
		{"cache of two", rbac.Config{Enforcer: enf, Subject: subject, CacheSize: 2}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			before := cfg
			m, err := rbac.New(cfg)
			if !errors.Is(err, tt.want) {
				t.Fatalf("New error = %v, want %v", err, tt.want)
			}
			if (m == nil) == (tt.want == nil) {
				t.Fatalf("New returned %v with error %v", m, err)
			}
			if cfg.CacheSize != before.CacheSize || (cfg.Object == nil) != (before.Object == nil) || (cfg.ErrorHandler == nil) != (before.ErrorHandler == nil) {
				t.Fatal("New modified the caller's Config")
			}
		})
	}
}

func TestNewEnforcer(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name  string
		model rbac.Model
		path  string
		want  error
	}{
		{"rbac", rbac.RBAC, "testdata/policy.csv", nil},
		{"domains", rbac.RBACWithDomains, "testdata/policy_domains.csv", nil},
		{"unknown model", rbac.Model(0), "testdata/policy.csv", rbac.ErrModel},
		{"empty path", rbac.RBAC, "", rbac.ErrPolicy},
		{"missing file", rbac.RBAC, filepath.Join(dir, "missing.csv"), rbac.ErrPolicy},
		{"line too short", rbac.RBAC, "testdata/policy_bad.csv", rbac.ErrPolicy},
		{"wrong model for policy", rbac.RBACWithDomains, "testdata/policy.csv", rbac.ErrPolicy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := rbac.NewFileEnforcer(tt.model, tt.path)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
			if (e == nil) == (tt.want == nil) {
				t.Fatalf("enforcer %v with error %v", e, err)
			}
		})
	}
	if _, err := rbac.NewEnforcer(rbac.RBAC, nil); !errors.Is(err, rbac.ErrPolicy) {
		t.Fatalf("nil adapter: %v", err)
	}
	if got := rbac.RBAC.String() + " " + rbac.RBACWithDomains.String(); got != "rbac rbac-with-domains" {
		t.Fatalf("model names = %q", got)
	}
	if rbac.Model(9).Text() != "" || !strings.Contains(rbac.RBACWithDomains.Text(), "r.dom == p.dom") {
		t.Fatal("model texts are wrong")
	}
}

// countingEnforcer counts calls that reach the real enforcer.
type countingEnforcer struct {
	*casbin.SyncedEnforcer
	n atomic.Int64
}

func (c *countingEnforcer) Enforce(rvals ...any) (bool, error) {
	c.n.Add(1)
	return c.SyncedEnforcer.Enforce(rvals...)
}

func (c *countingEnforcer) EnforceEx(rvals ...any) (bool, []string, error) {
	c.n.Add(1)
	return c.SyncedEnforcer.EnforceEx(rvals...)
}

func serve(h http.Handler, method, path string, who principal) int {
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, withPrincipal(httptest.NewRequest(method, path, nil), who))
	return rr.Code
}

func TestCacheAndInvalidate(t *testing.T) {
	for _, disable := range []bool{false, true} {
		t.Run(map[bool]string{false: "cache", true: "no cache"}[disable], func(t *testing.T) {
			enf := &countingEnforcer{SyncedEnforcer: fileEnforcer(t, rbac.RBAC, "testdata/policy.csv")}
			authz, err := rbac.New(rbac.Config{Enforcer: enf, Subject: subject, DisableCache: disable})
			if err != nil {
				t.Fatal(err)
			}
			var reached atomic.Int64
			mux := routes(authz, &reached)
			bob := principal{id: "bob"}
			// Different raw paths, one pattern: one cache entry.
			for i := range 5 {
				if code := serve(mux, "GET", "/accounts/"+string(rune('0'+i)), bob); code != 200 {
					t.Fatalf("status %d", code)
				}
			}
			want := int64(1)
			if disable {
				want = 5
			}
			if got := enf.n.Load(); got != want {
				t.Fatalf("enforcer called %d times for 5 requests on one pattern, want %d", got, want)
			}
			// A change through the enforcer's API is invisible to cached
			// decisions until InvalidateCache.
			if _, err := enf.DeletePermissionsForUser("role:viewer"); err != nil {
				t.Fatal(err)
			}
			wantStale := 200
			if disable {
				wantStale = 403
			}
			if code := serve(mux, "GET", "/accounts/1", bob); code != wantStale {
				t.Fatalf("before InvalidateCache: status %d, want %d", code, wantStale)
			}
			authz.InvalidateCache()
			if code := serve(mux, "GET", "/accounts/1", bob); code != 403 {
				t.Fatalf("after InvalidateCache: status %d, want 403", code)
			}
		})
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

const (
	policyV1 = "p, role:teller, /transfers, POST\ng, user:alice, role:teller\n"
	policyV2 = "p, role:teller, /transfers, POST\ng, user:bob, role:teller\n"
)

func TestReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.csv")
	writeFile(t, path, policyV1)
	authz, err := rbac.New(rbac.Config{Enforcer: fileEnforcer(t, rbac.RBAC, path), Subject: subject})
	if err != nil {
		t.Fatal(err)
	}
	var reached atomic.Int64
	mux := routes(authz, &reached)
	alice, bob := principal{id: "alice"}, principal{id: "bob"}
	check := func(step string, wantAlice, wantBob int) {
		t.Helper()
		// Twice each, so the second answer is a cached one.
		for range 2 {
			if a, b := serve(mux, "POST", "/transfers", alice), serve(mux, "POST", "/transfers", bob); a != wantAlice || b != wantBob {
				t.Fatalf("%s: alice %d bob %d, want %d %d", step, a, b, wantAlice, wantBob)
			}
		}
	}
	check("v1", 200, 403)

	writeFile(t, path, policyV2)
	check("v2 written, not reloaded", 200, 403)
	if err := authz.Reload(); err != nil {
		t.Fatal(err)
	}
	check("v2 reloaded", 403, 200)

	writeFile(t, path, "p, role:teller\n")
	if err := authz.Reload(); !errors.Is(err, rbac.ErrReload) {
		t.Fatalf("reload of a bad policy: %v, want ErrReload", err)
	}
	check("bad policy rejected, v2 in force", 403, 200)

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := authz.Reload(); !errors.Is(err, rbac.ErrReload) {
		t.Fatalf("reload of a missing file: %v, want ErrReload", err)
	}
	check("missing file rejected, v2 in force", 403, 200)
}

func TestReloadRefusesUnsynchronisedEnforcer(t *testing.T) {
	e, err := casbin.NewEnforcer("models/rbac.conf", "testdata/policy.csv")
	if err != nil {
		t.Fatal(err)
	}
	authz, err := rbac.New(rbac.Config{Enforcer: e, Subject: subject})
	if err != nil {
		t.Fatal(err)
	}
	if err := authz.Reload(); !errors.Is(err, rbac.ErrReload) {
		t.Fatalf("Reload with *casbin.Enforcer: %v, want ErrReload", err)
	}
	// A reload-less enforcer (no LoadPolicy) only drops the cache.
	var allow atomic.Bool
	authz, err = rbac.New(rbac.Config{Enforcer: enforcerFunc(func(...any) (bool, error) { return allow.Load(), nil }), Subject: subject})
	if err != nil {
		t.Fatal(err)
	}
	var reached atomic.Int64
	mux := routes(authz, &reached)
	if code := serve(mux, "GET", "/audit", principal{id: "x"}); code != 403 {
		t.Fatalf("status %d", code)
	}
	allow.Store(true)
	if err := authz.Reload(); err != nil {
		t.Fatal(err)
	}
	if code := serve(mux, "GET", "/audit", principal{id: "x"}); code != 200 {
		t.Fatalf("after Reload: status %d, want 200", code)
	}
}

// TestReloadWhileServing flips the policy between two versions while
// requests run. No request may fail for any other reason than the
// policy, and once Reload returns, every new request sees the version it
// loaded. Run with -race.
func TestReloadWhileServing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.csv")
	writeFile(t, path, policyV1)
	authz, err := rbac.New(rbac.Config{Enforcer: fileEnforcer(t, rbac.RBAC, path), Subject: subject, OnDecision: func(*http.Request, rbac.Decision) {}})
	if err != nil {
		t.Fatal(err)
	}
	var reached atomic.Int64
	mux := routes(authz, &reached)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var bad atomic.Int64
	var served atomic.Int64
	for w := range 2 {
		wg.Go(func() {
			who := []principal{{id: "alice"}, {id: "bob"}, {id: "carol"}, {id: "worker", service: true}}[w]
			for ctx.Err() == nil {
				switch code := serve(mux, "POST", "/transfers", who); code {
				case 200, 403:
				default:
					bad.Add(1)
				}
				served.Add(1)
			}
		})
	}
	alice, bob := principal{id: "alice"}, principal{id: "bob"}
	for i := range 20 {
		v, wantAlice, wantBob := policyV1, 200, 403
		if i%2 == 0 {
			v, wantAlice, wantBob = policyV2, 403, 200
		}
		writeFile(t, path, v)
		if err := authz.Reload(); err != nil {
			t.Fatal(err)
		}
		if a, b := serve(mux, "POST", "/transfers", alice), serve(mux, "POST", "/transfers", bob); a != wantAlice || b != wantBob {
			t.Fatalf("reload %d: alice %d bob %d, want %d %d", i, a, b, wantAlice, wantBob)
		}
	}
	cancel()
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d of %d requests got a status other than 200/403 during reloads", bad.Load(), served.Load())
	}
	if served.Load() == 0 {
		t.Fatal("no request ran during the reloads")
	}
}

func TestOnDecisionFields(t *testing.T) {
	var rec recorder
	authz, err := rbac.New(rbac.Config{
		Enforcer:   fileEnforcer(t, rbac.RBACWithDomains, "testdata/policy_domains.csv"),
		Subject:    subject,
		Domain:     tenant,
		OnDecision: rec.on,
	})
	if err != nil {
		t.Fatal(err)
	}
	var reached atomic.Int64
	mux := routes(authz, &reached)
	serve(mux, "GET", "/accounts/42", principal{id: "worker", service: true, tenant: "tenant-b"})
	serve(mux, "POST", "/transfers", principal{id: "alice", tenant: "tenant-b"})
	want := []rbac.Decision{
		{Allowed: true, Reason: rbac.ReasonAllowed, Subject: "service:worker", Domain: "tenant-b", Object: "/accounts/{id}", Action: "GET", Policy: "role:viewer, tenant-b, /accounts/{id}, GET"},
		{Allowed: false, Reason: rbac.ReasonDenied, Subject: "user:alice", Domain: "tenant-b", Object: "/transfers", Action: "POST"},
	}
	if diff := cmp.Diff(want, rec.ds); diff != "" {
		t.Fatalf("decisions (-want +got):\n%s", diff)
	}
}

// TestNoExplainWithoutHook: with OnDecision nil the middleware calls the
// cheaper Enforce, not EnforceEx.
func TestNoExplainWithoutHook(t *testing.T) {
	var ex, plain atomic.Int64
	enf := &splitEnforcer{ex: &ex, plain: &plain}
	for _, hook := range []bool{false, true} {
		cfg := rbac.Config{Enforcer: enf, Subject: subject, DisableCache: true}
		if hook {
			cfg.OnDecision = func(*http.Request, rbac.Decision) {}
		}
		authz, err := rbac.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var reached atomic.Int64
		serve(routes(authz, &reached), "GET", "/audit", principal{id: "x"})
	}
	if ex.Load() != 1 || plain.Load() != 1 {
		t.Fatalf("EnforceEx %d, Enforce %d; want 1 each", ex.Load(), plain.Load())
	}
}

type splitEnforcer struct{ ex, plain *atomic.Int64 }

func (s *splitEnforcer) Enforce(...any) (bool, error) { s.plain.Add(1); return true, nil }
func (s *splitEnforcer) EnforceEx(...any) (bool, []string, error) {
	s.ex.Add(1)
	return true, []string{"a", "b"}, nil
}

func TestCancelledRequestGetsNoBody(t *testing.T) {
	authz, err := rbac.New(rbac.Config{Enforcer: fileEnforcer(t, rbac.RBAC, "testdata/policy.csv"), Subject: subject})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rr := httptest.NewRecorder()
	var reached atomic.Int64
	req := withPrincipal(httptest.NewRequest("POST", "/transfers", nil).WithContext(ctx), principal{id: "bob"})
	routes(authz, &reached).ServeHTTP(rr, req)
	if rr.Body.Len() != 0 || reached.Load() != 0 {
		t.Fatalf("cancelled request: body %q, reached %d", rr.Body.String(), reached.Load())
	}
}

// TestInFlightDecisionNotCachedAcrossInvalidate: a decision computed
// under the old policy, finishing after the cache was replaced, must not
// land in the new cache.
func TestInFlightDecisionNotCachedAcrossInvalidate(t *testing.T) {
	var allow atomic.Bool
	allow.Store(true)
	entered, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int64
	enf := enforcerFunc(func(...any) (bool, error) {
		verdict := allow.Load()
		if calls.Add(1) == 1 {
			close(entered)
			<-release
		}
		return verdict, nil
	})
	authz, err := rbac.New(rbac.Config{Enforcer: enf, Subject: subject})
	if err != nil {
		t.Fatal(err)
	}
	var reached atomic.Int64
	mux := routes(authz, &reached)
	first := make(chan int)
	go func() { first <- serve(mux, "GET", "/audit", principal{id: "alice"}) }()
	<-entered
	allow.Store(false) // the policy changes…
	if err := authz.Reload(); err != nil {
		t.Fatal(err)
	}
	close(release) // …while the old decision is in flight
	if code := <-first; code != 200 {
		t.Fatalf("in-flight request: %d, want 200 (decided on the old policy)", code)
	}
	if code := serve(mux, "GET", "/audit", principal{id: "alice"}); code != 403 {
		t.Fatalf("request after Reload: %d, want 403; a stale decision was cached", code)
	}
}

func TestNewEnforcerAnyAdapter(t *testing.T) {
	e, err := rbac.NewEnforcer(rbac.RBAC, stringadapter.NewAdapter("p, role:a, /x, GET\ng, service:job, role:a"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sub  string
		want bool
	}{{"service:job", true}, {"user:job", false}} {
		if ok, err := e.Enforce(tc.sub, "/x", "GET"); err != nil || ok != tc.want {
			t.Fatalf("Enforce(%s) = %v, %v; want %v", tc.sub, ok, err, tc.want)
		}
	}
}

// TestMuxObjectInsideMux: MuxObject also works when the middleware wraps
// a route's handler, where r.Pattern is already set.
func TestMuxObjectInsideMux(t *testing.T) {
	mux := http.NewServeMux()
	var rec recorder
	authz, err := rbac.New(rbac.Config{
		Enforcer:   fileEnforcer(t, rbac.RBAC, "testdata/policy.csv"),
		Subject:    subject,
		Object:     rbac.MuxObject(mux),
		OnDecision: rec.on,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("GET /accounts/{id}", authz.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	if code := serve(mux, "GET", "/accounts/3", principal{id: "bob"}); code != 200 {
		t.Fatalf("status %d, want 200", code)
	}
	if d := rec.last(t); d.Object != "/accounts/{id}" {
		t.Fatalf("Object = %q", d.Object)
	}
}
