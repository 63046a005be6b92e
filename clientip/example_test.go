package clientip_test

import (
	"fmt"
	"net/http/httptest"
	"net/netip"

	"github.com/malai-sec/malai/clientip"
)

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
