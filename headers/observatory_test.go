package headers_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/malai-sec/malai/headers"
	"github.com/malai-sec/malai/headers/observatory"
	"github.com/unrolled/secure"
)

// peerSecure is unrolled/secure configured with the same header set.
func peerSecure() *secure.Secure {
	return secure.New(secure.Options{
		STSSeconds: 31536000, STSIncludeSubdomains: true, STSPreload: true,
		ContentSecurityPolicy: headers.APIPolicy, FrameDeny: true, ContentTypeNosniff: true,
		ReferrerPolicy: "no-referrer", CrossOriginOpenerPolicy: "same-origin",
		CrossOriginResourcePolicy: "same-origin", PermissionsPolicy: headers.DenyAllPermissionsPolicy,
	})
}

// weakening handlers, each a way a misconfigured application breaks the
// headers.
var weakening = map[string]http.HandlerFunc{
	"well-behaved": func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{}")) },
	"deletes": func(w http.ResponseWriter, r *http.Request) {
		for _, k := range []string{"Strict-Transport-Security", "Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy", "Cross-Origin-Resource-Policy"} {
			w.Header().Del(k)
		}
	},
	"overwrites": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", "max-age=0")
		w.Header().Set("X-Frame-Options", "ALLOWALL")
		w.Header().Set("Content-Security-Policy", "default-src *; script-src * 'unsafe-inline' 'unsafe-eval'")
		w.Header().Set("Referrer-Policy", "unsafe-url")
		w.WriteHeader(200)
	},
}

// The strict default scores A+ whatever the handler does; the same set
// written by unrolled/secure before the handler does not survive.
func TestObservatoryGradesDefault(t *testing.T) {
	mw, err := headers.New(headers.Config{})
	if err != nil {
		t.Fatal(err)
	}
	peer := peerSecure()
	for name, h := range weakening {
		t.Run(name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			mw.Handler(h).ServeHTTP(rec, httptest.NewRequest("GET", "https://example.com/", nil))
			res := observatory.Score(rec.Result().Header, true)
			if res.Score < 100 || res.Grade != "A+" {
				t.Fatalf("Malai: score %d %s: %+v", res.Score, res.Grade, res.Tests)
			}
			rec = httptest.NewRecorder()
			peer.Handler(h).ServeHTTP(rec, httptest.NewRequest("GET", "https://example.com/", nil))
			peerRes := observatory.Score(rec.Result().Header, true)
			if name == "well-behaved" && peerRes.Score != res.Score {
				t.Fatalf("same header set, different scores: peer %d, Malai %d", peerRes.Score, res.Score)
			}
			if name != "well-behaved" && peerRes.Score >= 90 {
				t.Fatalf("peer kept %d after the handler %s the headers (the gap this package closes is gone?)", peerRes.Score, name)
			}
			t.Logf("Malai %d %s; unrolled/secure %d %s", res.Score, res.Grade, peerRes.Score, peerRes.Grade)
		})
	}
}

// The named loosenings are graded down: the scorer sees what they cost.
func TestObservatoryPenalisesLoosenings(t *testing.T) {
	tests := []struct {
		name string
		cfg  headers.Config
		tls  bool
		max  int
	}{
		{"report-only CSP", headers.Config{Default: headers.App{CSPReportOnly: true}}, true, 99},
		{"CORP cross-origin", headers.Config{Default: headers.App{CrossOriginResourcePolicy: "cross-origin"}}, true, 120},
		{"web policy without default-src 'none'", headers.Config{Default: headers.App{CSP: "default-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'"}}, true, 125},
		{"plain HTTP (no HSTS)", headers.Config{}, false, 89},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mw, err := headers.New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			scheme := "http"
			if tc.tls {
				scheme = "https"
			}
			mw.Handler(weakening["well-behaved"]).ServeHTTP(rec, httptest.NewRequest("GET", scheme+"://example.com/", nil))
			res := observatory.Score(rec.Result().Header, tc.tls)
			if res.Score > tc.max {
				t.Fatalf("score %d, want at most %d: %+v", res.Score, tc.max, res.Tests)
			}
		})
	}
}
