package waf

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
)

var (
	once    sync.Once
	shared  *WAF
	sharedE error
	logBuf  syncBuffer
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// The CRS takes a second or two to compile; tests share one instance.
func testWAF(t *testing.T) *WAF {
	t.Helper()
	once.Do(func() {
		cfg := GatewayConfig()
		cfg.BodyLimit = 4096
		cfg.ReportPaths = []string{"/csp-report"}
		cfg.Exclusions = append(cfg.Exclusions, FormCredentialExclusion("POST", "/signin", []string{"password"}))
		cfg.Logger = slog.New(slog.NewJSONHandler(&logBuf, nil))
		shared, sharedE = New(cfg)
	})
	if sharedE != nil {
		t.Fatal(sharedE)
	}
	return shared
}

func TestWAF(t *testing.T) {
	w := testWAF(t)
	var gotBody string
	h := w.Handler(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		gotBody = string(b)
		rw.WriteHeader(http.StatusNoContent)
	}))
	tests := []struct {
		name   string
		method string
		target string
		body   string
		header map[string]string
		want   int
	}{
		{"benign GET", "GET", "/v1/accounts/acc_123", "", nil, 204},
		{"benign JSON POST", "POST", "/v1/transfers", `{"from":"acc_1","to":"acc_2","amount":1500,"memo":"rent for May"}`, map[string]string{"Content-Type": "application/json"}, 204},
		{"SQL injection in query", "GET", "/v1/accounts?id=1'%20OR%20'1'='1'%20--", "", nil, 403},
		{"SQL injection in JSON body", "POST", "/v1/transfers", `{"memo":"x' UNION SELECT password FROM users --"}`, map[string]string{"Content-Type": "application/json"}, 403},
		{"XSS in JSON body", "POST", "/v1/transfers", `{"memo":"<script>alert(document.cookie)</script>"}`, map[string]string{"Content-Type": "application/json"}, 403},
		{"path traversal", "GET", "/v1/files?name=../../../../etc/passwd", "", nil, 403},
		{"log4shell in a header (known bad input)", "GET", "/v1/accounts", "", map[string]string{"X-Api-Version": "${jndi:ldap://127.0.0.1/a}"}, 403},
		{"scanner user agent", "GET", "/", "", map[string]string{"User-Agent": "Nikto/2.1.6"}, 403},
		{"CSP report on its path", "POST", "/csp-report", `{"csp-report":{"document-uri":"https://bank.example/signin","effective-directive":"script-src-elem","blocked-uri":"inline"}}`, map[string]string{"Content-Type": "application/csp-report"}, 204},
		{"CSP report of a site browsed by IP address", "POST", "/csp-report", `{"csp-report":{"document-uri":"https://127.0.0.1:8443/signin","effective-directive":"script-src-elem","blocked-uri":"inline"}}`, map[string]string{"Content-Type": "application/csp-report"}, 204},
		{"Reporting API batch on the report path", "POST", "/csp-report", `[{"type":"csp-violation","body":{"documentURL":"https://bank.example/","effectiveDirective":"script-src-elem"}}]`, map[string]string{"Content-Type": "application/reports+json"}, 204},
		{"report media type elsewhere", "POST", "/v1/transfers", `{"csp-report":{}}`, map[string]string{"Content-Type": "application/csp-report"}, 403},
		{"SQL injection inside a CSP report", "POST", "/csp-report", `{"csp-report":{"document-uri":"x' UNION SELECT password FROM users --"}}`, map[string]string{"Content-Type": "application/csp-report"}, 403},
		{"form password with shell text", "POST", "/signin", "username=alice&password=" + url.QueryEscape("$(cat /etc/passwd)-Aa1!"), map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 204},
		{"form username with the same text", "POST", "/signin", "password=x&username=" + url.QueryEscape("$(cat /etc/passwd)"), map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 403},
		{"body over the inspection limit", "POST", "/v1/transfers", `{"memo":"` + strings.Repeat("a", 5000) + `"}`, map[string]string{"Content-Type": "application/json"}, 413},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gotBody = ""
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			r := httptest.NewRequest(tc.method, tc.target, body)
			r.Header.Set("User-Agent", "malai-test/1.0")
			r.Header.Set("Accept", "application/json")
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != tc.want {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tc.want, rec.Body)
			}
			if tc.want == 204 && gotBody != tc.body {
				t.Fatalf("handler saw body %q, want %q", gotBody, tc.body)
			}
			if tc.want >= 400 {
				if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
					t.Fatalf("content type %q", ct)
				}
				var p map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
					t.Fatal(err)
				}
				if strings.Contains(rec.Body.String(), "942") || strings.Contains(rec.Body.String(), "rule") {
					t.Fatalf("problem reveals the rule: %s", rec.Body)
				}
			}
		})
	}
	if !strings.Contains(logBuf.String(), `"matched":"`) {
		t.Fatalf("blocked requests not logged with rule ids: %s", logBuf.String())
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := New(Config{ParanoiaLevel: 5}); err == nil {
		t.Fatal("paranoia 5 accepted")
	}
	if _, err := New(Config{ReportPaths: []string{"csp\" \"id:1"}}); err == nil {
		t.Fatal("a report path that breaks out of the rule was accepted")
	}
	if _, err := New(Config{Exclusions: []Exclusion{FormCredentialExclusion("POST", "/x", []string{"a\" \"id:1"})}}); err == nil {
		t.Fatal("a field name that breaks out of the rule was accepted")
	}
	if _, err := New(Config{BodyLimit: -1}); err == nil {
		t.Fatal("negative body limit accepted")
	}
}

func BenchmarkBenignGET(b *testing.B) {
	w, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	h := w.Handler(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {}))
	r := httptest.NewRequest("GET", "/v1/accounts/acc_123?expand=owner", nil)
	r.Header.Set("User-Agent", "Mozilla/5.0")
	r.Header.Set("Accept", "application/json")
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
}
