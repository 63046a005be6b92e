// Package devissuer is a local access-token issuer for development,
// demos and tests outside the testing package: it generates a signing key,
// mints tokens shaped like those of common identity providers (RFC 9068,
// Auth0, Keycloak, Microsoft Entra ID) and serves its JWK Set over HTTP, so
// a service using [jwtverify] can run against it before a real provider
// is wired in.
//
//	iss, err := devissuer.New(devissuer.Config{
//		Issuer: "https://dev-tenant.example.auth0.com/",
//		Shape:  devissuer.Auth0,
//	})
//	if err != nil { ... }
//	go http.ListenAndServe("127.0.0.1:8081", iss) // the JWKS, for Issuer.JWKSURL
//	tok, err := iss.Mint(devissuer.Token{Subject: "auth0|alice", Audience: []string{"https://api.example"},
//		Scopes: []string{"transfers:write"}})
//
// Each [Shape] documents the claims it sets; [Issuer.Claims] returns them
// for a test that wants to change one, and [Key.Sign] or [Key.SignRaw]
// sign anything at all. [JWKS] turns keys into the JWK Set document that
// jwtverify.Issuer.Keys takes.
//
// # Security caveats
//
// An Issuer signs whatever it is asked to, with a key that lives only in
// memory and is regenerated on every start. Never let a production
// verifier trust one: configure it in development builds only, and serve
// its JWKS on a loopback address.
//
// [jwtverify]: https://pkg.go.dev/github.com/malai-sec/malai/jwtverify
package devissuer
