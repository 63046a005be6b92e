package observatory

import (
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// bestHeaders is what Malai's strict default sends on HTTPS.
func bestHeaders() http.Header {
	return http.Header{
		"Strict-Transport-Security":    {"max-age=31536000; includeSubDomains; preload"},
		"Content-Security-Policy":      {"default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"},
		"X-Frame-Options":              {"DENY"},
		"X-Content-Type-Options":       {"nosniff"},
		"Referrer-Policy":              {"no-referrer"},
		"Cross-Origin-Resource-Policy": {"same-origin"},
		"Content-Type":                 {"application/json"},
	}
}

func TestBestHeadersScore(t *testing.T) {
	res := Score(bestHeaders(), true)
	want := map[string]string{
		TestCSP:          "csp-implemented-with-no-unsafe-default-src-none",
		TestCookies:      "cookies-not-found",
		TestCORS:         "cross-origin-resource-sharing-not-implemented",
		TestReferrer:     "referrer-policy-private",
		TestHSTS:         "hsts-implemented-max-age-at-least-six-months",
		TestSRI:          "sri-not-implemented-response-not-html",
		TestContentType:  "x-content-type-options-nosniff",
		TestFrameOptions: "x-frame-options-implemented-via-csp",
		TestCORP:         "corp-implemented-with-same-origin",
	}
	got := map[string]string{}
	for _, tr := range res.Tests {
		got[tr.Name] = tr.Result
		if !tr.Pass {
			t.Errorf("%s did not pass: %s", tr.Name, tr.Result)
		}
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("results (-want +got):\n%s", d)
	}
	// 100 + 10 (CSP) + 5 (referrer) + 5 (XFO via CSP) + 10 (CORP)
	if res.Score != 130 || res.Grade != "A+" {
		t.Fatalf("score %d grade %s, want 130 A+", res.Score, res.Grade)
	}
}

func TestPenalties(t *testing.T) {
	tests := []struct {
		name      string
		tls       bool
		mutate    func(h http.Header)
		test      string
		result    string
		wantScore int
	}{
		{"no CSP", true, func(h http.Header) { h.Del("Content-Security-Policy") }, TestCSP, "csp-not-implemented",
			100 - 25 + 0}, // 75 < 90: no bonuses
		{"report-only CSP", true, func(h http.Header) {
			h.Set("Content-Security-Policy-Report-Only", h.Get("Content-Security-Policy"))
			h.Del("Content-Security-Policy")
		}, TestCSP, "csp-not-implemented-but-reporting-enabled", 75},
		{"unsafe-inline script", true, func(h http.Header) {
			h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
		}, TestCSP, "csp-implemented-with-unsafe-inline", 80},
		{"unsafe-inline with nonce is ignored", true, func(h http.Header) {
			h.Set("Content-Security-Policy", "default-src 'self'; script-src 'nonce-abc' 'unsafe-inline'; object-src 'none'; frame-ancestors 'none'")
		}, TestCSP, "csp-implemented-with-no-unsafe", 125},
		{"unsafe-eval", true, func(h http.Header) {
			h.Set("Content-Security-Policy", "default-src 'self' 'unsafe-eval'; frame-ancestors 'none'")
		}, TestCSP, "csp-implemented-with-unsafe-eval", 90 + 5 + 5 + 10},
		{"object-src unrestricted", true, func(h http.Header) {
			h.Set("Content-Security-Policy", "script-src 'self'; frame-ancestors 'none'")
		}, TestCSP, "csp-implemented-with-unsafe-inline", 80},
		{"http image on https site", true, func(h http.Header) {
			h.Set("Content-Security-Policy", "default-src 'none'; img-src http://cdn.example.com; frame-ancestors 'none'")
		}, TestCSP, "csp-implemented-with-insecure-scheme-in-passive-content-only", 90 + 20},
		{"duplicate directive", true, func(h http.Header) {
			h.Set("Content-Security-Policy", "default-src 'none'; default-src *")
		}, TestCSP, "csp-header-invalid", 75},
		{"strict-dynamic without nonce", true, func(h http.Header) {
			h.Set("Content-Security-Policy", "default-src 'none'; script-src 'strict-dynamic'")
		}, TestCSP, "csp-header-invalid", 75},
		{"no HSTS", true, func(h http.Header) { h.Del("Strict-Transport-Security") }, TestHSTS, "hsts-not-implemented", 80},
		{"short HSTS", true, func(h http.Header) { h.Set("Strict-Transport-Security", "max-age=86400") }, TestHSTS,
			"hsts-implemented-max-age-less-than-six-months", 90 + 30},
		{"HSTS max-age=0 spelled twice", true, func(h http.Header) { h.Set("Strict-Transport-Security", "max-age=31536000, max-age=0") },
			TestHSTS, "hsts-header-invalid", 80},
		{"plain HTTP", false, func(h http.Header) {}, TestHSTS, "hsts-not-implemented-no-https", 80},
		{"no nosniff", true, func(h http.Header) { h.Del("X-Content-Type-Options") }, TestContentType, "x-content-type-options-not-implemented", 125},
		{"framing allowed", true, func(h http.Header) {
			h.Set("Content-Security-Policy", "default-src 'none'")
			h.Set("X-Frame-Options", "ALLOWALL")
		}, TestFrameOptions, "x-frame-options-header-invalid", 80},
		{"leaky referrer", true, func(h http.Header) { h.Set("Referrer-Policy", "no-referrer, unsafe-url") }, TestReferrer, "referrer-policy-unsafe", 95 + 25},
		{"CORP cross-origin", true, func(h http.Header) { h.Set("Cross-Origin-Resource-Policy", "cross-origin") }, TestCORP, "corp-implemented-with-cross-origin", 120},
		{"CORP invalid", true, func(h http.Header) { h.Set("Cross-Origin-Resource-Policy", "everyone") }, TestCORP, "corp-header-invalid", 95 + 20},
		{"reflected origin with credentials", true, func(h http.Header) {
			h.Set("Access-Control-Allow-Origin", "https://http-observatory.security.mozilla.org")
			h.Set("Access-Control-Allow-Credentials", "true")
		}, TestCORS, "cross-origin-resource-sharing-implemented-with-universal-access", 50},
		{"public CORS", true, func(h http.Header) { h.Set("Access-Control-Allow-Origin", "*") }, TestCORS,
			"cross-origin-resource-sharing-implemented-with-public-access", 130},
		{"session cookie without Secure or HttpOnly", true, func(h http.Header) { h.Add("Set-Cookie", "sessionid=abc; Path=/") }, TestCookies,
			"cookies-session-without-httponly-flag", 100 - 30},
		{"session cookie not secure, HSTS on", true, func(h http.Header) { h.Add("Set-Cookie", "sessionid=abc; HttpOnly; SameSite=Lax") }, TestCookies,
			"cookies-session-without-secure-flag-but-protected-by-hsts", 90 + 30},
		{"session cookie not secure, no HTTPS", false, func(h http.Header) { h.Add("Set-Cookie", "sessionid=abc; HttpOnly; SameSite=Lax") }, TestCookies,
			"cookies-session-without-secure-flag", 100 - 20 - 40},
		{"csrf cookie without SameSite", true, func(h http.Header) { h.Add("Set-Cookie", "csrftoken=x; Secure") }, TestCookies,
			"cookies-anticsrf-without-samesite-flag", 80},
		{"bad SameSite", true, func(h http.Header) { h.Add("Set-Cookie", "a=b; Secure; SameSite=Sometimes") }, TestCookies,
			"cookies-samesite-flag-invalid", 80},
		{"good cookies", true, func(h http.Header) {
			h.Add("Set-Cookie", "__Host-session=abc; Secure; HttpOnly; SameSite=Strict; Path=/")
		}, TestCookies,
			"cookies-secure-with-httponly-sessions-and-samesite", 135},
		{"good cookies without SameSite", true, func(h http.Header) { h.Add("Set-Cookie", "theme=dark; Secure") }, TestCookies,
			"cookies-secure-with-httponly-sessions", 130},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := bestHeaders()
			tc.mutate(h)
			res := Score(h, tc.tls)
			tr, ok := res.Test(tc.test)
			if !ok || tr.Result != tc.result {
				t.Fatalf("%s = %q, want %q (all: %+v)", tc.test, tr.Result, tc.result, res.Tests)
			}
			if tr.Modifier != Modifiers[tc.result] {
				t.Fatalf("modifier %d, want %d", tr.Modifier, Modifiers[tc.result])
			}
			if res.Score != tc.wantScore || res.Grade != Grade(tc.wantScore) {
				t.Fatalf("score %d %s, want %d %s (tests %+v)", res.Score, res.Grade, tc.wantScore, Grade(tc.wantScore), res.Tests)
			}
		})
	}
}

func TestEmptyHeadersScoreF(t *testing.T) {
	res := Score(nil, true)
	// CSP -25, HSTS -20, XCTO -5, XFO -20: 30 = D
	if res.Score != 30 || res.Grade != "D" {
		t.Fatalf("score %d %s", res.Score, res.Grade)
	}
	if res := Score(nil, false); res.Score != 30 || res.Grade != "D" {
		t.Fatalf("plain HTTP score %d %s", res.Score, res.Grade)
	}
	h := http.Header{"Set-Cookie": {"sessionid=1"}, "Access-Control-Allow-Origin": {"https://http-observatory.security.mozilla.org"}, "Access-Control-Allow-Credentials": {"true"}}
	if res := Score(h, false); res.Score != 0 || res.Grade != "F" {
		t.Fatalf("floor: score %d %s", res.Score, res.Grade)
	}
}

func TestRedirectionAndPreload(t *testing.T) {
	tests := []struct {
		chain []string
		want  string
	}{
		{[]string{"http://example.com/", "https://example.com/"}, "redirection-to-https"},
		{[]string{"http://example.com/", "https://example.com/", "https://www.example.com/"}, "redirection-to-https"},
		{[]string{"http://example.com/"}, "redirection-missing"},
		{[]string{"http://example.com/", "https://www.example.com/"}, "redirection-off-host-from-http"},
		{[]string{"http://example.com/", "http://www.example.com/", "https://www.example.com/"}, "redirection-not-to-https-on-initial-redirection"},
		{[]string{"http://example.com/", "https://example.com/", "http://example.com/x"}, "redirection-not-to-https"},
		{[]string{"https://example.com/"}, "redirection-not-needed-no-http"},
	}
	for _, tc := range tests {
		res := Evaluate(Input{Header: bestHeaders(), TLS: true, Redirects: tc.chain})
		tr, ok := res.Test(TestRedirection)
		if !ok || tr.Result != tc.want {
			t.Errorf("%v: %q, want %q", tc.chain, tr.Result, tc.want)
		}
	}
	if _, ok := Score(bestHeaders(), true).Test(TestRedirection); ok {
		t.Error("redirection test ran without a chain")
	}
	res := Evaluate(Input{Header: bestHeaders(), TLS: true, Preloaded: true})
	if tr, _ := res.Test(TestHSTS); tr.Result != "hsts-preloaded" || res.Score != 135 {
		t.Errorf("preloaded: %s %d", tr.Result, res.Score)
	}
	h := bestHeaders()
	h.Set("Content-Type", "text/html; charset=utf-8")
	if _, ok := Score(h, true).Test(TestSRI); ok {
		t.Error("SRI scored for HTML without the body")
	}
}

func TestGrades(t *testing.T) {
	for score, want := range map[int]string{145: "A+", 100: "A+", 99: "A", 90: "A", 89: "A-", 85: "A-", 84: "B+", 80: "B+",
		79: "B", 70: "B", 69: "B-", 65: "B-", 64: "C+", 60: "C+", 59: "C", 50: "C", 49: "C-", 45: "C-",
		44: "D+", 40: "D+", 39: "D", 30: "D", 29: "D-", 25: "D-", 24: "F", 0: "F"} {
		if got := Grade(score); got != want {
			t.Errorf("Grade(%d) = %s, want %s", score, got, want)
		}
	}
	for name, m := range Modifiers {
		if m < -50 || m > 10 {
			t.Errorf("%s: modifier %d out of the table's range", name, m)
		}
	}
}

// FuzzScore: any header values grade without panicking, within 0..145,
// with a grade consistent with the score.
func FuzzScore(f *testing.F) {
	f.Add("default-src 'none'", "max-age=31536000", "DENY", "no-referrer", "sessionid=1; Secure", "same-origin", true)
	f.Add("script-src 'strict-dynamic' 'nonce-x', default-src *", "max-age=abc, x", "allow-from x", "unsafe-url,", "a=b; SameSite", "x", false)
	f.Fuzz(func(t *testing.T, csp, hsts, xfo, ref, cookie, corp string, tls bool) {
		h := http.Header{"Content-Security-Policy": {csp}, "Strict-Transport-Security": {hsts}, "X-Frame-Options": {xfo},
			"Referrer-Policy": {ref}, "Set-Cookie": {cookie}, "Cross-Origin-Resource-Policy": {corp}}
		res := Score(h, tls)
		if res.Score < 0 || res.Score > 145 || res.Grade != Grade(res.Score) {
			t.Fatalf("score %d grade %s", res.Score, res.Grade)
		}
		for _, tr := range res.Tests {
			if _, ok := Modifiers[tr.Result]; !ok {
				t.Fatalf("result %q has no modifier", tr.Result)
			}
		}
	})
}
