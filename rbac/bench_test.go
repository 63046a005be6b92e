package rbac_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/malai-sec/malai/rbac"
)

type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

// BenchmarkHandler measures the middleware on a cached decision, the
// request as ServeMux hands it to a route. Peer comparisons (Casbin's own
// Enforce and SyncedCachedEnforcer) live in bench/rbac.
func BenchmarkHandler(b *testing.B) {
	for _, bc := range []struct {
		name    string
		who     string
		method  string
		pattern string
		want    bool
	}{
		{"allow", "alice", "GET", "GET /accounts/{id}", true},
		{"deny", "bob", "POST", "POST /transfers", false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			authz, err := rbac.New(rbac.Config{
				Enforcer:   fileEnforcer(b, rbac.RBAC, "testdata/policy.csv"),
				Subject:    subject,
				OnDecision: func(*http.Request, rbac.Decision) {},
			})
			if err != nil {
				b.Fatal(err)
			}
			var reached bool
			h := authz.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true }))
			req, _ := http.NewRequestWithContext(context.WithValue(context.Background(), principalKey{}, principal{id: bc.who}), bc.method, "/accounts/1", nil)
			req.Pattern = bc.pattern
			w := &nopWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				reached = false
				h.ServeHTTP(w, req)
				if reached != bc.want {
					b.Fatalf("reached = %v", reached)
				}
			}
		})
	}
}
