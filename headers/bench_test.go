package headers

import (
	"net/http"
	"testing"
)

type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

func BenchmarkHandler(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  Config
	}{
		{"api", Config{}},
		{"nonce", Config{Default: App{CSP: webPolicy}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := mustNew(b, bc.cfg).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Frame-Options", "ALLOWALL")
				w.Write([]byte("{}"))
			}))
			r, _ := http.NewRequest("GET", "https://example.com/", nil)
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(&discardWriter{h: make(http.Header)}, r)
			}
		})
	}
}

func BenchmarkParseCSP(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		p, err := ParseCSP(webPolicy)
		if err != nil || p.Validate() != nil {
			b.Fatal(err)
		}
	}
}
