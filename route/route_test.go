package route_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/malai-sec/malai/route"
)

// seen records, for each request, what route.Pattern reports to a
// middleware and to the handler.
type seen struct{ mw, handler string }

func TestServeMuxResolverBeforeRouting(t *testing.T) {
	mux := http.NewServeMux()
	var got seen
	mux.HandleFunc("GET /accounts/{id}", func(w http.ResponseWriter, r *http.Request) { got.handler = route.Pattern(r) })
	mux.HandleFunc("POST /transfers", func(w http.ResponseWriter, r *http.Request) { got.handler = route.Pattern(r) })
	mw := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got.mw = route.Label(r)
			next.ServeHTTP(w, r)
		})
	}
	h := route.Handler(route.ServeMux(mux))(mw(mux))
	for _, tc := range []struct {
		method, path string
		want         seen
	}{
		{"GET", "/accounts/7", seen{"GET /accounts/{id}", "GET /accounts/{id}"}},
		{"POST", "/transfers", seen{"POST /transfers", "POST /transfers"}},
		{"GET", "/transfers", seen{route.Unrouted, ""}},             // 405
		{"GET", "/nowhere", seen{route.Unrouted, ""}},               // 404
		{"GET", "/accounts/../transfers", seen{route.Unrouted, ""}}, // the mux redirects
	} {
		got = seen{}
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(tc.method, tc.path, nil))
		if got != tc.want {
			t.Errorf("%s %s: %+v, want %+v", tc.method, tc.path, got, tc.want)
		}
	}
}

func TestPatternSources(t *testing.T) {
	r := httptest.NewRequest("GET", "/a", nil)
	if route.Pattern(r) != "" || route.Label(r) != route.Unrouted {
		t.Fatal("an unrouted request has a pattern")
	}
	r.Pattern = "GET /a"
	if route.Pattern(r) != "GET /a" {
		t.Fatal("r.Pattern ignored")
	}
	r = r.WithContext(route.NewContext(r.Context(), "GET /{x}"))
	if route.Pattern(r) != "GET /{x}" {
		t.Fatal("the resolved pattern must win over r.Pattern")
	}
	if p, ok := route.FromContext(route.NewContext(r.Context(), "")); ok || p != "" {
		t.Fatal("an empty pattern counts as present")
	}
}

// An outer layer learns the route from Handler, from RecordPattern, and
// keeps the first one recorded.
func TestRecorder(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /a/{id}", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("GET /panic", func(http.ResponseWriter, *http.Request) { panic("boom") })
	outer := func(inner http.Handler, path string) (recorded string) {
		r := httptest.NewRequest("GET", path, nil)
		ctx, rec := route.WithRecorder(r.Context())
		defer func() {
			_ = recover()
			recorded = rec.Recorded()
		}()
		// Other middleware between the recorder and the mux replaces the
		// request, so the mux's r.Pattern never reaches the outer layer.
		between := func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				next.ServeHTTP(w, r.WithContext(r.Context()))
			})
		}
		between(inner).ServeHTTP(httptest.NewRecorder(), r.WithContext(ctx))
		return rec.Recorded()
	}
	if got := outer(route.RecordPattern(mux), "/a/1"); got != "GET /a/{id}" {
		t.Errorf("RecordPattern: %q", got)
	}
	if got := outer(route.RecordPattern(mux), "/panic"); got != "GET /panic" {
		t.Errorf("RecordPattern through a panic: %q", got)
	}
	if got := outer(route.Handler(route.ServeMux(mux))(mux), "/a/2"); got != "GET /a/{id}" {
		t.Errorf("Handler: %q", got)
	}
	if got := outer(route.RecordPattern(mux), "/missing"); got != "" {
		t.Errorf("a 404 recorded %q", got)
	}
	first := route.Handler(func(*http.Request) string { return "first" })(route.RecordPattern(mux))
	if got := outer(first, "/a/3"); got != "first" {
		t.Errorf("first recorded must win: %q", got)
	}
	route.Record(t.Context(), "nowhere") // no recorder: nothing happens
}
