package platform

import (
	"net/http"
	"net/http/httptest"
)

// HandlerTransport is a RoundTripper that serves every request with h in
// process, without a network hop (identity reading its own key set).
func HandlerTransport(h http.Handler) http.RoundTripper { return handlerTransport{h} }

type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	res := rec.Result()
	res.Request = r
	return res, nil
}
