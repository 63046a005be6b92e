package interop

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	stringadapter "github.com/casbin/casbin/v2/persist/string-adapter"
	"github.com/go-chi/chi/v5"
	"github.com/gorilla/mux"

	"github.com/malai-sec/malai/clientip"
	"github.com/malai-sec/malai/correlation"
	"github.com/malai-sec/malai/ratelimit"
	"github.com/malai-sec/malai/ratelimit/memstore"
	"github.com/malai-sec/malai/rbac"
	"github.com/malai-sec/malai/route"
)

// chiResolver is the recipe of package route's documentation.
func chiResolver(r chi.Routes) route.Resolver {
	return func(req *http.Request) string {
		path := req.URL.RawPath // chi routes on RawPath when it is set
		if path == "" {
			path = req.URL.Path
		}
		return r.Find(chi.NewRouteContext(), req.Method, path)
	}
}

// gorillaResolver is the recipe for gorilla/mux's Use, which runs after
// the router matched.
func gorillaResolver(req *http.Request) string {
	if cur := mux.CurrentRoute(req); cur != nil {
		if t, err := cur.GetPathTemplate(); err == nil {
			return t
		}
	}
	return ""
}

const policy = `p, role:viewer, /accounts/{id}, GET
p, role:teller, /transfers, POST
p, role:teller, /admin/reports/{year}, GET
g, user:alice, role:teller
g, user:bob, role:viewer
g, role:teller, role:viewer`

// authz returns rbac middleware whose subject comes from a header the
// test sets (standing in for a verified token), recording decisions.
func authz(t *testing.T) (*rbac.Middleware, *decisions) {
	t.Helper()
	enf, err := rbac.NewEnforcer(rbac.RBAC, stringadapter.NewAdapter(policy))
	if err != nil {
		t.Fatal(err)
	}
	d := &decisions{}
	m, err := rbac.New(rbac.Config{
		Enforcer: enf,
		Subject: func(r *http.Request) (string, bool) {
			u := r.Header.Get("X-Test-User")
			return rbac.UserSubject(u), u != ""
		},
		OnDecision: d.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	return m, d
}

type decisions struct {
	mu  sync.Mutex
	all []rbac.Decision
}

func (d *decisions) add(_ *http.Request, dec rbac.Decision) {
	d.mu.Lock()
	d.all = append(d.all, dec)
	d.mu.Unlock()
}

func (d *decisions) last() rbac.Decision {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.all) == 0 {
		return rbac.Decision{}
	}
	return d.all[len(d.all)-1]
}

type accessLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (a *accessLog) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.buf.Write(p)
}

// lastRoute is the route field of the last access-log line.
func (a *accessLog) lastRoute(t *testing.T) string {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(a.buf.String()), "\n")
	var rec struct{ Route string }
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rec); err != nil {
		t.Fatalf("access log %q: %v", lines[len(lines)-1], err)
	}
	return rec.Route
}

func limiter(t *testing.T) *ratelimit.Limiter {
	t.Helper()
	st, err := memstore.New(memstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := ratelimit.New(ratelimit.Config{Store: st,
		Skip: func(r *http.Request) bool { return r.Header.Get("X-Test-User") != "" }, // limit only anonymous callers
		Policies: []ratelimit.Policy{
			{Name: "anon", Limit: 1, Period: time.Hour},
			{Name: "route", Limit: 100, Period: time.Hour, Key: ratelimit.ByRoute},
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); st.Close() })
	return l
}

func call(h http.Handler, method, path, user string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, nil)
	if user != "" {
		r.Header.Set("X-Test-User", user)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// scenario is what every router recipe must get right.
type step struct {
	method, path, user string
	status             int
	object             string      // the rbac object decided on ("" when none)
	reason             rbac.Reason // "" when rbac did not run
	logged             string      // the access log's route
}

func runSteps(t *testing.T, h http.Handler, d *decisions, log *accessLog, steps []step) {
	t.Helper()
	for _, s := range steps {
		before := len(d.all)
		w := call(h, s.method, s.path, s.user)
		if w.Code != s.status {
			t.Errorf("%s %s as %q: status %d, want %d", s.method, s.path, s.user, w.Code, s.status)
			continue
		}
		if s.reason != "" {
			dec := d.last()
			if len(d.all) == before || dec.Reason != s.reason || dec.Object != s.object {
				t.Errorf("%s %s: decision %+v, want reason %q object %q", s.method, s.path, dec, s.reason, s.object)
			}
		} else if len(d.all) != before {
			t.Errorf("%s %s: rbac ran (%+v)", s.method, s.path, d.last())
		}
		if got := log.lastRoute(t); got != s.logged {
			t.Errorf("%s %s: access log route %q, want %q", s.method, s.path, got, s.logged)
		}
	}
}

func correlationMW(t *testing.T, log *accessLog) *correlation.Middleware {
	t.Helper()
	m, err := correlation.New(correlation.Config{Logger: slog.New(slog.NewJSONHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// chi: the resolver first with Use, then rate limiting and authorisation
// with Use (before chi routes: the case that refused every request when
// rbac read r.Pattern), a Group, With on one route, and a mounted
// subrouter. A request refused before routing (rate limited) or matching
// no route is labelled unrouted; authorisation sees chi's pattern, never
// the raw path, and refuses what matches no route.
func TestChiRecipe(t *testing.T) {
	log := &accessLog{}
	az, d := authz(t)
	r := chi.NewRouter()
	r.Use(route.Handler(chiResolver(r)))
	r.Use(limiter(t).Handler)
	r.Use(az.Handler)
	ok := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }
	r.Get("/accounts/{id}", ok)
	r.Group(func(r chi.Router) {
		r.Use(func(next http.Handler) http.Handler { return next })
		r.With(func(next http.Handler) http.Handler { return next }).Post("/transfers", ok)
	})
	r.Route("/admin", func(r chi.Router) {
		r.Get("/reports/{year}", ok)
	})
	h := correlationMW(t, log).Handler(r)
	runSteps(t, h, d, log, []step{
		{"GET", "/accounts/42", "bob", 204, "/accounts/{id}", rbac.ReasonAllowed, "/accounts/{id}"},
		{"POST", "/transfers", "bob", 403, "/transfers", rbac.ReasonDenied, "/transfers"},
		{"POST", "/transfers", "alice", 204, "/transfers", rbac.ReasonAllowed, "/transfers"},
		{"GET", "/admin/reports/2026", "alice", 204, "/admin/reports/{year}", rbac.ReasonAllowed, "/admin/reports/{year}"},
		{"GET", "/admin/reports/2026", "bob", 403, "/admin/reports/{year}", rbac.ReasonDenied, "/admin/reports/{year}"},
		{"GET", "/nowhere", "alice", 403, "", rbac.ReasonNoRoute, route.Unrouted},
		{"DELETE", "/accounts/42", "alice", 403, "", rbac.ReasonNoRoute, route.Unrouted},
		{"GET", "/accounts/%2e%2e%2fadmin", "bob", 204, "/accounts/{id}", rbac.ReasonAllowed, "/accounts/{id}"},
		// Anonymous callers: one request an hour, refused before chi routes.
		{"GET", "/accounts/1", "", 401, "/accounts/{id}", rbac.ReasonNoSubject, "/accounts/{id}"},
		{"GET", "/accounts/1", "", 429, "", "", "/accounts/{id}"},
		{"GET", "/probe/../etc/passwd", "", 429, "", "", route.Unrouted},
	})
}

// chi with authorisation inside a Group: routes outside the group need no
// role, and paths chi does not know never reach the group's middleware.
func TestChiGroupRecipe(t *testing.T) {
	log := &accessLog{}
	az, d := authz(t)
	r := chi.NewRouter()
	r.Use(route.Handler(chiResolver(r)))
	ok := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }
	r.Get("/healthz", ok)
	r.Group(func(r chi.Router) {
		r.Use(az.Handler)
		r.Get("/accounts/{id}", ok)
		r.With(func(next http.Handler) http.Handler { return next }).Post("/transfers", ok)
	})
	h := correlationMW(t, log).Handler(r)
	runSteps(t, h, d, log, []step{
		{"GET", "/healthz", "", 204, "", "", "/healthz"},
		{"GET", "/accounts/42", "bob", 204, "/accounts/{id}", rbac.ReasonAllowed, "/accounts/{id}"},
		{"POST", "/transfers", "bob", 403, "/transfers", rbac.ReasonDenied, "/transfers"},
		{"GET", "/nowhere", "alice", 404, "", "", route.Unrouted},
		{"DELETE", "/accounts/42", "alice", 405, "", "", route.Unrouted},
	})
}

// gorilla/mux: its Use runs after matching, so the resolver reads the
// current route there.
func TestGorillaRecipe(t *testing.T) {
	log := &accessLog{}
	az, d := authz(t)
	r := mux.NewRouter()
	r.Use(route.Handler(gorillaResolver))
	r.Use(az.Handler)
	ok := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }
	r.HandleFunc("/accounts/{id}", ok).Methods("GET")
	r.HandleFunc("/transfers", ok).Methods("POST")
	sub := r.PathPrefix("/admin").Subrouter()
	sub.HandleFunc("/reports/{year}", ok).Methods("GET")
	h := correlationMW(t, log).Handler(r)
	runSteps(t, h, d, log, []step{
		{"GET", "/accounts/42", "bob", 204, "/accounts/{id}", rbac.ReasonAllowed, "/accounts/{id}"},
		{"POST", "/transfers", "bob", 403, "/transfers", rbac.ReasonDenied, "/transfers"},
		{"POST", "/transfers", "alice", 204, "/transfers", rbac.ReasonAllowed, "/transfers"},
		{"GET", "/admin/reports/2026", "alice", 204, "/admin/reports/{year}", rbac.ReasonAllowed, "/admin/reports/{year}"},
		// gorilla answers unknown paths itself, before its Use chain.
		{"GET", "/nowhere", "alice", 404, "", "", route.Unrouted},
	})
}

// A client address resolved once by correlation is what a limiter inside
// counts, with chi in between.
func TestSharedClientIPThroughChi(t *testing.T) {
	res := mustResolver(t, "10.0.0.0/8")
	m, err := correlation.New(correlation.Config{ClientIP: res})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := memstore.New(memstore.Config{})
	lim, err := ratelimit.New(ratelimit.Config{Store: st, Policies: []ratelimit.Policy{{Name: "ip", Limit: 1, Period: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	defer lim.Close()
	r := chi.NewRouter()
	r.Use(lim.Handler) // no resolver of its own: it uses the address in the context
	r.Get("/", func(w http.ResponseWriter, _ *http.Request) {})
	h := m.Handler(r)
	send := func(xff string) int {
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = "10.1.1.1:5000"
		req.Header.Set("X-Forwarded-For", xff)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	if send("198.51.100.1") != 200 || send("198.51.100.2") != 200 || send("198.51.100.1") != 429 {
		t.Fatal("the limiter did not count the address correlation resolved")
	}
}

func mustResolver(t *testing.T, trusted string) *clientip.Resolver {
	t.Helper()
	r, err := clientip.New(clientip.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix(trusted)}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}
