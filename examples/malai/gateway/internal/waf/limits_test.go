package waf

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/malai-sec/malai/clientip"
)

func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b)
	})
}

func jsonPost(path, body string) *http.Request {
	r := httptest.NewRequest("POST", path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("User-Agent", "malai-test/1.0")
	r.Header.Set("Accept", "application/json")
	return r
}

func withClient(r *http.Request, ip string) *http.Request {
	return r.WithContext(clientip.NewContext(r.Context(), netip.MustParseAddr(ip)))
}

// The pool: a second request waits at most MaxWait, then 503 with
// Retry-After; one address never holds more than PerClient slots, so
// another address still gets one.
func TestConcurrencyCap(t *testing.T) {
	w := newSuiteWAF(t, Config{MaxConcurrent: 2, PerClient: 1, MaxWaiting: 4})
	w.cfg.MaxWait = 20 * time.Millisecond
	hold := make(chan struct{})
	entered := make(chan string, 4)
	w.holding = func(r *http.Request) {
		if r.Header.Get("X-Hold") != "" {
			entered <- r.Header.Get("X-Hold")
			<-hold
		}
	}
	h := w.Handler(okHandler())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := withClient(httptest.NewRequest("GET", "/v1/accounts", nil), "198.51.100.1")
		r.Header.Set("X-Hold", "a")
		h.ServeHTTP(httptest.NewRecorder(), r)
	}()
	<-entered
	// Same address: over its share, refused quickly.
	rec := httptest.NewRecorder()
	start := time.Now()
	h.ServeHTTP(rec, withClient(httptest.NewRequest("GET", "/v1/accounts", nil), "198.51.100.1"))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("second request of one address: %d, Retry-After %q; want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("refusal took %v", d)
	}
	// Another address still gets the second slot.
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, withClient(httptest.NewRequest("GET", "/v1/accounts", nil), "198.51.100.2"))
	if rec.Code != http.StatusOK {
		t.Fatalf("another address: %d, want 200", rec.Code)
	}
	// Both global slots held: a third address is refused.
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := withClient(httptest.NewRequest("GET", "/v1/accounts", nil), "198.51.100.3")
		r.Header.Set("X-Hold", "b")
		h.ServeHTTP(httptest.NewRecorder(), r)
	}()
	<-entered
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, withClient(httptest.NewRequest("GET", "/v1/accounts", nil), "198.51.100.4"))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("pool full: %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	close(hold)
	wg.Wait()
	if s := w.Stats(); s.Busy != 2 {
		t.Fatalf("busy count %d, want 2", s.Busy)
	}
}

// A body over the limit is refused with 413 before any rule runs; so is
// a declared length over it.
func TestBodyOverLimitNotInspected(t *testing.T) {
	w := newSuiteWAF(t, Config{BodyLimit: 1024})
	h := w.Handler(okHandler())
	big := `{"memo":"` + strings.Repeat("a", 2000) + `"}`
	for _, name := range []string{"declared", "chunked", "route limit"} {
		before := w.Stats().Inspected()
		r := jsonPost("/v1/transfers", big)
		switch name {
		case "chunked":
			r.ContentLength = -1
		case "route limit":
			r = jsonPost("/v1/transfers", `{"memo":"`+strings.Repeat("a", 600)+`"}`)
			r = r.WithContext(WithBodyLimit(r.Context(), 512))
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != http.StatusRequestEntityTooLarge {
			t.Fatalf("%s: %d, want 413", name, rec.Code)
		}
		if w.Stats().Inspected() != before {
			t.Fatalf("%s: the rules ran on a body over the limit", name)
		}
	}
}

// Malformed JSON reaches the service, which answers its own 400; a body
// that Coraza cannot parse but that is valid JSON is refused here.
func TestMalformedJSONReachesService(t *testing.T) {
	w := newSuiteWAF(t, Config{})
	var reached atomic.Int32
	h := w.Handler(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		rw.WriteHeader(http.StatusBadRequest)
	}))
	for _, body := range []string{`{"from":`, `{"a":1}}`, `not json`} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, jsonPost("/v1/transfers", body))
		if rec.Code != http.StatusBadRequest {
			t.Fatalf("%q: %d, want the service's 400", body, rec.Code)
		}
	}
	if reached.Load() != 3 {
		t.Fatalf("service reached %d times, want 3", reached.Load())
	}
	// An attack in the query string of such a request is still refused.
	r := jsonPost("/v1/transfers?id=1'%20OR%20'1'='1'%20--", `{"from":`)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code != http.StatusForbidden {
		t.Fatalf("malformed body with an attack in the query: %d, want 403", rec.Code)
	}
}

// A WAF refusal calls OnBlock (the gateway's budget charge).
func TestOnBlock(t *testing.T) {
	var n atomic.Int32
	cfg := Config{OnBlock: func(*http.Request) { n.Add(1) }}
	w := newSuiteWAF(t, cfg)
	h := w.Handler(okHandler())
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, jsonPost("/v1/transfers", `{"memo":"<script>alert(1)</script>"}`))
	if rec.Code != http.StatusForbidden || n.Load() != 1 {
		t.Fatalf("status %d, OnBlock %d times", rec.Code, n.Load())
	}
}

// Over a real connection: a body that stalls is answered 408 after
// BodyTimeout; a client that leaves mid-body is recorded as 499; Expect:
// 100-continue is an ordinary request.
func TestSlowAndCancelledBodies(t *testing.T) {
	w := newSuiteWAF(t, Config{})
	w.cfg.BodyTimeout = 200 * time.Millisecond
	statuses := make(chan int, 4)
	rec := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			sr := &statusRecorder{ResponseWriter: rw}
			next.ServeHTTP(sr, r)
			statuses <- sr.status
		})
	}
	srv := httptest.NewServer(rec(w.Handler(okHandler())))
	defer srv.Close()

	t.Run("stalled body: 408", func(t *testing.T) {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, "POST /v1/transfers HTTP/1.1\r\nHost: localhost\r\nUser-Agent: t\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"from\":")
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(c)
		if !bytes.HasPrefix(b, []byte("HTTP/1.1 408")) {
			t.Fatalf("got %q", b)
		}
		if got := <-statuses; got != http.StatusRequestTimeout {
			t.Fatalf("recorded %d, want 408", got)
		}
	})
	t.Run("client leaves mid-body: recorded 499, not 200", func(t *testing.T) {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, "POST /v1/transfers HTTP/1.1\r\nHost: localhost\r\nUser-Agent: t\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"from\":")
		time.Sleep(20 * time.Millisecond) // the request must have started; not a timing assertion
		c.Close()
		if got := <-statuses; got != StatusClientClosed {
			t.Fatalf("recorded %d, want %d", got, StatusClientClosed)
		}
	})
	t.Run("Expect: 100-continue", func(t *testing.T) {
		body := `{"from":"acc_1","to":"acc_2","amount":100}`
		req, _ := http.NewRequestWithContext(context.Background(), "POST", srv.URL+"/v1/transfers", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Expect", "100-continue")
		req.Header.Set("Accept", "application/json")
		req.Header.Set("User-Agent", "curl/8.5.0")
		tr := &http.Transport{ExpectContinueTimeout: 5 * time.Second}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		<-statuses
		if resp.StatusCode != http.StatusOK || string(b) != body {
			t.Fatalf("status %d body %q", resp.StatusCode, b)
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(c int) {
	if s.status == 0 {
		s.status = c
	}
	s.ResponseWriter.WriteHeader(c)
}
func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
