package correlation

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/malai-sec/malai/clientip"
	"github.com/malai-sec/malai/problem"
	"github.com/malai-sec/malai/route"
)

func mustNew(t *testing.T, cfg Config) *Middleware {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestInboundID(t *testing.T) {
	const good = "01JD8Z6X8W2Q4K0V3N5R7T9Y1B"
	tests := []struct {
		name    string
		trusted bool
		header  []string
		keep    bool
	}{
		{"trusted well formed", true, []string{good}, true},
		{"trusted uuid", true, []string{"3f2b8c1e-9a4d-4e7b-8f6a-1c2d3e4f5a6b"}, true},
		{"untrusted well formed", false, []string{good}, false},
		{"trusted oversized", true, []string{strings.Repeat("a", MaxIDLength+1)}, false},
		{"trusted malformed", true, []string{"abc def <script>"}, false},
		{"trusted log injection", true, []string{"abcdefgh\",\"level\":\"ERROR"}, false},
		{"trusted two headers", true, []string{good, good}, false},
		{"trusted none", true, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var seen string
			m := mustNew(t, Config{TrustIncoming: func(*http.Request) bool { return tc.trusted }})
			h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen, _ = IDFromContext(r.Context())
			}))
			req := httptest.NewRequest("GET", "/", nil)
			req.Header[headerKey] = tc.header
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			got := rec.Header().Values(HeaderName)
			if len(got) != 1 || got[0] != seen {
				t.Fatalf("response ids %q, context id %q: want one id equal to the context's", got, seen)
			}
			if tc.keep {
				if got[0] != tc.header[0] {
					t.Fatalf("id %q replaced by %q", tc.header[0], got[0])
				}
				return
			}
			for _, in := range tc.header {
				if strings.Contains(rec.Header().Get(HeaderName), in) {
					t.Fatalf("inbound id %q echoed", in)
				}
			}
			if len(got[0]) != IDLength || !ValidID(got[0]) {
				t.Fatalf("replacement %q is not a generated id", got[0])
			}
		})
	}
}

func TestZeroConfigDistrustsInbound(t *testing.T) {
	m := mustNew(t, Config{})
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set(HeaderName, "01JD8Z6X8W2Q4K0V3N5R7T9Y1B")
	rec := httptest.NewRecorder()
	m.Handler(http.NotFoundHandler()).ServeHTTP(rec, req)
	if got := rec.Header().Get(HeaderName); got == "01JD8Z6X8W2Q4K0V3N5R7T9Y1B" || !ValidID(got) {
		t.Fatalf("zero Config: response id %q", got)
	}
}

// TestGeneratedIDsOutliveTheRequest: each request gets its own id, the
// same in the handler's context and the response header, and an id kept
// after its request ended is not changed by later requests.
func TestGeneratedIDsOutliveTheRequest(t *testing.T) {
	m := mustNew(t, Config{})
	var kept []string
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := FromContext(r.Context())
		kept = append(kept, id)
		// Editing the response header's value in place does not change
		// the request's id.
		h := w.Header()[http.CanonicalHeaderKey(HeaderName)]
		h[0] = "edited"
		if again, _ := FromContext(r.Context()); again != id {
			t.Errorf("id changed to %q by editing the response header", again)
		}
		h[0] = id
		w.WriteHeader(http.StatusNoContent)
	}))
	var sent []string
	for range 50 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		if rec.Code != http.StatusNoContent {
			t.Fatalf("status %d", rec.Code)
		}
		sent = append(sent, rec.Header().Get(HeaderName))
	}
	seen := map[string]bool{}
	for i, id := range kept {
		if !ValidID(id) || len(id) != IDLength || id != sent[i] || seen[id] {
			t.Fatalf("request %d: context id %q, header %q (duplicate: %v)", i, id, sent[i], seen[id])
		}
		seen[id] = true
	}
}

// hop is one service of the end-to-end chain.
type hop struct {
	name string
	logs *syncBuffer
	srv  *httptest.Server
}

// TestOneIDEndToEnd chains gateway → service → worker through the
// Transport: one id in all three access logs, one trace id in every span.
func TestOneIDEndToEnd(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	newHop := func(name string, trust bool, next *hop) *hop {
		h := &hop{name: name, logs: &syncBuffer{}}
		var trustFn func(*http.Request) bool
		if trust {
			trustFn = func(*http.Request) bool { return true }
		}
		m := mustNew(t, Config{TrustIncoming: trustFn, Logger: jsonLogger(h.logs), TracerProvider: tp})
		client := &http.Client{Transport: m.Transport(nil)}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /"+name+"/{id}", func(w http.ResponseWriter, r *http.Request) {
			slog.New(NewLogHandler(slog.NewJSONHandler(h.logs, nil))).InfoContext(r.Context(), "inside", "hop", name)
			if next == nil {
				io.WriteString(w, "done")
				return
			}
			out, _ := http.NewRequestWithContext(r.Context(), "GET", next.srv.URL+"/"+next.name+"/7", nil)
			// A caller-set id must be overridden by the context's.
			out.Header.Set(HeaderName, "caller-chosen-id")
			resp, err := client.Do(out)
			if err != nil {
				http.Error(w, "upstream", http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			io.Copy(w, resp.Body)
		})
		h.srv = httptest.NewServer(m.Handler(mux))
		t.Cleanup(h.srv.Close)
		return h
	}
	worker := newHop("worker", true, nil)
	service := newHop("service", true, worker)
	gateway := newHop("gateway", false, service) // faces the client: trusts nothing

	req, _ := http.NewRequest("GET", gateway.srv.URL+"/gateway/1", nil)
	req.Header.Set(HeaderName, "client-forged-id-0001")
	req.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "done" {
		t.Fatalf("body %q", body)
	}
	id := resp.Header.Get(HeaderName)
	if id == "client-forged-id-0001" || !ValidID(id) {
		t.Fatalf("gateway answered id %q", id)
	}

	var traceID string
	for _, h := range []*hop{gateway, service, worker} {
		logs := h.accessLogsOrFail(t)
		if logs["request_id"] != id {
			t.Errorf("%s access log request_id = %v, want %s", h.name, logs["request_id"], id)
		}
		if logs["route"] != "/"+h.name+"/{id}" {
			t.Errorf("%s access log route = %v", h.name, logs["route"])
		}
		tid, _ := logs["trace_id"].(string)
		if traceID == "" {
			traceID = tid
		}
		if tid == "" || tid != traceID {
			t.Errorf("%s access log trace_id = %q, want %q", h.name, tid, traceID)
		}
		inside := false
		for _, r := range h.logs.records(t) {
			if r["msg"] == "inside" && r["request_id"] == id && r["trace_id"] == traceID {
				inside = true
			}
		}
		if !inside {
			t.Errorf("%s handler log lacks the ids: %s", h.name, h.logs.String())
		}
	}
	if traceID == "0af7651916cd43dd8448eb211c80319c" {
		t.Fatal("the gateway continued a trace chosen by the client")
	}

	spans := rec.Ended()
	if len(spans) != 5 { // 3 server spans, 2 client spans
		t.Fatalf("%d spans, want 5", len(spans))
	}
	names := map[string]bool{}
	for _, s := range spans {
		names[s.Name()] = true
		if got := s.SpanContext().TraceID().String(); got != traceID {
			t.Errorf("span %q in trace %s, want %s", s.Name(), got, traceID)
		}
		if s.SpanKind() == trace.SpanKindServer && !hasAttr(s.Attributes(), SpanAttribute, id) {
			t.Errorf("server span %q lacks %s=%s: %v", s.Name(), SpanAttribute, id, s.Attributes())
		}
	}
	for _, n := range []string{"GET /gateway/{id}", "GET /service/{id}", "GET /worker/{id}"} {
		if !names[n] {
			t.Errorf("no span named %q in %v", n, names)
		}
	}
	// The gateway's span links to the untrusted inbound context instead
	// of continuing it.
	for _, s := range spans {
		if s.Name() == "GET /gateway/{id}" {
			if s.Parent().IsValid() {
				t.Error("gateway span has a remote parent")
			}
			if len(s.Links()) != 1 || s.Links()[0].SpanContext.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" {
				t.Errorf("gateway span links = %v", s.Links())
			}
		}
	}
}

func (h *hop) accessLogsOrFail(t *testing.T) map[string]any {
	t.Helper()
	logs := h.logs.accessLogs(t)
	if len(logs) != 1 {
		t.Fatalf("%s: %d access logs, want 1: %s", h.name, len(logs), h.logs.String())
	}
	return logs[0]
}

func hasAttr(attrs []attribute.KeyValue, key, val string) bool {
	for _, a := range attrs {
		if string(a.Key) == key && a.Value.AsString() == val {
			return true
		}
	}
	return false
}

// withValue is a middleware that replaces the request, as most do; it
// hides the mux's r.Pattern from the layers outside it.
func withValue(next http.Handler) http.Handler {
	type k struct{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), k{}, 1)))
	})
}

func TestRoutePattern(t *testing.T) {
	newMux := func() *http.ServeMux {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /accounts/{id}", func(w http.ResponseWriter, r *http.Request) {})
		return mux
	}
	tests := []struct {
		name    string
		inner   func() http.Handler
		route   string
		resolve route.Resolver // Config.Route
	}{
		{"mux directly inside", func() http.Handler { return newMux() }, "/accounts/{id}", nil},
		{"route.Handler inside, before other middleware", func() http.Handler {
			mux := newMux()
			return route.Handler(route.ServeMux(mux))(withValue(mux))
		}, "/accounts/{id}", nil},
		{"Config.Route", func() http.Handler { return withValue(newMux()) }, "/accounts/{id}", route.ServeMux(newMux())},
		{"Config.Route, no route matches", func() http.Handler { return withValue(newMux()) }, "", func(*http.Request) string { return "" }},
		{"middleware between, RecordPattern", func() http.Handler { return withValue(RecordPattern(newMux())) }, "/accounts/{id}", nil},
		{"middleware between, no hook", func() http.Handler { return withValue(newMux()) }, "", nil},
		{"nested muxes: innermost wins", func() http.Handler {
			outer := http.NewServeMux()
			outer.Handle("/api/", RecordPattern(http.StripPrefix("/api", RecordPattern(newMux()))))
			return withValue(outer)
		}, "/accounts/{id}", nil},
		{"SetRoute from another router", func() http.Handler {
			return withValue(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				SetRoute(r.Context(), "/custom/:id")
			}))
		}, "/custom/:id", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs := &syncBuffer{}
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			m := mustNew(t, Config{Logger: jsonLogger(logs), TracerProvider: tp, Route: tc.resolve})
			path := "/accounts/42"
			if strings.HasPrefix(tc.name, "nested") {
				path = "/api/accounts/42"
			}
			m.Handler(tc.inner()).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
			al := logs.accessLogs(t)
			want := tc.route
			if want == "" {
				want = route.Unrouted
			}
			if len(al) != 1 || al[0]["route"] != want {
				t.Fatalf("access log route: %v, want %q", al, want)
			}
			wantName := "GET"
			if tc.route != "" {
				wantName = "GET " + tc.route
			}
			if sp := rec.Ended(); len(sp) != 1 || sp[0].Name() != wantName {
				t.Fatalf("span name %q, want %q", sp[0].Name(), wantName)
			}
		})
	}
}

func TestPanicAnswersProblem(t *testing.T) {
	logs := &syncBuffer{}
	m := mustNew(t, Config{Logger: jsonLogger(logs)})
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic("db password is hunter2")
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 500 || rec.Header().Get("Content-Type") != problem.ContentType {
		t.Fatalf("status %d, type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if body["correlation_id"] != rec.Header().Get(HeaderName) {
		t.Fatalf("problem correlation_id %v, header %q", body["correlation_id"], rec.Header().Get(HeaderName))
	}
	if strings.Contains(rec.Body.String()+logs.String(), "hunter2") {
		t.Fatal("panic value leaked")
	}
	al := logs.accessLogs(t)
	if len(al) != 1 || al[0]["status"] != float64(500) || al[0]["level"] != "ERROR" {
		t.Fatalf("access log %v", al)
	}
	var panicRec map[string]any
	for _, r := range logs.records(t) {
		if r["msg"] == "handler panicked" {
			panicRec = r
		}
	}
	if panicRec == nil || panicRec["request_id"] != body["correlation_id"] || panicRec["panic_type"] != "string" {
		t.Fatalf("panic record %v, want request_id %v and panic_type string", panicRec, body["correlation_id"])
	}
}

func TestPanicAfterHeaderAborts(t *testing.T) {
	logs := &syncBuffer{}
	called := false
	m := mustNew(t, Config{Logger: jsonLogger(logs), ErrorHandler: func(http.ResponseWriter, *http.Request, error) { called = true }})
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		io.WriteString(w, "partial")
		panic("boom")
	}))
	defer func() {
		if p := recover(); p != http.ErrAbortHandler {
			t.Fatalf("recovered %v, want http.ErrAbortHandler", p)
		}
		if called {
			t.Fatal("ErrorHandler ran after the header was sent")
		}
		if al := logs.accessLogs(t); len(al) != 1 || al[0]["status"] != float64(500) {
			t.Fatalf("access log %v", al)
		}
	}()
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
}

func TestAccessLogLeaksNothing(t *testing.T) {
	logs := &syncBuffer{}
	res, err := clientip.New(clientip.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	if err != nil {
		t.Fatal(err)
	}
	m := mustNew(t, Config{Logger: jsonLogger(logs), ClientIP: res})
	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "12345") })
	req := httptest.NewRequest("POST", "/login?token=qs-secret-1&code=qs-secret-2", strings.NewReader("password=body-secret"))
	req.Header.Set("Authorization", "Bearer auth-secret")
	req.Header.Set("Cookie", "session=cookie-secret")
	req.Header.Set("X-Forwarded-For", "198.51.100.7, 203.0.113.9") // from the trusted 192.0.2.1
	m.Handler(mux).ServeHTTP(httptest.NewRecorder(), req)
	out := logs.String()
	for _, s := range []string{"qs-secret", "auth-secret", "cookie-secret", "body-secret", "token", "Bearer"} {
		if strings.Contains(out, s) {
			t.Errorf("access log contains %q: %s", s, out)
		}
	}
	al := logs.accessLogs(t)
	if len(al) != 1 {
		t.Fatalf("access logs: %v", al)
	}
	want := map[string]any{"method": "POST", "route": "/login", "status": float64(200), "bytes": float64(5), "client_ip": "203.0.113.9", "level": "INFO"}
	for k, v := range want {
		if al[0][k] != v {
			t.Errorf("%s = %v, want %v", k, al[0][k], v)
		}
	}
	if _, ok := al[0]["duration"].(float64); !ok {
		t.Errorf("duration missing: %v", al[0])
	}
}

func TestDurationUsesInjectedClock(t *testing.T) {
	clk := newFakeClock()
	logs := &syncBuffer{}
	m := mustNew(t, Config{Logger: jsonLogger(logs), Now: clk.Now})
	m.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { clk.Advance(1500 * time.Microsecond) })).
		ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	if al := logs.accessLogs(t); len(al) != 1 || al[0]["duration"] != 0.0015 {
		t.Fatalf("access log %v, want duration 0.0015 (s)", al)
	}
}

func TestTransportDoesNotMutateRequest(t *testing.T) {
	var got http.Header
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		got = r.Header
		return &http.Response{StatusCode: 204, Body: http.NoBody, Request: r}, nil
	})
	rt := Transport(base, nil)

	ctx, id := ContextWithID(context.Background(), "01JD8Z6X8W2Q4K0V3N5R7T9Y1B")
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx = trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://127.0.0.1/x", nil)
	req.Header.Set(HeaderName, "stale-id-0000")
	if _, err := rt.RoundTrip(req); err != nil {
		t.Fatal(err)
	}
	if got.Get(HeaderName) != id {
		t.Fatalf("outbound id %q, want %q", got.Get(HeaderName), id)
	}
	if tp := got.Get("Traceparent"); tp != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Fatalf("traceparent %q", tp)
	}
	if req.Header.Get(HeaderName) != "stale-id-0000" || req.Header.Get("Traceparent") != "" {
		t.Fatal("the caller's request was modified")
	}

	// Without an id or a span the request passes through untouched.
	plain, _ := http.NewRequest("GET", "http://127.0.0.1/x", nil)
	if _, err := rt.RoundTrip(plain); err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("headers added to a request without context: %v", got)
	}
}

func TestContextWithIDReplacesInvalid(t *testing.T) {
	ctx, id := ContextWithID(context.Background(), "bad id\n")
	if got, _ := IDFromContext(ctx); got != id || !ValidID(id) || id == "bad id\n" {
		t.Fatalf("ContextWithID stored %q, returned %q", got, id)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestWrappedLoggerNoDuplicateIDs(t *testing.T) {
	logs := &syncBuffer{}
	logger := slog.New(NewLogHandler(slog.NewJSONHandler(logs, nil)))
	m := mustNew(t, Config{Logger: logger})
	m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logger.InfoContext(r.Context(), "inside")
	})).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %s", len(lines), logs.String())
	}
	for _, l := range lines {
		if n := strings.Count(l, `"request_id"`); n != 1 {
			t.Errorf("request_id appears %d times in %s", n, l)
		}
	}
}

func FuzzInboundID(f *testing.F) {
	for _, tc := range idCases {
		f.Add(tc.in)
	}
	m, err := New(Config{TrustIncoming: func(*http.Request) bool { return true }})
	if err != nil {
		f.Fatal(err)
	}
	var seen string
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen, _ = IDFromContext(r.Context())
	}))
	f.Fuzz(func(t *testing.T, in string) {
		req := httptest.NewRequest("GET", "/", nil)
		req.Header[headerKey] = []string{in}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		got := rec.Header().Get(HeaderName)
		if got != seen || !ValidID(got) {
			t.Fatalf("response id %q, context id %q", got, seen)
		}
		if got == in && !ValidID(in) {
			t.Fatalf("invalid inbound id %q echoed", in)
		}
		if ValidID(in) && got != in {
			t.Fatalf("valid trusted id %q replaced by %q", in, got)
		}
	})
}

// TestFlushAndHijackThroughStack checks that the recording writer keeps
// streaming and connection takeover working under the full stack.
func TestFlushAndHijackThroughStack(t *testing.T) {
	logs := &syncBuffer{}
	tp := sdktrace.NewTracerProvider()
	m := mustNew(t, Config{Logger: jsonLogger(logs), TracerProvider: tp})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "data: 1\n\n")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("Flush: %v", err)
		}
	})
	mux.HandleFunc("GET /raw", func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		defer conn.Close()
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nraw")
		buf.Flush()
	})
	h := m.Handler(mux)
	served := make(chan struct{}, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		served <- struct{}{} // the access log is written by now
	}))
	defer srv.Close()
	for path, want := range map[string]string{"/events": "data: 1\n\n", "/raw": "raw"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != want {
			t.Fatalf("%s: body %q, want %q", path, body, want)
		}
	}
	<-served
	<-served
	if n := len(logs.accessLogs(t)); n != 2 {
		t.Fatalf("%d access logs, want 2", n)
	}
}

func TestNewRejectsLoggerWithoutHandler(t *testing.T) {
	if _, err := New(Config{Logger: &slog.Logger{}}); !errors.Is(err, ErrConfig) {
		t.Fatalf("err = %v, want ErrConfig", err)
	}
}

// Inner layers see the route Config.Route resolved and the address
// Config.ClientIP resolved, and can enrich the access log.
func TestEntryResolutionAndEnrichment(t *testing.T) {
	logs := &syncBuffer{}
	res, err := clientip.New(clientip.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	var gotRoute string
	var gotAddr netip.Addr
	mux.HandleFunc("POST /transfers", func(w http.ResponseWriter, r *http.Request) {
		AddAttrs(r.Context(), slog.String("tenant", "acme"))
		w.WriteHeader(http.StatusCreated)
	})
	authn := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			gotRoute = route.Pattern(r) // before the mux has routed
			gotAddr, _ = clientip.FromContext(r.Context())
			AddAttrs(r.Context(), slog.String("subject", "alice"))
			next.ServeHTTP(w, r.WithContext(r.Context()))
		})
	}
	m := mustNew(t, Config{Logger: jsonLogger(logs), ClientIP: res, Route: route.ServeMux(mux), Header: "X-Correlation-ID"})
	req := httptest.NewRequest("POST", "/transfers", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.50")
	rec := httptest.NewRecorder()
	m.Handler(authn(mux)).ServeHTTP(rec, req)
	if gotRoute != "POST /transfers" || gotAddr != netip.MustParseAddr("203.0.113.50") {
		t.Fatalf("inside: route %q addr %v", gotRoute, gotAddr)
	}
	if id := rec.Header().Get("X-Correlation-ID"); !ValidID(id) || rec.Header().Get(HeaderName) != "" {
		t.Fatalf("id header %q, X-Request-ID %q", id, rec.Header().Get(HeaderName))
	}
	al := logs.accessLogs(t)
	if len(al) != 1 || al[0]["subject"] != "alice" || al[0]["tenant"] != "acme" || al[0]["route"] != "/transfers" ||
		al[0]["client_ip"] != "203.0.113.50" || al[0]["request_id"] != rec.Header().Get("X-Correlation-ID") {
		t.Fatalf("access log %v", al)
	}
	AddAttrs(context.Background(), slog.String("x", "y")) // outside a request: nothing
	if _, err := New(Config{Header: "X Bad"}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("bad header name: %v", err)
	}
}

// A configured propagator reaches the outbound transport: baggage travels
// with the trace context, under the configured id header.
func TestPropagatorAndHeaderReachTransport(t *testing.T) {
	var got http.Header
	next := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone() }))
	defer next.Close()
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	tp := sdktrace.NewTracerProvider()
	m := mustNew(t, Config{TracerProvider: tp, Propagator: prop, Header: "X-Correlation-ID"})
	client := &http.Client{Transport: m.Transport(nil)}
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		member, _ := baggage.NewMember("tenant", "acme")
		bag, _ := baggage.New(member)
		req, _ := http.NewRequestWithContext(baggage.ContextWithBaggage(r.Context(), bag), "GET", next.URL, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		resp.Body.Close()
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if got.Get("Baggage") != "tenant=acme" || got.Get("Traceparent") == "" || got.Get("X-Correlation-Id") != rec.Header().Get("X-Correlation-ID") {
		t.Fatalf("outbound headers %v", got)
	}
}
