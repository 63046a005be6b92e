package rbac_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/malai-sec/malai/rbac"
)

// FuzzDecision sends arbitrary subjects, methods and paths (the parts of
// a request a client controls, the subject standing for whatever a token
// may carry) through the middleware, inside and outside the mux, cached
// and uncached. Properties: a request reaches a handler only when Casbin,
// asked directly with the pattern the mux matched, allows it; cached and
// uncached answers agree; refusals are 401 or 403; nothing is a 5xx.
func FuzzDecision(f *testing.F) {
	for _, seed := range []struct{ user, method, path string }{
		{"alice", "GET", "/accounts/1"},
		{"bob", "POST", "/transfers"},
		{"worker", "POST", "/transfers"},
		{"role:admin", "POST", "/transfers"},
		{"", "GET", "/accounts/1"},
		{"bob", "HEAD", "/accounts/1"},
		{"bob", "GET", "/x/../accounts/1"},
		{"bob", "GET", "/accounts/1/"},
		{"alice", "GET", "/nowhere"},
		{"alice", "G\x00T", "/accounts/{id}"},
	} {
		f.Add(seed.user, seed.method, seed.path)
	}
	enf, err := rbac.NewFileEnforcer(rbac.RBAC, "testdata/policy.csv")
	if err != nil {
		f.Fatal(err)
	}
	type result struct {
		code    int
		reached bool
		d       rbac.Decision
	}
	var last result
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { last.reached = true })
	build := func(disable, outside bool) http.Handler {
		mux := http.NewServeMux()
		cfg := rbac.Config{
			Enforcer: enf,
			Subject: func(r *http.Request) (string, bool) {
				u := r.Header.Get("X-User")
				return u, u != ""
			},
			OnDecision:   func(_ *http.Request, d rbac.Decision) { last.d = d },
			DisableCache: disable,
		}
		if outside {
			cfg.Object = rbac.MuxObject(mux)
		}
		authz, err := rbac.New(cfg)
		if err != nil {
			f.Fatal(err)
		}
		wrap := func(h http.Handler) http.Handler { return h }
		if !outside {
			wrap = authz.Handler
		}
		for _, p := range []string{"GET /accounts/{id}", "POST /transfers", "GET /audit", "/public/"} {
			mux.Handle(p, wrap(ok))
		}
		if outside {
			return authz.Handler(mux)
		}
		return mux
	}
	handlers := map[string]http.Handler{
		"inside cached":    build(false, false),
		"inside uncached":  build(true, false),
		"outside cached":   build(false, true),
		"outside uncached": build(true, true),
	}
	f.Fuzz(func(t *testing.T, user, method, path string) {
		if !validHeaderValue(user) {
			t.Skip()
		}
		first := map[string]result{}
		for round := range 2 {
			for name, h := range handlers {
				req := httptest.NewRequest("GET", "/", nil)
				req.Method = method
				req.URL.Path = path
				req.URL.RawPath = ""
				if user != "" {
					req.Header.Set("X-User", user)
				}
				last = result{}
				rr := httptest.NewRecorder()
				h.ServeHTTP(rr, req)
				last.code = rr.Code
				if rr.Code >= 500 {
					t.Fatalf("%s: status %d", name, rr.Code)
				}
				if last.reached {
					if !last.d.Allowed || last.d.Subject != user || last.d.Action != method {
						t.Fatalf("%s: handler reached with decision %+v", name, last.d)
					}
					allowed, err := enf.Enforce(user, last.d.Object, method)
					if err != nil || !allowed {
						t.Fatalf("%s: handler reached but Casbin says %v, %v for %q %q %q", name, allowed, err, user, last.d.Object, method)
					}
				}
				if last.d.Reason != "" && !last.d.Allowed && rr.Code != 401 && rr.Code != 403 {
					t.Fatalf("%s: refused (%s) with status %d", name, last.d.Reason, rr.Code)
				}
				if round == 0 {
					first[name] = last
				} else if p := first[name]; p.code != last.code || p.reached != last.reached || p.d.Allowed != last.d.Allowed || p.d.Policy != last.d.Policy {
					t.Fatalf("%s: second answer %+v differs from first %+v", name, last, p)
				}
			}
		}
		// Cached and uncached middleware agree.
		for _, pair := range [][2]string{{"inside cached", "inside uncached"}, {"outside cached", "outside uncached"}} {
			a, b := first[pair[0]], first[pair[1]]
			if a.code != b.code || a.reached != b.reached {
				t.Fatalf("%s %+v and %s %+v disagree", pair[0], a, pair[1], b)
			}
		}
	})
}

// validHeaderValue reports whether s survives Header.Set unchanged, so
// that the subject the middleware sees is the one fuzzed.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return len(s) == 0 || (s[0] != ' ' && s[len(s)-1] != ' ' && s[0] != '\t' && s[len(s)-1] != '\t')
}
