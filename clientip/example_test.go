package clientip_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"

	"github.com/malai-sec/malai/clientip"
	"github.com/malai-sec/malai/headers"
	"github.com/malai-sec/malai/ratelimit"
	"github.com/malai-sec/malai/ratelimit/memstore"
)

func ratelimitMemstore() ratelimit.Store {
	st, err := memstore.New(memstore.Config{})
	if err != nil {
		panic(err)
	}
	return st
}

// The gateway sits behind a load balancer in 10.0.0.0/8 that appends the
// peer it saw to X-Forwarded-For.
func Example() {
	res, err := clientip.New(clientip.Config{
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
	})
	if err != nil {
		panic(err)
	}
	for _, c := range []struct{ remote, xff string }{
		{"10.0.0.2:5000", "198.51.100.7"},            // through the load balancer
		{"10.0.0.2:5000", "6.6.6.6, 198.51.100.7"},   // client-written hop ignored
		{"203.0.113.9:5000", "1.1.1.1"},              // direct, untrusted: header ignored
		{"10.0.0.2:5000", "198.51.100.7, not-an-ip"}, // the proxy vouched for garbage
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.remote
		r.Header.Set("X-Forwarded-For", c.xff)
		addr, err := res.Resolve(r)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Println(addr)
	}
	// Output:
	// 198.51.100.7
	// 198.51.100.7
	// 203.0.113.9
	// error: clientip: malformed client address: in X-Forwarded-For
}

// One resolver, configured once, is shared: its Handler resolves the
// address before anything else runs, and every layer inside (here a rate
// limiter, the security headers and the handler) reads the same answer
// from the request context.
func ExampleResolver_Handler() {
	proxies, err := clientip.New(clientip.Config{
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
	})
	if err != nil {
		panic(err)
	}
	limiter, err := ratelimit.New(ratelimit.Config{ClientIP: proxies, Store: ratelimitMemstore()})
	if err != nil {
		panic(err)
	}
	defer limiter.Close()
	hdrs, err := headers.New(headers.Config{ClientIP: proxies}) // believes X-Forwarded-Proto from 10/8
	if err != nil {
		panic(err)
	}
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr, _ := clientip.FromContext(r.Context())
		fmt.Fprintln(w, "hello", addr)
	})
	h := proxies.Handler(hdrs.Handler(limiter.Handler(app)))

	r := httptest.NewRequest("GET", "http://api.example/", nil)
	r.RemoteAddr = "10.0.0.2:5000"
	r.Header.Set("X-Forwarded-For", "198.51.100.7")
	r.Header.Set("X-Forwarded-Proto", "https")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	fmt.Print(w.Body.String())
	fmt.Println(w.Header().Get("Strict-Transport-Security") != "")

	r.Header.Set("X-Forwarded-For", "198.51.100.7, garbage")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	fmt.Println(w.Code, w.Header().Get("Content-Type"))
	// Output:
	// hello 198.51.100.7
	// true
	// 400 application/problem+json
}
