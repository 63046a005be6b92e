// Package headersbench compares Malai's headers middleware, which enforces
// the header set after the handler, with unrolled/secure, which writes the
// same set before it, in the same run.
package headersbench

import (
	"net/http"
	"testing"

	"github.com/malai-sec/malai/headers"
	"github.com/unrolled/secure"
)

// discard is a minimal ResponseWriter; a fresh header map per request, as
// net/http gives each request.
type discard struct {
	h      http.Header
	status int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(code int)        { d.status = code }

var body = []byte(`{"ok":true}`)

func app(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

// floorSet is the header set Malai sends on a plain-HTTP API response,
// each value a preallocated slice: the least any middleware that sends
// these nine headers can do is put them into the response's map.
var floorSet = func() []floorHeader {
	var set []floorHeader
	for _, kv := range [][2]string{
		{headers.HeaderCSP, headers.APIPolicy}, {headers.HeaderFrameOptions, "DENY"},
		{headers.HeaderContentTypeOptions, "nosniff"}, {headers.HeaderReferrerPolicy, "no-referrer"},
		{headers.HeaderCrossOriginOpener, "same-origin"}, {headers.HeaderCrossOriginResource, "same-origin"},
		{headers.HeaderPermissionsPolicy, headers.DenyAllPermissionsPolicy}, {headers.HeaderXSSProtection, "0"},
		{headers.HeaderCacheControl, "no-store"},
	} {
		set = append(set, floorHeader{kv[0], []string{kv[1]}})
	}
	return set
}()

type floorHeader struct {
	name  string
	value []string
}

// floor is app followed by the nine assignments and nothing else: no
// wrapper, no removal of conflicting spellings, values shared between
// requests.
func floor(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	for _, f := range floorSet {
		h[f.name] = f.value
	}
	w.Write(body)
}

func peer() http.Handler {
	return secure.New(secure.Options{
		STSSeconds: 31536000, STSIncludeSubdomains: true, STSPreload: true,
		ContentSecurityPolicy: headers.APIPolicy, FrameDeny: true, ContentTypeNosniff: true,
		ReferrerPolicy: "no-referrer", CrossOriginOpenerPolicy: "same-origin",
		CrossOriginResourcePolicy: "same-origin", PermissionsPolicy: headers.DenyAllPermissionsPolicy,
		CustomBrowserXssValue: "0",
	}).Handler(http.HandlerFunc(app))
}

func malai(b *testing.B, cfg headers.Config) http.Handler {
	m, err := headers.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return m.Handler(http.HandlerFunc(app))
}

func run(b *testing.B, h http.Handler, path string) {
	r, _ := http.NewRequest("GET", "https://example.com"+path, nil)
	r.TLS = nil
	r.URL.Scheme = "https"
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		w := &discard{h: make(http.Header)}
		h.ServeHTTP(w, r)
	}
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkHeaders measures the handler alone, the handler plus the bare
// map assignments of the header set (the floor), unrolled/secure and Malai
// with the same nine headers (Malai also removes fingerprinting headers and
// sets Cache-Control), and Malai's web app with a per-request nonce.
func BenchmarkHeaders(b *testing.B) {
	b.Run("impl=bare", func(b *testing.B) { run(b, http.HandlerFunc(app), "/") })
	b.Run("impl=floor", func(b *testing.B) { run(b, http.HandlerFunc(floor), "/") })
	b.Run("impl=unrolled-secure", func(b *testing.B) { run(b, peer(), "/") })
	b.Run("impl=malai", func(b *testing.B) { run(b, malai(b, headers.Config{}), "/") })
	b.Run("impl=malai-nonce", func(b *testing.B) {
		run(b, malai(b, headers.Config{Default: headers.App{CSP: "default-src 'self'; script-src 'self' $NONCE; object-src 'none'; base-uri 'self'; form-action 'self'"}}), "/")
	})
}
