package rbac_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/malai-sec/malai/rbac"
)

// Claims stands in for the verified JWT claims that jwtverify puts in the
// request context; the ledger wires jwtverify.FromContext the same way.
type Claims struct {
	Subject  string // "sub" of a user token
	ClientID string // "client_id" of a service (client-credentials) token
	Service  bool   // token class
}

type claimsKey struct{}

func claimsFromContext(ctx context.Context) (Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(Claims)
	return c, ok
}

// fakeVerifier stands in for the jwtverify middleware: it trusts the
// "X-Test-User"/"X-Test-Service" headers. A real service verifies a JWT.
func fakeVerifier(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var c Claims
		switch {
		case r.Header.Get("X-Test-User") != "":
			c = Claims{Subject: r.Header.Get("X-Test-User")}
		case r.Header.Get("X-Test-Service") != "":
			c = Claims{ClientID: r.Header.Get("X-Test-Service"), Service: true}
		default:
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, c)))
	})
}

// The ledger authorises every route on the verified token's subject, the
// route pattern and the method, and sends every decision to the audit log.
func Example() {
	dir, _ := os.MkdirTemp("", "rbac-example")
	defer os.RemoveAll(dir)
	policy := filepath.Join(dir, "policy.csv")
	_ = os.WriteFile(policy, []byte(`p, role:viewer, /accounts/{id}, GET
p, role:teller, /transfers, POST
g, role:teller, role:viewer
g, user:alice, role:teller
g, user:bob, role:viewer
g, service:transfer-worker, role:teller
`), 0o600)

	enf, err := rbac.NewFileEnforcer(rbac.RBAC, policy)
	if err != nil {
		fmt.Println(err)
		return
	}
	authz, err := rbac.New(rbac.Config{
		Enforcer: enf,
		Subject: func(r *http.Request) (string, bool) {
			c, ok := claimsFromContext(r.Context())
			if !ok {
				return "", false
			}
			if c.Service {
				return rbac.ServiceSubject(c.ClientID), true
			}
			return rbac.UserSubject(c.Subject), true
		},
		OnDecision: func(r *http.Request, d rbac.Decision) {
			// The ledger appends this to its audit chain.
			fmt.Printf("audit: allowed=%v reason=%s subject=%s %s %s policy=%q\n",
				d.Allowed, d.Reason, d.Subject, d.Action, d.Object, d.Policy)
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	mux := http.NewServeMux()
	// Inside the mux, around each route's handler, so r.Pattern is set.
	mux.Handle("GET /accounts/{id}", authz.Handler(ok))
	mux.Handle("POST /transfers", authz.Handler(ok))
	handler := fakeVerifier(mux) // jwtverify runs first, outside the mux

	for _, tc := range []struct{ method, path, hdr, who string }{
		{"GET", "/accounts/42", "X-Test-User", "bob"},
		{"POST", "/transfers", "X-Test-User", "bob"},
		{"POST", "/transfers", "X-Test-Service", "transfer-worker"},
		{"POST", "/transfers", "", ""},
	} {
		req := httptest.NewRequest(tc.method, tc.path, nil)
		if tc.hdr != "" {
			req.Header.Set(tc.hdr, tc.who)
		}
		rr := httptest.NewRecorder()
		handler.ServeHTTP(rr, req)
		fmt.Println(strings.TrimSpace(fmt.Sprint(tc.method, " ", tc.path, " → ", rr.Code, " ",
			rr.Header().Get("WWW-Authenticate"), " ", rr.Header().Get("Content-Type"))))
	}
	// On SIGHUP the service calls:
	if err := authz.Reload(); err != nil {
		fmt.Println(err)
	}
	// Output:
	// audit: allowed=true reason=allowed subject=user:bob GET /accounts/{id} policy="role:viewer, /accounts/{id}, GET"
	// GET /accounts/42 → 200
	// audit: allowed=false reason=denied subject=user:bob POST /transfers policy=""
	// POST /transfers → 403  application/problem+json
	// audit: allowed=true reason=allowed subject=service:transfer-worker POST /transfers policy="role:teller, /transfers, POST"
	// POST /transfers → 200
	// audit: allowed=false reason=no_subject subject= POST /transfers policy=""
	// POST /transfers → 401 Bearer application/problem+json
}

// A service that wraps its whole mux in the middleware, rather than each
// route, uses MuxObject: outside the mux r.Pattern is not yet set.
func ExampleMuxObject() {
	enf, err := rbac.NewFileEnforcer(rbac.RBAC, "testdata/policy.csv")
	if err != nil {
		fmt.Println(err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /accounts/{id}", func(w http.ResponseWriter, r *http.Request) {})
	authz, err := rbac.New(rbac.Config{
		Enforcer: enf,
		Subject:  func(r *http.Request) (string, bool) { return rbac.UserSubject("bob"), true },
		Object:   rbac.MuxObject(mux),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	handler := authz.Handler(mux)
	for _, path := range []string{"/accounts/7", "/admin"} {
		rr := httptest.NewRecorder()
		handler.ServeHTTP(rr, httptest.NewRequest("GET", path, nil))
		fmt.Println(path, rr.Code)
	}
	// Output:
	// /accounts/7 200
	// /admin 403
}

// With RBACWithDomains a role is held in one tenant; the tenant comes
// from the verified token, like the subject.
func ExampleNewFileEnforcer_domains() {
	enf, err := rbac.NewFileEnforcer(rbac.RBACWithDomains, "testdata/policy_domains.csv")
	if err != nil {
		fmt.Println(err)
		return
	}
	type tenantClaims struct{ sub, tenant string }
	type key struct{}
	authz, err := rbac.New(rbac.Config{
		Enforcer: enf,
		Subject: func(r *http.Request) (string, bool) {
			c, ok := r.Context().Value(key{}).(tenantClaims)
			return rbac.UserSubject(c.sub), ok
		},
		Domain: func(r *http.Request) (string, bool) {
			c, ok := r.Context().Value(key{}).(tenantClaims)
			return c.tenant, ok
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	mux := http.NewServeMux()
	mux.Handle("POST /transfers", authz.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	for _, tenant := range []string{"tenant-a", "tenant-b"} {
		req := httptest.NewRequest("POST", "/transfers", nil)
		req = req.WithContext(context.WithValue(req.Context(), key{}, tenantClaims{"alice", tenant}))
		rr := httptest.NewRecorder()
		mux.ServeHTTP(rr, req)
		fmt.Println("alice in", tenant, "→", rr.Code)
	}
	// Output:
	// alice in tenant-a → 200
	// alice in tenant-b → 403
}
