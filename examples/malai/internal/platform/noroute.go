package platform

import (
	"net/http"

	"github.com/malai-sec/malai/problem"
)

// NoRoute answers a request mux has no route for in problem+json: 405
// with the Allow header when the path exists for other methods, else 404.
// Call it when mux.Handler(r) returned an empty pattern.
func NoRoute(w http.ResponseWriter, r *http.Request, mux *http.ServeMux) {
	h, _ := mux.Handler(r)
	rec := &statusOnly{header: http.Header{}}
	h.ServeHTTP(rec, r)
	if rec.status == http.StatusMethodNotAllowed {
		if allow := rec.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		problem.Write(w, r, problem.Problem{Status: http.StatusMethodNotAllowed, Type: "method-not-allowed",
			Title: "Method not allowed", Detail: "The route exists for other methods; see Allow."})
		return
	}
	problem.Write(w, r, problem.Problem{Status: http.StatusNotFound, Type: "not-found",
		Title: "Not found", Detail: "No such route."})
}

// statusOnly records what the mux's own 404/405 handler would write.
type statusOnly struct {
	header http.Header
	status int
}

func (s *statusOnly) Header() http.Header { return s.header }
func (s *statusOnly) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}
func (s *statusOnly) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return len(b), nil
}
