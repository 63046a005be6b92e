package waf

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
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

// heavyPost is a request with a body: an expensive inspection, of which
// one client may hold PerClient at once.
func heavyPost(ip string) *http.Request {
	return withClient(jsonPost("/v1/transfers", `{"from":"acc_1","to":"acc_2","amount":1}`), ip)
}

// lightGet is what a browser sends for a page or an asset.
func lightGet(ip, path string) *http.Request {
	r := withClient(httptest.NewRequest("GET", path, nil), ip)
	r.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36")
	r.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
	r.Header.Set("Accept-Language", "en-US,en;q=0.9")
	r.Header.Set("Cookie", "__Host-session=opaque-session-id; __Host-csrf=opaque-csrf-token")
	return r
}

// holder makes requests carrying X-Hold stop inside their slot until
// released, reporting their X-Hold value when they enter.
type holder struct {
	entered chan string
	hold    chan struct{}
}

func newHolder(w *WAF) *holder {
	h := &holder{entered: make(chan string, 64), hold: make(chan struct{})}
	w.holding = func(r *http.Request) {
		if v := r.Header.Get("X-Hold"); v != "" {
			h.entered <- v
			<-h.hold
		}
	}
	return h
}

// waitQueued waits until n requests wait for a slot (bounded: the
// requests were sent and have nothing else to do).
func waitQueued(t *testing.T, w *WAF, n int) {
	t.Helper()
	for range 2000 {
		w.pool.mu.Lock()
		q := len(w.pool.queue)
		w.pool.mu.Unlock()
		if q >= n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("fewer than %d requests queued", n)
}

// The pool: one address never holds more than PerClient slots with heavy
// requests (the next waits at most MaxWait, then 503 with Retry-After), so
// another address still gets one; with every slot held, a request waits
// MaxWait and is refused.
func TestConcurrencyCap(t *testing.T) {
	w := newSuiteWAF(t, Config{MaxConcurrent: 2, PerClient: 1, MaxWaiting: 4})
	w.cfg.MaxWait, w.cfg.LightMaxWait = 20*time.Millisecond, 20*time.Millisecond
	hd := newHolder(w)
	h := w.Handler(okHandler())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := heavyPost("198.51.100.1")
		r.Header.Set("X-Hold", "a")
		h.ServeHTTP(httptest.NewRecorder(), r)
	}()
	<-hd.entered
	// Same address, another heavy request: over its share, refused
	// although a slot is free.
	rec := httptest.NewRecorder()
	start := time.Now()
	h.ServeHTTP(rec, heavyPost("198.51.100.1"))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("second heavy request of one address: %d, Retry-After %q; want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("refusal took %v", d)
	}
	// Another address still gets the second slot.
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, heavyPost("198.51.100.2"))
	if rec.Code != http.StatusOK {
		t.Fatalf("another address: %d, want 200", rec.Code)
	}
	// Both slots held: a third address is refused, heavy or light.
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := heavyPost("198.51.100.3")
		r.Header.Set("X-Hold", "b")
		h.ServeHTTP(httptest.NewRecorder(), r)
	}()
	<-hd.entered
	for _, r := range []*http.Request{heavyPost("198.51.100.4"), lightGet("198.51.100.4", "/")} {
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" {
			t.Fatalf("pool full, %s: %d, Retry-After %q", r.Method, rec.Code, rec.Header().Get("Retry-After"))
		}
	}
	close(hd.hold)
	wg.Wait()
	if s := w.Stats(); s.Busy != 3 {
		t.Fatalf("busy count %d, want 3", s.Busy)
	}
}

// A browser loads a page and its assets in parallel from one address:
// light requests are not held to the per-client share of heavy ones, so
// a burst of a page and six assets, repeated, never sees a 503 — with the
// default pool, alone and while another address holds its heavy share.
func TestBrowserBurst(t *testing.T) {
	w := newSuiteWAF(t, Config{MaxConcurrent: 2})
	w.cfg.MaxWaiting, w.cfg.MaxWait, w.cfg.LightMaxWait = 64, defaultMaxWait, defaultLightMaxWait // the defaults
	hd := newHolder(w)
	h := w.Handler(okHandler())
	assets := []string{"/static/app.css", "/static/app.js", "/static/logo.svg", "/static/fonts.css", "/favicon.ico", "/static/i18n.json?lang=en"}
	burst := func(t *testing.T, rounds int) {
		t.Helper()
		codes := map[int]int{}
		var mu sync.Mutex
		for range rounds {
			var wg sync.WaitGroup
			for _, p := range append([]string{"/accounts?page=2"}, assets...) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, lightGet("198.51.100.20", p))
					mu.Lock()
					codes[rec.Code]++
					mu.Unlock()
				}()
			}
			wg.Wait()
		}
		if codes[http.StatusOK] != rounds*7 {
			t.Fatalf("%d bursts of a page and 6 assets: %v, want every one 200", rounds, codes)
		}
	}
	t.Run("alone", func(t *testing.T) { burst(t, 3) })
	t.Run("assets load while the page holds a slot", func(t *testing.T) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			r := lightGet("198.51.100.20", "/accounts")
			r.Header.Set("X-Hold", "page")
			h.ServeHTTP(httptest.NewRecorder(), r)
		}()
		<-hd.entered
		for _, p := range assets {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, lightGet("198.51.100.20", p))
			if rec.Code != http.StatusOK {
				t.Errorf("%s while the page is inspected: %d, want 200", p, rec.Code)
			}
		}
		close(hd.hold)
		<-done
		hd.hold = make(chan struct{})
	})
	t.Run("while another address holds its heavy share", func(t *testing.T) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			r := heavyPost("198.51.100.21")
			r.Header.Set("X-Hold", "attacker")
			h.ServeHTTP(httptest.NewRecorder(), r)
		}()
		<-hd.entered
		// The attacker's further heavy requests are refused at its
		// share; the browser's go through the remaining slot.
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, heavyPost("198.51.100.21"))
		if rec.Code != http.StatusServiceUnavailable {
			t.Errorf("the attacker's second heavy request: %d, want 503", rec.Code)
		}
		burst(t, 3)
		close(hd.hold)
		<-done
	})
	if s := w.Stats(); s.Busy != 1 {
		t.Fatalf("busy %d, want only the attacker's one refusal", s.Busy)
	}
}

// A freed slot goes to the client holding the fewest: a request of a
// second address that arrives after three of a flooding one starts
// before them.
func TestFairDispatch(t *testing.T) {
	w := newSuiteWAF(t, Config{MaxConcurrent: 1})
	w.cfg.LightMaxWait = time.Minute
	hd := newHolder(w)
	h := w.Handler(okHandler())
	var wg sync.WaitGroup
	send := func(ip, name string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := lightGet(ip, "/")
			r.Header.Set("X-Hold", name)
			h.ServeHTTP(httptest.NewRecorder(), r)
		}()
	}
	send("198.51.100.30", "flood-0")
	if got := <-hd.entered; got != "flood-0" {
		t.Fatalf("entered %q", got)
	}
	for i := 1; i <= 3; i++ {
		send("198.51.100.30", "flood-"+strconv.Itoa(i))
		waitQueued(t, w, i)
	}
	send("198.51.100.31", "victim")
	waitQueued(t, w, 4)
	var order []string
	go func() {
		for range 4 {
			hd.hold <- struct{}{}
		}
	}()
	hd.hold <- struct{}{} // flood-0 leaves
	for range 4 {
		order = append(order, <-hd.entered)
	}
	wg.Wait()
	if order[0] != "victim" {
		t.Fatalf("order after the flood's first request: %v, want the other address first", order)
	}
}

// One address cannot fill the queue: past PerClientWaiting waiting
// requests it is refused at once while another address still queues.
func TestPerClientWaiting(t *testing.T) {
	w := newSuiteWAF(t, Config{MaxConcurrent: 1, PerClientWaiting: 2})
	w.cfg.LightMaxWait = time.Minute
	hd := newHolder(w)
	h := w.Handler(okHandler())
	var wg sync.WaitGroup
	codes := make(chan int, 8)
	send := func(ip string, hold bool) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := lightGet(ip, "/")
			if hold {
				r.Header.Set("X-Hold", ip)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			codes <- rec.Code
		}()
	}
	send("198.51.100.40", true)
	<-hd.entered
	send("198.51.100.40", false)
	send("198.51.100.40", false)
	waitQueued(t, w, 2)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, lightGet("198.51.100.40", "/"))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("a third waiting request of one address: %d, want 503", rec.Code)
	}
	send("198.51.100.41", false)
	waitQueued(t, w, 3)
	close(hd.hold)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusOK {
			t.Fatalf("a queued request: %d, want 200", c)
		}
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

// A body of more values than MaxBodyArgs is refused with 400 before any
// rule runs: each value is an argument every rule inspects. Commas
// inside strings are not values.
func TestBodyArgsNotInspected(t *testing.T) {
	w := newSuiteWAF(t, Config{})
	w.cfg.MaxBodyArgs = 128 // the default, which the suite's WAF lifts
	h := w.Handler(okHandler())
	members := func(n int) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString(`"m` + strconv.Itoa(i) + `":1`)
		}
		return b.String() + "}"
	}
	for _, tc := range []struct {
		name, ct, body string
		want           int
		inspected      bool
	}{
		{"128 JSON members", "application/json", members(128), 200, true},
		{"129 JSON members", "application/json", members(129), 400, false},
		{"an array of 1000 elements", "application/json", `{"a":[` + strings.Repeat("1,", 999) + `1]}`, 400, false},
		{"commas inside a string", "application/json", `{"memo":"` + strings.Repeat(`a,\",`, 500) + `"}`, 200, true},
		{"129 form fields", "application/x-www-form-urlencoded", strings.Repeat("a=1&", 128) + "a=1", 400, false},
		{"a Reporting API batch of 20 reports elsewhere", "application/json", reportBatch(20), 400, false},
	} {
		before := w.Stats().Inspected()
		r := jsonPost("/v1/transfers", tc.body)
		r.Header.Set("Content-Type", tc.ct)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, rec.Code, tc.want)
		}
		if inspected := w.Stats().Inspected() > before; inspected != tc.inspected {
			t.Errorf("%s: inspected %v, want %v", tc.name, inspected, tc.inspected)
		}
	}
}

// reportBatch is what Chromium posts to a Reporting API endpoint: n CSP
// violation reports of 15 values each (as the gateway counts them).
func reportBatch(n int) string {
	one := `{"age":12,"type":"csp-violation","url":"https://bank.example/signin","user_agent":"Mozilla/5.0",` +
		`"body":{"blockedURL":"inline","columnNumber":7,"disposition":"enforce","documentURL":"https://bank.example/signin",` +
		`"effectiveDirective":"script-src-elem","lineNumber":12,"originalPolicy":"default-src 'self'","referrer":"",` +
		`"sample":"","sourceFile":"https://bank.example/signin","statusCode":200}}`
	return "[" + strings.Repeat(one+",", n-1) + one + "]"
}

// A report path admits a browser's whole batch (ReportBodyArgs), not
// MaxBodyArgs; a batch past it is still refused before inspection.
func TestReportBatchesFitTheReportPath(t *testing.T) {
	w := newSuiteWAF(t, Config{ReportPaths: []string{"/csp-report"}})
	w.cfg.MaxBodyArgs = 128 // the defaults, which the suite's WAF lifts
	w.cfg.ReportBodyArgs = 512
	h := w.Handler(okHandler())
	for _, tc := range []struct {
		n, want   int
		inspected bool
	}{{20, 200, true}, {40, 400, false}} {
		before := w.Stats().Inspected()
		r := jsonPost("/csp-report", reportBatch(tc.n))
		r.Header.Set("Content-Type", "application/reports+json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != tc.want {
			t.Errorf("a batch of %d reports: %d, want %d", tc.n, rec.Code, tc.want)
		}
		if inspected := w.Stats().Inspected() > before; inspected != tc.inspected {
			t.Errorf("a batch of %d reports: inspected %v, want %v", tc.n, inspected, tc.inspected)
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

// A browser's double click (or retry) of a form sends the same small post
// two or three times at once from one address: the posts wait their turn
// for the client's heavy share and are all answered, never 503; the
// client's next heavy request past PerClientHeavyWaiting is refused at
// once, so a flood still does not queue.
func TestDoubleSubmissionWaitsItsTurn(t *testing.T) {
	// RefusalDelay off: this test is about the queue (TestRefusalsAreHeld
	// about holding the refusal).
	w := newSuiteWAF(t, Config{MaxConcurrent: 4, PerClient: 1, PerClientHeavyWaiting: 2, RefusalDelay: -1})
	hd := newHolder(w)
	h := w.Handler(okHandler())
	var wg sync.WaitGroup
	codes := make(chan int, 4)
	post := func(hold bool) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := heavyPost("198.51.100.50")
			if hold {
				r.Header.Set("X-Hold", "first")
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			codes <- rec.Code
		}()
	}
	post(true)
	<-hd.entered
	post(false)
	post(false)
	waitQueued(t, w, 2)
	start := time.Now()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, heavyPost("198.51.100.50"))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("a heavy request past the client's waiting share: %d, Retry-After %q; want 503 at once", rec.Code, rec.Header().Get("Retry-After"))
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("the refusal waited %v; it must not queue", d)
	}
	close(hd.hold)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusOK {
			t.Fatalf("a waiting submission: %d, want 200", c)
		}
	}
}
