package waf

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestUntypedResponsesAreInspected: a service answer that names no media
// type is read by the client as what net/http sniffs from its first bytes
// (text/plain, text/html). The WAF names the type the same way before it
// inspects, so a leaked error page without a Content-Type is withheld
// like one with it, on the service profile and the whole rule set.
func TestUntypedResponsesAreInspected(t *testing.T) {
	leak := "pq: PostgreSQL query failed: ERROR:  syntax error at or near \"'\"\n"
	cases := []struct {
		name     string
		writes   []string
		flush    bool   // flush after the first write
		encoding string // Content-Encoding set by the handler
		status   int    // the handler's, 0 for none
		want     int
		wantType string // "-" for none at all
	}{
		{"leak, one write", []string{leak}, false, "", 0, http.StatusBadGateway, "application/problem+json"},
		{"leak, small writes", []string{"pq: Postgre", "SQL query failed: ", "ERROR:  syntax error at or near \"'\"\n"}, false, "", 0, http.StatusBadGateway, "application/problem+json"},
		{"leak after 600 bytes", []string{strings.Repeat("x", 600), "\n" + leak}, false, "", 0, http.StatusBadGateway, "application/problem+json"},
		{"leak, flushed after its first bytes", []string{"pq: ", leak}, true, "", 0, http.StatusBadGateway, "application/problem+json"},
		{"leak, status 500", []string{leak}, false, "", 500, http.StatusBadGateway, "application/problem+json"},
		{"benign text", []string{"all good\n"}, false, "", 0, 200, "text/plain; charset=utf-8"},
		{"benign HTML", []string{"<!DOCTYPE html><html><body>hi</body></html>"}, false, "", 0, 200, "text/html; charset=utf-8"},
		{"benign, flushed", []string{"hello ", "world"}, true, "", 0, 200, "text/plain; charset=utf-8"},
		{"PNG", []string{"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"}, false, "", 0, 200, "image/png"},
		{"empty body", nil, false, "", 0, 200, "-"},
		{"encoded body: net/http does not sniff it", []string{"\x1f\x8b\x08\x00"}, false, "gzip", 0, 200, "-"},
	}
	for _, profile := range []string{Services, ""} {
		w := newSuiteWAF(t, GatewayConfig())
		for _, tc := range cases {
			t.Run(profile+"/"+tc.name, func(t *testing.T) {
				h := w.Handler(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
					if tc.encoding != "" {
						rw.Header().Set("Content-Encoding", tc.encoding)
					}
					if tc.status != 0 {
						rw.WriteHeader(tc.status)
					}
					for i, s := range tc.writes {
						_, _ = rw.Write([]byte(s))
						if i == 0 && tc.flush {
							rw.(http.Flusher).Flush()
						}
					}
				}))
				rec := getAccount(h, profile)
				body := rec.Body.String()
				if rec.Code != tc.want {
					t.Fatalf("status %d, want %d; body %q", rec.Code, tc.want, body)
				}
				got, typed := rec.Header()["Content-Type"]
				switch {
				case tc.wantType == "-" && typed:
					t.Fatalf("Content-Type %q set; net/http would set none", got)
				case tc.wantType != "-" && (len(got) != 1 || got[0] != tc.wantType):
					t.Fatalf("Content-Type %q, want %q", got, tc.wantType)
				}
				if tc.want == http.StatusBadGateway {
					if strings.Contains(body, "PostgreSQL") {
						t.Fatalf("leak passed: %q", body)
					}
					return
				}
				if want := strings.Join(tc.writes, ""); body != want {
					t.Fatalf("body %q, want %q", body, want)
				}
			})
		}
	}
}

// getAccount sends h an API GET of an account, as the gateway forwards
// it, under profile ("" for the whole rule set).
func getAccount(h http.Handler, profile string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", "/v1/accounts/acc_123", nil)
	apiHeaders(r, sampleToken())
	if profile != "" {
		r = r.WithContext(WithProfile(r.Context(), profile))
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}
