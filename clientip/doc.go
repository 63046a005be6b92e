// Package clientip resolves the address of the client behind a request,
// trusting forwarding headers only from configured proxies.
//
// It is shared by every Malai component that attributes a request to an
// address: the rate limiter and IP reputation in ratelimit, and sign-in
// risk scoring in the reference system. One [Resolver] built at start-up
// and one answer per request, carried with [NewContext], keep them agreeing.
//
// # Guarantees
//
//   - With the zero [Config] the client is the TCP peer (RemoteAddr); no
//     header is read.
//   - A forwarding header is read only when the TCP peer is inside
//     [Config.TrustedProxies], and it is walked from right to left: each hop
//     inside the trusted networks is skipped, the first untrusted hop is the
//     client. Hops further left were written by the client and are ignored,
//     so a spoofed "X-Forwarded-For: 1.2.3.4" cannot choose an address.
//   - Exactly one header is read ([Config.Header]): X-Forwarded-For, RFC 7239
//     Forwarded, or a single-address vendor header such as CF-Connecting-IP.
//   - IPv4-mapped IPv6 addresses (::ffff:192.0.2.1) are returned as IPv4, so
//     one host cannot appear as two; zones are stripped from RemoteAddr and
//     refused inside headers.
//   - Malformed input a trusted proxy vouched for (garbage, "unknown",
//     obfuscated RFC 7239 identifiers, several vendor headers) yields an
//     error wrapping [ErrMalformed], never a guessed address.
//
// # Usage
//
//	res, err := clientip.New(clientip.Config{
//		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
//		Header:         clientip.XForwardedFor,
//	})
//	...
//	addr, err := res.Resolve(r)
//	if err != nil { /* 400: the proxy chain sent garbage */ }
//	r = r.WithContext(clientip.NewContext(r.Context(), addr))
//
// # Security caveats
//
// Trust only the proxies you run, and name the header your nearest proxy
// appends to (or overwrites). If the proxies do not strip a header that a
// client sends, configuring that header lets the client choose its address.
// A trusted range must not include addresses clients can reach you from
// directly (for example a whole cloud provider's range).
package clientip
