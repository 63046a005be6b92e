package waf

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkWAF compares the gateway's WAF with Coraza's default
// configuration (recommended base, engine on, CRS at paranoia level 1)
// behind the same handler, per request shape.
func BenchmarkWAF(b *testing.B) {
	shapes := []struct {
		name, method, target, body string
	}{
		{"benign GET", "GET", "/v1/accounts/acc_123?expand=owner", ""},
		{"small JSON POST", "POST", "/v1/transfers", `{"from":"acc_1","to":"acc_2","amount":1500,"memo":"rent"}`},
		{"12KiB JSON POST", "POST", "/v1/transfers", `{"memo":"` + strings.Repeat("lorem ipsum ", 1024) + `"}`},
	}
	for _, cfg := range []struct {
		name string
		c    Config
	}{{"gateway", GatewayConfig()}, {"coraza-default", Config{rulesOverride: corazaDefault("")}}} {
		cfg.c.BodyLimit = 16 << 10
		w := newSuiteWAF(b, cfg.c)
		h := w.Handler(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			rw.Header().Set("Content-Type", "application/json")
			_, _ = rw.Write([]byte(`{"ok":true}`))
		}))
		for _, s := range shapes {
			b.Run(cfg.name+"/"+s.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					r := jsonPost(s.target, s.body)
					r.Method = s.method
					if s.body == "" {
						r = httptest.NewRequest(s.method, s.target, nil)
						r.Header.Set("User-Agent", "Mozilla/5.0")
						r.Header.Set("Accept", "application/json")
					}
					h.ServeHTTP(httptest.NewRecorder(), r)
				}
			})
		}
	}
}
