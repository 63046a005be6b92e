// Package jwtverify verifies bearer JWT access tokens on every request, at
// the edge gateway and again inside each service, against an issuer's JWK
// Set or static keys.
//
// # Guarantees
//
// A token reaches a handler only when all of these hold:
//
//   - It came as exactly one credential: one "Authorization: Bearer"
//     header (or, if enabled, one cookie or query parameter), at most
//     [Config.MaxTokenSize] bytes, three strict base64url segments.
//   - Its header and payload are strict JSON with no duplicate member at any
//     depth (encoding/json would silently keep the last one). The header
//     carries no jku, x5u, jwk, x5c, crit, b64 or cty: a token never chooses
//     its own key, and extensions we cannot honour are refused.
//   - Its "iss" names a configured [Issuer] exactly. That profile is chosen
//     from the payload before the signature check and the same bytes are
//     then covered by the signature, so the verified "iss" equals it.
//   - Its "alg" is on the profile's asymmetric allow-list (never "none" or
//     HMAC), checked before any key lookup, and the key's type and curve
//     match it. Its "typ" is "at+jwt" (RFC 9068, any case, with or
//     without "application/") unless the profile says otherwise.
//   - The signature verifies with the one key that fits its "kid" (or, with
//     no "kid", the only key that fits).
//   - "exp", "iat", "iss", "aud" and "sub" are present; exp and nbf hold
//     within the leeway (default 30 s, at most 5 min), iat is not in the
//     future, exp − iat is at most [Issuer.MaxLifetime] (default 1 h), and
//     "aud" meets [Issuer.Audiences] (any of) and [Issuer.AllAudiences]
//     (all of).
//   - Its class is known: [ClassUser] or [ClassService], from the
//     "token_class" claim or, failing that, "sub" == "client_id" for a
//     service (RFC 9068 §2.2); with [Issuer.RequireClassClaim], from the
//     claim alone.
//   - A claim that must be a string, a NumericDate or a list of strings is
//     one ("exp": "1700000000" is refused, not converted).
//
// Route requirements ([Verifier.Require], [Verifier.RequireUser],
// [Verifier.RequireService]) then refuse a user token on an internal route,
// a service token on a user route, and tokens missing a scope.
//
// Refusals follow RFC 6750: 401 with "WWW-Authenticate: Bearer" and no
// error code when there is no token, 401 error="invalid_token", 400
// error="invalid_request" (two credentials, an empty Bearer), 403
// error="insufficient_scope" with scope="...". When an issuer's keys are
// unavailable the answer is 503. Bodies are RFC 9457 problem+json with a
// generic detail; no response, error string or event ever contains token
// text. Each refusal has a stable [Reason] for logs and metrics.
//
// # Usage
//
// The gateway and each service build their own Verifier:
//
//	v, err := jwtverify.New(jwtverify.Config{
//		Issuers: []jwtverify.Issuer{{
//			Issuer:    "https://identity.malai.internal",
//			JWKSURL:   "https://identity.malai.internal/.well-known/jwks.json",
//			Audiences: []string{"ledger"},
//		}},
//		CacheSize: 10000, // services: remember verified tokens
//	})
//	if err != nil { ... }
//	defer v.Close()
//	<-v.Ready() // or report readiness from it
//
//	mux.Handle("POST /transfers", v.RequireUser("transfers:write")(transfers))
//	mux.Handle("POST /internal/settle", v.RequireService("ledger:settle")(settle))
//	srv := &http.Server{Handler: v.Handler(mux)}
//
// Handlers read the claims with [FromContext]; a queue consumer calls
// [Verifier.Verify] and [Requirement.Check] directly. [Claims.Decode] reads
// claims of your own into a struct; [Issuer.RolesClaim] says where the
// roles are.
//
// # Identity providers
//
// The zero [Issuer.Profile] is the strict RFC 9068 profile, which the
// reference system's identity service follows. Tokens from Auth0,
// Keycloak, Microsoft Entra ID and most OpenID Connect providers differ:
// typ "JWT", the client in "azp" (or "appid"), lifetimes up to a day,
// sometimes no "iat". [ProfileOIDC] accepts exactly those differences,
// refuses ID tokens ("at_hash", "c_hash"), and recognises the providers'
// service-token markers; the Issuer examples show each provider. The
// strict checks (signature, algorithm allow-list, issuer, audience, expiry,
// strict JSON, refused header members) are the same under both.
//
// For development and tests without a real provider, package devissuer
// mints tokens of each shape and serves their JWKS.
//
// # Key sets
//
// A JWKS issuer's key set is fetched at [New] ([Verifier.Ready] closes when
// every issuer has keys) and refreshed in the background on the
// Cache-Control max-age, bounded by [Issuer.MinRefresh] and
// [Issuer.MaxRefresh]. A refresh never blocks a request whose key is known.
// A token naming an unknown kid starts at most one fetch per
// [Issuer.Cooldown] and waits only for that fetch; other unknown kids fail
// at once and are remembered for the cooldown, so a flood of random kids
// cannot drive fetches. When fetches fail, the last good keys stay in use
// for [Issuer.MaxStaleness]; [RefreshEvent.Age] reports how stale they are.
// Documents are capped in size, must be strict JSON, and only public
// asymmetric keys meant for signatures (use "sig" or unset, RSA ≥ 2048
// bits) are kept.
//
// # Verified-token cache
//
// With [Config.CacheSize] set, verified tokens are remembered under the
// SHA-256 of their text for at most [Config.CacheTTL] and never past
// "exp". A hit still checks expiry, that the signing key is still published
// and that the key set is not stale; route requirements run on every
// request whether or not the verification was cached.
//
// # Security caveats
//
//   - A bearer token is a bearer token: anyone holding it is its subject
//     until it expires. Keep lifetimes short; this package cannot revoke a
//     single token before "exp" (only its key).
//   - The cookie source needs CSRF protection of its own; the query source
//     leaks tokens into logs and Referer headers. Both are off by default.
//   - The default HTTP client uses the system TLS roots and refuses
//     redirects; pass [Config.HTTPClient] for private PKI.
//   - Clock skew beyond the leeway refuses valid tokens; keep clocks synced.
//   - Under [ProfileOIDC] nothing in a token says it is an access token
//     rather than an ID token except the audience (and the absence of
//     at_hash/c_hash): never list a client id in Audiences.
package jwtverify
