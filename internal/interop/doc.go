// Package interop holds the library's tests against third-party software
// the library itself must not depend on: an independent JOSE
// implementation (lestrrat-go/jwx) signing and parsing what jwtverify
// verifies and what devissuer mints, quic-go serving HTTP/3 through
// headers, and the chi and gorilla/mux routers feeding the route hook.
//
// It is a module of its own, so none of these reach a user's module
// graph. Nothing imports it.
package interop
