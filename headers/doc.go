// Package headers stamps security headers on every response so that no
// handler can strip or weaken them, and provides the edge pieces around
// them: a hardened [tls.Config], an HTTP→HTTPS redirect, HTTP/3
// advertisement and a CSP report endpoint.
//
// # Guarantees
//
// [Middleware.Handler] wraps the ResponseWriter and writes the mandatory
// set into the header map at the last moment: on WriteHeader, on the first
// Write, ReadFrom or Flush, after the handler returns without writing, and
// while a panic unwinds through it (so a recovery middleware outside it
// still sends the set). Values a handler put there under any spelling of
// the name are removed first, so a handler that deletes, overwrites or
// clears the headers, streams, upgrades (101 + Hijack, or Hijack and a raw
// response head), calls http.Error or
// http.Redirect, or is a mux 404 or http.ServeContent, still sends:
//
//	Strict-Transport-Security: max-age=31536000; includeSubDomains; preload  (HTTPS only)
//	Content-Security-Policy: <the app's policy>                              (validated; frame-ancestors 'none')
//	X-Frame-Options: DENY
//	X-Content-Type-Options: nosniff
//	Referrer-Policy: no-referrer
//	Cross-Origin-Opener-Policy: same-origin
//	Cross-Origin-Resource-Policy: same-origin
//	Permissions-Policy: <every feature denied>
//	Cache-Control: no-store
//	X-XSS-Protection: 0
//
// and never Server, X-Powered-By or the other version-revealing headers.
// The zero [Config] gives exactly this, with [APIPolicy] as the CSP.
//
// # Per-app policies
//
// Each application behind the middleware is an [App] with its own CSP and
// cross-origin settings; [Config.Select] (for example [ByPathPrefix])
// picks the app per request before the handler runs. Every policy is
// parsed by [ParseCSP] and checked by [Policy.Validate] in [New]: no
// 'unsafe-inline' or 'unsafe-eval' for scripts, object-src, base-uri and
// form-action present, no http: sources. $NONCE ([NoncePlaceholder]) in a
// policy becomes a fresh 128-bit nonce per request, read with
// [NonceFromContext]:
//
//	mw, err := headers.New(headers.Config{
//		Apps: map[string]headers.App{"web": {CSP: "default-src 'self'; script-src 'self' $NONCE; " +
//			"object-src 'none'; base-uri 'self'; form-action 'self'"}},
//		Select: headers.ByPathPrefix(map[string]string{"/app/": "web"}),
//	})
//	if err != nil { ... }
//	srv := &http.Server{Handler: mw.Handler(mux), TLSConfig: headers.TLSConfig(&tls.Config{Certificates: certs})}
//	plain := &http.Server{Handler: mw.Handler(redirect)} // redirect from headers.NewRedirect
//
// # TLS, redirect and HTTP/3
//
// [TLSConfig] sets a TLS 1.2 floor, only ECDHE AEAD suites for TLS 1.2 and
// h2 in ALPN. [NewRedirect] answers the plain-HTTP port with 308 to the
// same path on HTTPS, only for allowed hosts. [Config.AltSvc] takes a
// quic-go http3.Server's SetQUICHeaders to advertise HTTP/3 on HTTPS
// responses.
//
// # CSP reports
//
// [NewReportHandler] is the endpoint for a policy's report-uri. It accepts
// CSP Level 2 (application/csp-report) and Reporting API
// (application/reports+json) bodies up to a size cap, answers 204, and
// hands [Report] values to a callback (default: a slog Warn line). Query
// strings, fragments and user info are cut from every URL in a report,
// because a reset link or session id in a document URL must not reach the
// logs.
//
// # Grading
//
// The subpackage observatory grades a response's headers with the Mozilla
// HTTP Observatory's rules; the zero Config scores 130 (A+) on HTTPS.
//
// # Security caveats
//
//   - HSTS protects from the second visit on; the first needs the host on
//     the browsers' preload list (submit it: the header already carries
//     preload and includeSubDomains, and [NewRedirect] redirects to the
//     same host first, as the list requires).
//   - A Content-Security-Policy-Report-Only header set by a handler is
//     removed; trial a policy with [App.CSPReportOnly] instead.
//   - After Hijack the handler writes raw bytes. A 101 sent through
//     WriteHeader before Hijack carries the set; otherwise the hijacked
//     connection holds back a leading "HTTP/1.x" response head (up to 64
//     KiB) and rewrites it with the set. Bytes of any other protocol pass
//     through as written.
//   - 1xx informational responses (103 Early Hints) pass through with the
//     handler's headers; the final response carries the set.
//   - Cookies are the application's: the middleware does not add Secure,
//     HttpOnly or SameSite to Set-Cookie (the Observatory's cookie test
//     grades them).
//   - Headers written by middleware outside this one are not controlled:
//     wire it outermost.
//   - HSTS behind a TLS-ending proxy needs [Config.ClientIP], a resolver
//     trusting that proxy (the same one ratelimit and correlation use); an
//     untrusted peer's X-Forwarded-Proto is ignored.
//   - The report endpoint accepts anonymous input: rate-limit it.
//
// # Why not only unrolled/secure
//
// unrolled/secure writes its headers before the handler runs, so the
// handler wins (the gap this package closes), builds a fresh header map
// per request, redirects with 301/307 (a 308 keeps the method and body),
// compares AllowedHosts against Host including its port and panics on a
// bad regexp. Malai uses it where it fits: the request's nonce lives under
// unrolled/secure's context key, so code written for secure.CSPNonce keeps
// working.
package headers
