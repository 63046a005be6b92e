// Package rbacbench compares the rbac middleware with calling Casbin
// directly, on the same model and policy, in the same run.
package rbacbench

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/casbin/casbin/v2"
	"github.com/casbin/casbin/v2/model"
	stringadapter "github.com/casbin/casbin/v2/persist/string-adapter"
	"github.com/malai-sec/malai/rbac"
)

// policy is 100 users, 10 roles and 50 rules: role r<i> is granted the
// rules i, i+10, … (five routes, alternately GET and POST); roles form
// two inheritance chains (r0 ⊃ r1 ⊃ … ⊃ r4, r5 ⊃ … ⊃ r9); user u<j>
// holds role r<j mod 10>.
func policy() string {
	var b strings.Builder
	for i := range 50 {
		act := "GET"
		if i%2 == 1 {
			act = "POST"
		}
		fmt.Fprintf(&b, "p, role:r%d, /res%d/{id}, %s\n", i%10, i, act)
	}
	for i := range 10 {
		if i%5 != 4 {
			fmt.Fprintf(&b, "g, role:r%d, role:r%d\n", i, i+1)
		}
	}
	for j := range 100 {
		fmt.Fprintf(&b, "g, user:u%d, role:r%d\n", j, j%10)
	}
	return b.String()
}

// Queries (user "u"+"0"): u0 (role r0) reaching a rule of r4 through the chain; u0 asking
// for a route it has no grant for (the worst case: every rule is tried).
var queries = []struct {
	name, user, pattern, obj, act string
	want                          bool
}{
	{"allow", "u", "GET /res24/{id}", "/res24/{id}", "GET", true},
	{"deny", "u", "GET /res5/{id}", "/res5/{id}", "GET", false},
}

func plainEnforcer(b *testing.B) *casbin.Enforcer {
	m, err := model.NewModelFromString(rbac.RBAC.Text())
	if err != nil {
		b.Fatal(err)
	}
	e, err := casbin.NewEnforcer(m, stringadapter.NewAdapter(policy()))
	if err != nil {
		b.Fatal(err)
	}
	return e
}

func syncedEnforcer(b *testing.B) *casbin.SyncedEnforcer {
	e, err := rbac.NewEnforcer(rbac.RBAC, stringadapter.NewAdapter(policy()))
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// BenchmarkCasbinEnforce is the peer: Casbin's own Enforce, no cache.
func BenchmarkCasbinEnforce(b *testing.B) {
	e := plainEnforcer(b)
	for _, q := range queries {
		b.Run(q.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if ok, err := e.Enforce("user:"+q.user+"0", q.obj, q.act); err != nil || ok != q.want {
					b.Fatal(ok, err)
				}
			}
		})
	}
}

// BenchmarkCasbinEnforceEx is the peer for decisions that report the
// matched policy line (what OnDecision needs).
func BenchmarkCasbinEnforceEx(b *testing.B) {
	e := plainEnforcer(b)
	for _, q := range queries {
		b.Run(q.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if ok, _, err := e.EnforceEx("user:"+q.user+"0", q.obj, q.act); err != nil || ok != q.want {
					b.Fatal(ok, err)
				}
			}
		})
	}
}

// BenchmarkCasbinSyncedCachedEnforce is Casbin's own decision cache, hit.
func BenchmarkCasbinSyncedCachedEnforce(b *testing.B) {
	m, err := model.NewModelFromString(rbac.RBAC.Text())
	if err != nil {
		b.Fatal(err)
	}
	e, err := casbin.NewSyncedCachedEnforcer(m, stringadapter.NewAdapter(policy()))
	if err != nil {
		b.Fatal(err)
	}
	for _, q := range queries {
		b.Run(q.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if ok, err := e.Enforce("user:"+q.user+"0", q.obj, q.act); err != nil || ok != q.want {
					b.Fatal(ok, err)
				}
			}
		})
	}
}

type claimsKey struct{}

// subject is the realistic wiring: the verified claims carry the bare
// token subject, and the kind prefix is added per request.
func subject(r *http.Request) (string, bool) {
	sub, ok := r.Context().Value(claimsKey{}).(string)
	if !ok {
		return "", false
	}
	return rbac.UserSubject(sub), true
}

// discard is a ResponseWriter that allocates nothing.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(int)             {}

func benchMiddleware(b *testing.B, cfg rbac.Config) {
	benchMiddlewareUsers(b, cfg, 1)
}

// benchMiddlewareUsers serves the queries for users u0, u10, u20… (all
// hold role r0, so every decision costs Casbin the same), in rotation.
func benchMiddlewareUsers(b *testing.B, cfg rbac.Config, users int) {
	cfg.Enforcer, cfg.Subject = syncedEnforcer(b), subject
	authz, err := rbac.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	for _, q := range queries {
		b.Run(q.name, func(b *testing.B) {
			var reached bool
			h := authz.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true }))
			reqs := make([]*http.Request, users)
			for i := range reqs {
				user := fmt.Sprint(q.user, i*10)
				req, err := http.NewRequestWithContext(context.WithValue(context.Background(), claimsKey{}, user), q.act, "/x", nil)
				if err != nil {
					b.Fatal(err)
				}
				// As ServeMux sets it on the request it passes to the route.
				req.Pattern = q.pattern
				reqs[i] = req
			}
			w := &discard{h: http.Header{}}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				reached = false
				h.ServeHTTP(w, reqs[i%users])
				i++
				if reached != q.want {
					b.Fatalf("reached = %v", reached)
				}
			}
		})
	}
}

// BenchmarkMiddlewareCached is a cached decision including the middleware
// and the subject function; denials include writing the 403 problem.
func BenchmarkMiddlewareCached(b *testing.B) {
	benchMiddleware(b, rbac.Config{})
}

// BenchmarkMiddlewareCachedOnDecision adds an OnDecision hook that keeps
// the decision (the audit wiring).
func BenchmarkMiddlewareCachedOnDecision(b *testing.B) {
	var last rbac.Decision
	benchMiddleware(b, rbac.Config{OnDecision: func(_ *http.Request, d rbac.Decision) { last = d }})
	_ = last
}

// BenchmarkMiddlewareUncached calls the enforcer on every request.
func BenchmarkMiddlewareUncached(b *testing.B) {
	benchMiddleware(b, rbac.Config{DisableCache: true})
}

// BenchmarkMiddlewareUncachedOnDecision calls EnforceEx on every request;
// compare with BenchmarkCasbinEnforceEx.
func BenchmarkMiddlewareUncachedOnDecision(b *testing.B) {
	benchMiddleware(b, rbac.Config{DisableCache: true, OnDecision: func(*http.Request, rbac.Decision) {}})
}

// BenchmarkMiddlewareMiss rotates four users through a two-entry cache,
// so every request misses: the lookup, the enforcer call and the insert
// (copying the key) on every request, with OnDecision (EnforceEx).
// Compare with BenchmarkCasbinEnforceEx.
func BenchmarkMiddlewareMissOnDecision(b *testing.B) {
	benchMiddlewareUsers(b, rbac.Config{CacheSize: 2, OnDecision: func(*http.Request, rbac.Decision) {}}, 4)
}

// BenchmarkMiddlewareMiss is BenchmarkMiddlewareMissOnDecision without
// the hook (Enforce). Compare with BenchmarkCasbinEnforce.
func BenchmarkMiddlewareMiss(b *testing.B) {
	benchMiddlewareUsers(b, rbac.Config{CacheSize: 2}, 4)
}
