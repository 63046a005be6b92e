package waf

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/malai-sec/malai/internal/cputime"
)

// sampleToken is an access token of identity's shape (ES256 compact JWS,
// header typ "at+jwt" and a kid, the RFC 9068 claims plus identity's),
// 700-odd bytes like the real ones; the signature is stand-in bytes.
func sampleToken() string {
	enc := base64.RawURLEncoding
	sum := sha256.Sum256([]byte("sample"))
	header := `{"alg":"ES256","kid":"` + enc.EncodeToString(sum[:]) + `","typ":"at+jwt"}`
	claims := `{"iss":"https://malai.example","sub":"user:6f1c2a9d0b3e4f5a8c7d9e0f1a2b3c4d",` +
		`"aud":["malai-api"],"exp":1795000300,"iat":1795000000,"nbf":1795000000,` +
		`"jti":"` + enc.EncodeToString(sum[:16]) + `","client_id":"malai-web",` +
		`"scope":"accounts:read accounts:write transfers:read transfers:write profile:read",` +
		`"class":"user","auth_time":1794999000,"amr":["pwd","otp"],"sid":"` + enc.EncodeToString(sum[8:24]) + `"}`
	sig := append(sum[:], sum[:]...) // 64 bytes, as an ES256 signature
	return enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims)) + "." + enc.EncodeToString(sig)
}

// apiHeaders are what the WAF sees of an API call in the gateway's chain:
// the client's own headers (Go's client, as the load generator and the
// web app's server-side calls send them), X-Forwarded-For from the
// trusted proxy in front, the bearer token. Correlation, security headers
// and the limits before the WAF add no request header (the correlation
// id and traceparent go onto the upstream request, after it).
func apiHeaders(r *http.Request, token string) {
	r.Header.Set("User-Agent", "Go-http-client/1.1")
	r.Header.Set("Accept-Encoding", "gzip")
	r.Header.Set("X-Forwarded-For", "198.51.100.23")
	r.Header.Set("Authorization", "Bearer "+token)
}

// BenchmarkWAF compares the gateway's WAF, with its default rule set and
// with the Services profile of its service routes, with Coraza's default
// configuration (recommended base, engine on, CRS at paranoia level 1)
// behind the same handler, per request shape.
func BenchmarkWAF(b *testing.B) {
	token := sampleToken()
	shapes := []struct {
		name, method, target, body string
		api                        bool
		fresh                      bool // values no request has sent before
	}{
		{"benign GET", "GET", "/v1/accounts/acc_123?expand=owner", "", false, false},
		{"small JSON POST", "POST", "/v1/transfers", `{"from":"acc_1","to":"acc_2","amount":1500,"memo":"rent"}`, false, false},
		{"12KiB JSON POST", "POST", "/v1/transfers", `{"memo":"` + strings.Repeat("lorem ipsum ", 1024) + `"}`, false, false},
		{"API GET", "GET", "/v1/accounts/acc_123", "", true, false},
		{"API JSON POST", "POST", "/v1/transfers", `{"from":"acc_1","to":"acc_2","amount":1500,"memo":"rent"}`, true, false},
		// Every value new (the screen's cache never answers for them;
		// the members' names and the headers still recur).
		{"API JSON POST, new values", "POST", "/v1/transfers", "", true, true},
	}
	for _, cfg := range []struct {
		name, profile string
		c             Config
	}{
		{"gateway", "", GatewayConfig()},
		// The gateway's service routes (every API shape's route is one).
		{"gateway-services", Services, GatewayConfig()},
		{"coraza-default", "", Config{rulesOverride: corazaDefault("")}},
	} {
		cfg.c.BodyLimit = 16 << 10
		w := newSuiteWAF(b, cfg.c)
		h := w.Handler(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			rw.Header().Set("Content-Type", "application/json")
			_, _ = rw.Write([]byte(`{"ok":true}`))
		}))
		for _, s := range shapes {
			b.Run(cfg.name+"/"+s.name, func(b *testing.B) {
				b.ReportAllocs()
				cpu0 := cputime.Process()
				n := 0
				for b.Loop() {
					var r *http.Request
					switch {
					case s.fresh:
						n++
						id := strconv.Itoa(n)
						r = httptest.NewRequest(s.method, s.target, strings.NewReader(
							`{"from":"acc_`+id+`a","to":"acc_`+id+`b","amount":`+id+`,"memo":"rent `+id+`"}`))
						apiHeaders(r, token)
						r.Header.Set("Content-Type", "application/json")
						r.Header.Set("Idempotency-Key", `"load-1-2-3-`+id+`"`)
					case s.api && s.body == "":
						r = httptest.NewRequest(s.method, s.target, nil)
						apiHeaders(r, token)
					case s.api:
						r = httptest.NewRequest(s.method, s.target, strings.NewReader(s.body))
						apiHeaders(r, token)
						r.Header.Set("Content-Type", "application/json")
						r.Header.Set("Idempotency-Key", `"load-1-2-3-mhx2k9"`)
					case s.body == "":
						r = httptest.NewRequest(s.method, s.target, nil)
						r.Header.Set("User-Agent", "Mozilla/5.0")
						r.Header.Set("Accept", "application/json")
					default:
						r = jsonPost(s.target, s.body)
					}
					if cfg.profile != "" {
						r = r.WithContext(WithProfile(r.Context(), cfg.profile))
					}
					h.ServeHTTP(httptest.NewRecorder(), r)
				}
				// The process's CPU per request: on a shared machine the
				// wall time includes waiting for a core.
				b.ReportMetric(float64(cputime.Process()-cpu0)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// BenchmarkWAFFamilies shows where a service route's inspection time
// goes: the service profile whole, then without one CRS family at a time
// (the difference is that family's cost per request). It removes
// detections, so it measures and nothing more: no configuration here is
// one to run.
func BenchmarkWAFFamilies(b *testing.B) {
	token := sampleToken()
	families := []struct{ name, ids string }{
		{"none", ""},
		{"911-913 method, scanners", "911000-913999"},
		{"920 protocol enforcement", "920000-920999"},
		{"921 protocol attacks", "921000-921999"},
		{"930 path traversal", "930000-930999"},
		{"932 shell commands", "932000-932999"},
		{"934 SSRF, SSTI", "934000-934999"},
		{"941 XSS", "941000-941999"},
		{"942 SQL injection", "942000-942999"},
		{"943-944 session fixation, Log4Shell", "943000-944999"},
	}
	for _, fam := range families {
		cfg := GatewayConfig()
		cfg.BodyLimit = 16 << 10
		p := ServiceProfile()
		if fam.ids != "" {
			p.Remove = append(p.Remove, fam.ids)
		}
		cfg.Profiles = []Profile{p}
		w := newSuiteWAF(b, cfg)
		h := w.Handler(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			rw.Header().Set("Content-Type", "application/json")
			_, _ = rw.Write([]byte(`{"ok":true}`))
		}))
		for _, post := range []bool{false, true} {
			shape := "API GET"
			if post {
				shape = "API JSON POST"
			}
			b.Run("without "+fam.name+"/"+shape, func(b *testing.B) {
				cpu0 := cputime.Process()
				for b.Loop() {
					r := httptest.NewRequest("GET", "/v1/accounts/acc_123", nil)
					if post {
						r = httptest.NewRequest("POST", "/v1/transfers", strings.NewReader(`{"from":"acc_1","to":"acc_2","amount":1500,"memo":"rent"}`))
						r.Header.Set("Content-Type", "application/json")
						r.Header.Set("Idempotency-Key", `"load-1-2-3-mhx2k9"`)
					}
					apiHeaders(r, token)
					r = r.WithContext(WithProfile(r.Context(), Services))
					h.ServeHTTP(httptest.NewRecorder(), r)
				}
				b.ReportMetric(float64(cputime.Process()-cpu0)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}
