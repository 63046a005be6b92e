package correlation

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/malai-sec/malai/clientip"
)

// TestServerSpan: the server span's name, kind, attributes and status,
// with the client address resolved through the trusted proxy only.
func TestServerSpan(t *testing.T) {
	res, err := clientip.New(clientip.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /accounts/{id}", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("12345")) })
	mux.HandleFunc("POST /boom", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	tests := []struct {
		name, method, path, peer, xff string
		wantName                      string
		want                          map[string]any
		wantError                     bool
	}{
		{"read through the trusted proxy", "GET", "/accounts/42", "192.0.2.1:40000", "203.0.113.9", "GET /accounts/{id}", map[string]any{
			AttrMethod: "GET", AttrScheme: "http", attrURLPath: "/accounts/42", attrServerAddress: "bank.example", attrServerPort: int64(8443),
			attrPeerAddress: "192.0.2.1", attrPeerPort: int64(40000), attrClientAddress: "203.0.113.9", attrUserAgent: "probe/1",
			AttrProtocolVersion: "1.1", AttrStatusCode: int64(200), attrResponseSize: int64(5), AttrRoute: "/accounts/{id}"}, false},
		{"forwarded header from an untrusted peer is ignored", "GET", "/accounts/42", "198.51.100.7:40000", "203.0.113.9", "GET /accounts/{id}", map[string]any{
			attrClientAddress: "198.51.100.7", attrPeerAddress: "198.51.100.7"}, false},
		{"5xx is an error", "POST", "/boom", "198.51.100.7:40000", "", "POST /boom", map[string]any{
			AttrStatusCode: int64(502), AttrErrorType: "502"}, true},
		{"404 is not, and is unrouted", "GET", "/nothing", "198.51.100.7:40000", "", "GET", map[string]any{
			AttrStatusCode: int64(404)}, false},
		{"unknown method cannot mint names", "BREW", "/accounts/42", "198.51.100.7:40000", "", "HTTP", map[string]any{
			AttrMethod: "_OTHER", attrMethodOriginal: "BREW"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			m := mustNew(t, Config{TracerProvider: tp, ClientIP: res})
			req := httptest.NewRequest(tc.method, "http://bank.example:8443"+tc.path, nil)
			req.RemoteAddr = tc.peer
			req.Header.Set("User-Agent", "probe/1")
			if tc.xff != "" {
				req.Header.Set("X-Forwarded-For", tc.xff)
			}
			m.Handler(mux).ServeHTTP(httptest.NewRecorder(), req)
			spans := rec.Ended()
			if len(spans) != 1 {
				t.Fatalf("%d spans ended, want 1", len(spans))
			}
			s := spans[0]
			if s.Name() != tc.wantName || s.SpanKind() != trace.SpanKindServer {
				t.Errorf("span %q kind %v, want %q server", s.Name(), s.SpanKind(), tc.wantName)
			}
			got := map[string]any{}
			for _, kv := range s.Attributes() {
				got[string(kv.Key)] = kv.Value.AsInterface()
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
				}
			}
			if id, ok := got[SpanAttribute].(string); !ok || !ValidID(id) {
				t.Errorf("%s = %v", SpanAttribute, got[SpanAttribute])
			}
			if (s.Status().Code == codes.Error) != tc.wantError {
				t.Errorf("status %v, want error %v", s.Status(), tc.wantError)
			}
		})
	}
}

// TestUnsampledSpan: a request the sampler drops still has a valid span
// context for the handler (and outbound calls) and reaches no processor.
func TestUnsampledSpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()), sdktrace.WithSpanProcessor(rec))
	m := mustNew(t, Config{TracerProvider: tp})
	var sc trace.SpanContext
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sc = trace.SpanContextFromContext(r.Context())
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	if !sc.IsValid() || sc.IsSampled() {
		t.Fatalf("span context %v: want valid, not sampled", sc)
	}
	if n := len(rec.Ended()) + len(rec.Started()); n != 0 {
		t.Fatalf("processor saw %d spans of an unsampled request", n)
	}
}
