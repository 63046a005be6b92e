package headers

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestRedirect(t *testing.T) {
	rd, err := NewRedirect(RedirectConfig{AllowedHosts: []string{"Example.com", "api.example.com."}})
	if err != nil {
		t.Fatal(err)
	}
	rd8443, err := NewRedirect(RedirectConfig{AllowedHosts: []string{"example.com"}, HTTPSPort: 8443})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		h      http.Handler
		method string
		target string
		host   string
		status int
		loc    string
	}{
		{"path and query kept", rd, "GET", "/a/b?x=1&y=%20", "example.com", 308, "https://example.com/a/b?x=1&y=%20"},
		{"port dropped, case folded", rd, "POST", "/submit", "EXAMPLE.COM:80", 308, "https://example.com/submit"},
		{"trailing dot", rd, "GET", "/", "api.example.com.", 308, "https://api.example.com/"},
		{"custom HTTPS port", rd8443, "GET", "/p", "example.com:8080", 308, "https://example.com:8443/p"},
		{"double slash stays on host", rd, "GET", "//evil.example/x", "example.com", 308, "https://example.com//evil.example/x"},
		{"escaped path kept escaped", rd, "GET", "/a%2Fb/%0d%0a", "example.com", 308, "https://example.com/a%2Fb/%0d%0a"},
		{"foreign host refused", rd, "GET", "/", "evil.example", 400, ""},
		{"suffix trick refused", rd, "GET", "/", "example.com.evil.example", 400, ""},
		{"userinfo trick refused", rd, "GET", "/", "example.com@evil.example", 400, ""},
		{"empty host refused", rd, "GET", "/", "", 400, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "http://placeholder"+tc.target, nil)
			req.Host = tc.host
			rec := httptest.NewRecorder()
			tc.h.ServeHTTP(rec, req)
			if rec.Code != tc.status || rec.Header().Get("Location") != tc.loc {
				t.Fatalf("got %d Location %q, want %d %q", rec.Code, rec.Header().Get("Location"), tc.status, tc.loc)
			}
			if tc.status == 400 {
				var body struct{ Type string }
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || !strings.HasSuffix(body.Type, "#host-not-allowed") {
					t.Fatalf("problem body %q (%v)", rec.Body.String(), err)
				}
				if strings.Contains(rec.Body.String(), tc.host) && tc.host != "" {
					t.Errorf("the refused host is echoed back: %s", rec.Body.String())
				}
			}
		})
	}
}

func TestRedirectErrorHandlerAndConfig(t *testing.T) {
	var got error
	rd, err := NewRedirect(RedirectConfig{AllowedHosts: []string{"example.com"}, ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
		got = err
		w.WriteHeader(421)
	}})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("GET", "http://other.example/", nil)
	rec := httptest.NewRecorder()
	rd.ServeHTTP(rec, req)
	if rec.Code != 421 || !errors.Is(got, ErrHostNotAllowed) {
		t.Fatalf("custom error handler not used: %d %v", rec.Code, got)
	}
	for name, cfg := range map[string]RedirectConfig{
		"no hosts":       {},
		"host with port": {AllowedHosts: []string{"example.com:443"}},
		"url as host":    {AllowedHosts: []string{"https://example.com"}},
		"blank host":     {AllowedHosts: []string{" "}},
		"bad port":       {AllowedHosts: []string{"example.com"}, HTTPSPort: 70000},
	} {
		if _, err := NewRedirect(cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", name, err)
		}
	}
}

// Wired as the reference gateway does it: the redirect handler behind the
// middleware on the plain-HTTP port. No HSTS (plain HTTP), everything else.
func TestRedirectBehindMiddleware(t *testing.T) {
	rd, err := NewRedirect(RedirectConfig{AllowedHosts: []string{"example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	h := mustNew(t, Config{}).Handler(rd)
	for _, host := range []string{"example.com", "evil.example"} {
		req := httptest.NewRequest("GET", "http://"+host+"/", nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		want := strictSet()
		delete(want, HeaderHSTS)
		checkSet(t, rec.Result().Header, want)
		if rec.Result().Header.Get(HeaderHSTS) != "" {
			t.Error("HSTS sent over plain HTTP")
		}
	}
}

// FuzzRedirect: whatever Host and target a client sends, the redirect
// either points at an allowed host over HTTPS or refuses; it never sends
// the client elsewhere.
func FuzzRedirect(f *testing.F) {
	for _, s := range [][2]string{
		{"example.com", "/a/b?x=1"}, {"EXAMPLE.COM:80", "/submit"}, {"evil.example", "/"},
		{"example.com@evil.example", "/"}, {"example.com", "//evil.example/x"}, {"[::1]:80", "/"},
		{"example.com.", "/%0d%0aSet-Cookie:x"}, {"", "*"},
	} {
		f.Add(s[0], s[1])
	}
	rd, err := NewRedirect(RedirectConfig{AllowedHosts: []string{"example.com"}, HTTPSPort: 8443})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, host, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		req := &http.Request{Method: "GET", Host: host, URL: u, Header: http.Header{}, RequestURI: target}
		req = req.WithContext(context.Background())
		rec := httptest.NewRecorder()
		rd.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusPermanentRedirect:
			loc, err := url.Parse(rec.Header().Get("Location"))
			if err != nil || loc.Scheme != "https" || loc.Host != "example.com:8443" || loc.User != nil {
				t.Fatalf("Host %q target %q redirected to %q", host, target, rec.Header().Get("Location"))
			}
			if strings.ContainsAny(rec.Header().Get("Location"), "\r\n") {
				t.Fatalf("header injection: %q", rec.Header().Get("Location"))
			}
		case http.StatusBadRequest:
		default:
			t.Fatalf("status %d", rec.Code)
		}
	})
}

func TestRedirectIPv6Loopback(t *testing.T) {
	rd, err := NewRedirect(RedirectConfig{AllowedHosts: []string{"localhost", "::1"}, HTTPSPort: 8443})
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"[::1]:8080", "[::1]", "[0:0:0:0:0:0:0:1]:80"} {
		r := httptest.NewRequest("GET", "http://x/a?b=1", nil)
		r.Host = host
		w := httptest.NewRecorder()
		rd.ServeHTTP(w, r)
		if w.Code != http.StatusPermanentRedirect || w.Header().Get("Location") != "https://[::1]:8443/a?b=1" {
			t.Errorf("Host %q: %d Location %q", host, w.Code, w.Header().Get("Location"))
		}
	}
	r := httptest.NewRequest("GET", "http://x/", nil)
	r.Host = "[::2]"
	w := httptest.NewRecorder()
	rd.ServeHTTP(w, r)
	if w.Code != http.StatusBadRequest {
		t.Errorf("[::2]: %d, want 400", w.Code)
	}
}
