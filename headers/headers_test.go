package headers

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/malai-sec/malai/clientip"
	"github.com/unrolled/secure"
)

// strictSet is what every HTTPS response must carry with the zero Config.
func strictSet() map[string]string {
	return map[string]string{
		HeaderHSTS:                "max-age=31536000; includeSubDomains; preload",
		HeaderCSP:                 APIPolicy,
		HeaderFrameOptions:        "DENY",
		HeaderContentTypeOptions:  "nosniff",
		HeaderReferrerPolicy:      "no-referrer",
		HeaderCrossOriginOpener:   "same-origin",
		HeaderCrossOriginResource: "same-origin",
		HeaderPermissionsPolicy:   DenyAllPermissionsPolicy,
		HeaderCacheControl:        "no-store",
		HeaderXSSProtection:       "0",
	}
}

// checkSet fails unless h carries exactly one value for every header in
// want, equal to it, and none of the fingerprinting headers.
func checkSet(t *testing.T, h http.Header, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	for k := range want {
		vs := h.Values(k)
		if len(vs) != 1 {
			t.Errorf("%s: %d values %q, want exactly one", k, len(vs), vs)
		}
		got[k] = strings.Join(vs, " | ")
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("security headers (-want +got):\n%s", d)
	}
	for _, k := range []string{"Server", "X-Powered-By", "X-Aspnet-Version"} {
		if v := h.Values(k); len(v) > 0 {
			t.Errorf("fingerprinting header %s: %q survived", k, v)
		}
	}
}

// weaken is what a misbehaving handler does to the header map.
func weaken(h http.Header) {
	h.Set(HeaderHSTS, "max-age=0")
	h.Set(HeaderFrameOptions, "ALLOWALL")
	h.Set(HeaderCSP, "default-src *")
	h.Set(HeaderContentTypeOptions, "sniff")
	h.Set(HeaderReferrerPolicy, "unsafe-url")
	h.Set(HeaderCrossOriginResource, "cross-origin")
	h.Set(HeaderXSSProtection, "1; mode=block")
	h.Set(HeaderCacheControl, "public, max-age=86400")
	h.Set("Server", "Apache/2.2.3")
	h.Set("X-Powered-By", "PHP/5.2")
	// Non-canonical spellings go straight into the map: net/http would
	// send them as second, conflicting fields.
	h["x-frame-options"] = []string{"ALLOWALL"}
	h["content-security-policy"] = []string{"script-src *"}
	h["x-aspnet-version"] = []string{"4.0"}
}

func mustNew(t testing.TB, cfg Config) *Middleware {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

func serveTLS(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, srv *httptest.Server, path string) *http.Response {
	t.Helper()
	c := srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	res, err := c.Get(srv.URL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// Every handler below tries, one way or another, to send a response
// without the mandatory set or with weakened values.
func TestSurvivesMisbehavingHandlers(t *testing.T) {
	content := strings.NewReader("static file body")
	tests := []struct {
		name       string
		handler    http.Handler
		wantStatus int
	}{
		{"deletes every header", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for _, k := range []string{HeaderHSTS, HeaderCSP, HeaderFrameOptions, HeaderContentTypeOptions} {
				w.Header().Del(k)
			}
			io.WriteString(w, "ok")
		}), 200},
		{"overwrites with weak values", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			weaken(w.Header())
			w.WriteHeader(http.StatusCreated)
		}), 201},
		{"clears the map then writes", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			clear(w.Header())
			weaken(w.Header())
			io.WriteString(w, "ok")
		}), 200},
		{"writes nothing", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			weaken(w.Header())
		}), 200},
		{"http.Error", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			weaken(w.Header())
			http.Error(w, "boom", http.StatusInternalServerError)
		}), 500},
		{"http.Redirect", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			weaken(w.Header())
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		}), 302},
		{"mux 404", http.NewServeMux(), 404},
		{"http.ServeContent", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			weaken(w.Header())
			http.ServeContent(w, r, "f.txt", time.Unix(0, 0), content)
		}), 200},
		{"ReadFrom", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			weaken(w.Header())
			w.(io.ReaderFrom).ReadFrom(strings.NewReader("copied"))
		}), 200},
		{"panics under an inner recovery middleware", recoverer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			weaken(w.Header())
			panic("handler bug")
		})), 500},
	}
	m := mustNew(t, Config{})
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		for _, tc := range tests {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				srv := httptest.NewUnstartedServer(m.Handler(tc.handler))
				srv.EnableHTTP2 = proto == "HTTP/2.0"
				srv.StartTLS()
				t.Cleanup(srv.Close)
				res := get(t, srv, "/x")
				if res.StatusCode != tc.wantStatus || res.Proto != proto {
					t.Fatalf("%s status %d, want %s %d", res.Proto, res.StatusCode, proto, tc.wantStatus)
				}
				checkSet(t, res.Header, strictSet())
			})
		}
	}
}

// recoverer is a typical recovery middleware: it answers 500 on panic.
func recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// A recovery middleware outside the headers middleware writes to the raw
// writer after the panic unwound through us: the map was stamped on the
// way out, so its 500 still carries the set.
func TestPanicUnderOuterRecovery(t *testing.T) {
	m := mustNew(t, Config{})
	srv := serveTLS(t, recoverer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		weaken(w.Header())
		panic("handler bug")
	}))))
	res := get(t, srv, "/")
	if res.StatusCode != 500 {
		t.Fatalf("status %d", res.StatusCode)
	}
	checkSet(t, res.Header, strictSet())
}

// The header reaches the client on the first Flush, before the handler
// returns, and already carries the set.
func TestSurvivesStreamingFlush(t *testing.T) {
	release := make(chan struct{})
	m := mustNew(t, Config{})
	srv := serveTLS(t, m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		weaken(w.Header())
		io.WriteString(w, "event: 1\n\n")
		rc := http.NewResponseController(w)
		if err := rc.Flush(); err != nil {
			t.Errorf("Flush: %v", err)
		}
		if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			t.Errorf("SetWriteDeadline through Unwrap: %v", err)
		}
		<-release
		weaken(w.Header()) // too late to matter, and must not corrupt anything
		io.WriteString(w, "event: 2\n\n")
	})))
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // runs before the server's Close, even after a failure
	res, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	checkSet(t, res.Header, strictSet()) // received while the handler is blocked
	line, _ := bufio.NewReader(res.Body).ReadString('\n')
	if line != "event: 1\n" {
		t.Fatalf("first event %q", line)
	}
	unblock()
	// The next response is unaffected by the late mutation above.
	checkSet(t, get(t, srv, "/").Header, strictSet())
}

// A handler that switches protocols with WriteHeader(101) and then hijacks
// still sends the set on the 101, and Hijack keeps working.
func TestSurvivesUpgradeAndHijack(t *testing.T) {
	m := mustNew(t, Config{})
	srv := httptest.NewServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		weaken(w.Header())
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "echo")
		w.WriteHeader(http.StatusSwitchingProtocols)
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		defer conn.Close()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo:" + line)
		brw.Flush()
	})))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 101 {
		t.Fatalf("status %d", res.StatusCode)
	}
	want := strictSet()
	delete(want, HeaderHSTS) // plain HTTP: no HSTS
	checkSet(t, res.Header, want)
	fmt.Fprintf(conn, "hello\n")
	got, _ := br.ReadString('\n')
	if got != "echo:hello\n" {
		t.Fatalf("after hijack got %q", got)
	}
}

// Mutating the header slice in place after the header was sent must not
// reach the values the middleware uses for other responses.
func TestInPlaceMutationDoesNotLeak(t *testing.T) {
	m := mustNew(t, Config{})
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		for _, vs := range w.Header() {
			for i := range vs {
				vs[i] = "corrupted"
			}
		}
	}))
	for range 2 {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "https://example.com/", nil)
		h.ServeHTTP(rec, req)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "https://example.com/", nil))
	checkSet(t, rec.Result().Header, strictSet())
}

func TestHSTSOnlyOverHTTPS(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	res, err := clientip.New(clientip.Config{TrustedProxies: proxies})
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]Config{"ClientIP": {ClientIP: res}, "TrustedProxies": {TrustedProxies: proxies}} {
		t.Run(name, func(t *testing.T) { testHSTSOnlyOverHTTPS(t, mustNew(t, cfg)) })
	}
}

func testHSTSOnlyOverHTTPS(t *testing.T, m *Middleware) {
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(HeaderHSTS, "max-age=0")
	}))
	tests := []struct {
		name   string
		tls    bool
		remote string
		proto  []string
		want   string
	}{
		{"direct TLS", true, "192.0.2.1:1234", nil, strictSet()[HeaderHSTS]},
		{"plain HTTP", false, "192.0.2.1:1234", nil, ""},
		{"trusted proxy says https", false, "10.1.2.3:1234", []string{"https"}, strictSet()[HeaderHSTS]},
		{"trusted proxy over mapped IPv6", false, "[::ffff:10.1.2.3]:1234", []string{"https"}, strictSet()[HeaderHSTS]},
		{"trusted proxy says http", false, "10.1.2.3:1234", []string{"http"}, ""},
		{"trusted proxy, two values", false, "10.1.2.3:1234", []string{"https", "http"}, ""},
		{"untrusted peer says https", false, "192.0.2.1:1234", []string{"https"}, ""},
		{"garbage RemoteAddr", false, "nonsense", []string{"https"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "http://example.com/", nil)
			req.RemoteAddr = tc.remote
			if tc.tls {
				req.TLS = &tls.ConnectionState{}
			}
			for _, p := range tc.proto {
				req.Header.Add("X-Forwarded-Proto", p)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if got := rec.Result().Header.Get(HeaderHSTS); got != tc.want {
				t.Fatalf("HSTS %q, want %q", got, tc.want)
			}
		})
	}
}

const webPolicy = "default-src 'self'; script-src 'self' $NONCE; style-src 'self' $NONCE; object-src 'none'; base-uri 'self'; form-action 'self'"

func TestPerAppCSPAndNonce(t *testing.T) {
	m := mustNew(t, Config{
		Apps:   map[string]App{"web": {CSP: webPolicy}},
		Select: ByPathPrefix(map[string]string{"/app/": "web", "/app/api/": ""}),
	})
	nonces := make(chan string, 2)
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, ok := NonceFromContext(r.Context())
		if ok != (n != "") || n != secure.CSPNonce(r.Context()) {
			t.Errorf("NonceFromContext = %q,%v; secure.CSPNonce = %q", n, ok, secure.CSPNonce(r.Context()))
		}
		nonces <- n
		w.Header().Set(HeaderCacheControl, "max-age=600")
		fmt.Fprintf(w, `<script nonce="%s">`, n)
	}))
	serve := func(path string) (http.Header, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "https://example.com"+path, nil))
		return rec.Result().Header, <-nonces
	}

	apiHdr, apiNonce := serve("/app/api/v1/accounts")
	if apiNonce != "" {
		t.Errorf("API request got a nonce %q", apiNonce)
	}
	checkSet(t, apiHdr, strictSet())

	seen := map[string]bool{}
	for range 2 {
		hdr, nonce := serve("/app/index.html")
		if len(nonce) != 24 || seen[nonce] {
			t.Fatalf("nonce %q: want a fresh 16-byte base64 value", nonce)
		}
		seen[nonce] = true
		want := strictSet()
		want[HeaderCSP] = strings.ReplaceAll(webPolicy, NoncePlaceholder, "'nonce-"+nonce+"'") + "; frame-ancestors 'none'"
		checkSet(t, hdr, want) // includes Cache-Control: no-store despite the handler
	}
}

func TestReportOnlyAndKeepCacheControl(t *testing.T) {
	m := mustNew(t, Config{Default: App{CSPReportOnly: true, KeepHandlerCacheControl: true, CrossOriginResourcePolicy: "cross-origin"}})
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/asset" {
			w.Header().Set(HeaderCacheControl, "public, max-age=3600")
		}
		w.Header().Set(HeaderCSP, "default-src *")
	}))
	for path, cache := range map[string]string{"/asset": "public, max-age=3600", "/page": "no-store"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "https://example.com"+path, nil))
		want := strictSet()
		delete(want, HeaderCSP)
		want[HeaderCSPReportOnly] = APIPolicy
		want[HeaderCacheControl] = cache
		want[HeaderCrossOriginResource] = "cross-origin"
		checkSet(t, rec.Result().Header, want)
		if v := rec.Result().Header.Values(HeaderCSP); len(v) != 0 {
			t.Errorf("%s: handler's enforced CSP %q survived in report-only mode", path, v)
		}
	}
}

func TestRefusedRequestsCarryHeaders(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want error
	}{
		{"unknown app", Config{Apps: map[string]App{"web": {}}, Select: func(*http.Request) string { return "nope" }}, ErrUnknownApp},
		{"nonce source fails", Config{Default: App{CSP: webPolicy}, Rand: failingReader{}}, ErrNonce},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got error
			cfg := tc.cfg
			cfg.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
				got = err
				DefaultErrorHandler(w, r, err)
			}
			called := false
			h := mustNew(t, cfg).Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "https://example.com/", nil))
			if called || !errors.Is(got, tc.want) || rec.Code != 500 {
				t.Fatalf("called=%v err=%v status=%d", called, got, rec.Code)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q", ct)
			}
			checkSet(t, rec.Result().Header, strictSet())
		})
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("entropy exhausted") }

func TestAltSvcHook(t *testing.T) {
	calls := 0
	m := mustNew(t, Config{AltSvc: func(h http.Header) error {
		calls++
		h["Alt-Svc"] = append(h["Alt-Svc"], `h3=":443"; ma=2592000`)
		return nil
	}})
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Alt-Svc", `h3="evil.example:443"`)
	}))
	for _, scheme := range []string{"https", "http"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", scheme+"://example.com/", nil))
		got := rec.Result().Header.Values("Alt-Svc")
		want := []string{`h3=":443"; ma=2592000`}
		if scheme == "http" {
			want = nil
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s Alt-Svc (-want +got):\n%s", scheme, d)
		}
	}
	if calls != 1 {
		t.Errorf("hook called %d times, want 1 (HTTPS only)", calls)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want error
	}{
		{"unsafe-inline script", Config{Default: App{CSP: "default-src 'self'; script-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; form-action 'self'"}}, ErrCSPUnsafe},
		{"missing base-uri", Config{Default: App{CSP: "default-src 'none'; form-action 'none'"}}, ErrCSPUnsafe},
		{"unknown directive", Config{Apps: map[string]App{"web": {CSP: "default-src 'none'; object_src 'none'"}}, Select: func(*http.Request) string { return "" }}, ErrCSPSyntax},
		{"apps without select", Config{Apps: map[string]App{"web": {}}}, ErrInvalidConfig},
		{"empty app name", Config{Apps: map[string]App{"": {}}, Select: func(*http.Request) string { return "" }}, ErrInvalidConfig},
		{"leaky referrer policy", Config{Default: App{ReferrerPolicy: "unsafe-url"}}, ErrInvalidConfig},
		{"bad COOP", Config{Default: App{CrossOriginOpenerPolicy: "unsafe-none"}}, ErrInvalidConfig},
		{"report-to without endpoints", Config{Default: App{CSP: APIPolicy + "; report-to csp"}}, ErrInvalidConfig},
		{"bad CORP", Config{Default: App{CrossOriginResourcePolicy: "anyone"}}, ErrInvalidConfig},
		{"header injection in Permissions-Policy", Config{Default: App{PermissionsPolicy: "camera=()\r\nSet-Cookie: x=1"}}, ErrInvalidConfig},
		{"short HSTS with preload", Config{HSTSMaxAge: 24 * time.Hour}, ErrInvalidConfig},
		{"sub-second HSTS", Config{HSTSMaxAge: time.Millisecond, HSTSNoPreload: true}, ErrInvalidConfig},
		{"negative HSTS", Config{HSTSMaxAge: -time.Second, HSTSNoPreload: true}, ErrInvalidConfig},
		{"no subdomains with preload", Config{HSTSNoSubdomains: true}, ErrInvalidConfig},
		{"invalid proxy prefix", Config{TrustedProxies: []netip.Prefix{{}}}, ErrInvalidConfig},
		{"strip a managed header", Config{StripHeaders: []string{"x-frame-options"}}, ErrInvalidConfig},
		{"strip a non-token", Config{StripHeaders: []string{"Bad Header"}}, ErrInvalidConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(tc.cfg)
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalidConfig) || m != nil {
				t.Fatalf("New = %v, %v; want %v", m, err, tc.want)
			}
		})
	}
}

func TestLoosenedHSTSAndStripHeaders(t *testing.T) {
	m := mustNew(t, Config{HSTSMaxAge: 180 * 24 * time.Hour, HSTSNoPreload: true, HSTSNoSubdomains: true, StripHeaders: []string{"x-debug"}})
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Debug", "trace-id")
		w.Header().Set("X-Keep", "1")
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "https://example.com/", nil))
	res := rec.Result()
	if got := res.Header.Get(HeaderHSTS); got != "max-age=15552000" {
		t.Errorf("HSTS %q", got)
	}
	if res.Header.Get("X-Debug") != "" || res.Header.Get("X-Keep") != "1" {
		t.Errorf("strip list not applied exactly: %v", res.Header)
	}
}

func TestReportingEndpoints(t *testing.T) {
	m := mustNew(t, Config{Default: App{CSP: APIPolicy + "; report-to csp", ReportingEndpoints: `csp="https://example.com/csp-report"`}})
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(HeaderReportingEndpoints, `csp="https://evil.example/"`)
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "https://example.com/", nil))
	want := strictSet()
	want[HeaderCSP] = APIPolicy + "; report-to csp"
	want[HeaderReportingEndpoints] = `csp="https://example.com/csp-report"`
	checkSet(t, rec.Result().Header, want)
}

func TestConfigNotMutated(t *testing.T) {
	cfg := Config{Apps: map[string]App{"web": {CSP: webPolicy}}, Select: func(*http.Request) string { return "" }}
	if _, err := New(cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Default != (App{}) || cfg.HSTSMaxAge != 0 || cfg.Apps["web"].CSP != webPolicy {
		t.Fatalf("New changed the caller's Config: %+v", cfg)
	}
}

// A handler that hijacks without WriteHeader and writes its own response
// head (as WebSocket libraries do) still sends the set: the hijacked
// connection rewrites the head, even when it arrives in pieces.
func TestSurvivesRawHijack(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		status int
	}{
		{"one write", []string{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\nX-Frame-Options: ALLOWALL\r\nserver: x\r\nContent-Security-Policy: default-src *\r\n \tscript-src *\r\n\r\n"}, 101},
		{"byte pieces", []string{"HT", "TP/1.1 200 OK\r\nx-frame-options: ALLOWALL\r", "\nContent-Length: 0\r\n", "\r\n"}, 200},
	}
	m := mustNew(t, Config{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				conn, brw, err := w.(http.Hijacker).Hijack()
				if err != nil {
					t.Errorf("Hijack: %v", err)
					return
				}
				defer conn.Close()
				for i, p := range tc.writes {
					if i%2 == 0 {
						conn.Write([]byte(p))
					} else {
						brw.WriteString(p)
						brw.Flush()
					}
				}
				if tc.status == 101 {
					line, _ := brw.ReadString('\n')
					brw.WriteString("echo:" + line)
					brw.Flush()
				}
			})))
			defer srv.Close()
			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			br := bufio.NewReader(conn)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tc.status {
				t.Fatalf("status %d", res.StatusCode)
			}
			want := strictSet()
			delete(want, HeaderHSTS)
			checkSet(t, res.Header, want)
			if tc.status == 101 {
				if res.Header.Get("Upgrade") != "echo" {
					t.Errorf("handler's own headers lost: %v", res.Header)
				}
				fmt.Fprintf(conn, "hello\n")
				if got, _ := br.ReadString('\n'); got != "echo:hello\n" {
					t.Fatalf("after the head: %q", got)
				}
			}
		})
	}
}

// Bytes that are not an HTTP/1 response pass through a hijacked connection
// unchanged.
func TestRawHijackOtherProtocol(t *testing.T) {
	m := mustNew(t, Config{})
	srv := httptest.NewServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		defer conn.Close()
		conn.Write([]byte("HTX"))
		conn.Write([]byte("-raw\r\n\r\n"))
	})))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	got, _ := io.ReadAll(conn)
	if string(got) != "HTX-raw\r\n\r\n" {
		t.Fatalf("got %q", got)
	}
}
