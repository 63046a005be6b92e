// Package observatory grades a response's headers offline with the
// Mozilla HTTP Observatory's published scoring rules, so tests and the
// reference system's evidence command can state "the Observatory would
// give this an A+" without a network scan.
//
// # Usage
//
//	res := observatory.Score(resp.Header, resp.TLS != nil)
//	fmt.Println(res.Score, res.Grade) // 130 A+
//	for _, t := range res.Tests {
//		fmt.Println(t.Name, t.Result, t.Modifier)
//	}
//
// [Evaluate] takes more of what a scan observed: the redirect chain from
// the http:// URL (for the redirection test), whether the host is on the
// HSTS preload list, and the Origin the probe sent (for CORS).
//
// # Scoring
//
// Every site starts at 100. Penalties (negative modifiers) are subtracted;
// if the result is 90 or more, bonuses (positive modifiers) are added too.
// The score never falls below 0. Grades: 100+ A+, 90 A, 85 A-, 80 B+, 70
// B, 65 B-, 60 C+, 50 C, 45 C-, 40 D+, 30 D, 25 D-, below F.
//
// The test logic follows mdn/mdn-http-observatory's analyzers
// (src/analyzer/tests/*.js) and the modifiers its score table
// (src/grader/charts.js), which is what the live Observatory runs:
//
//	test                            result                                                        modifier
//	content-security-policy         csp-implemented-with-no-unsafe-default-src-none                   +10
//	                                csp-implemented-with-no-unsafe                                     +5
//	                                csp-implemented-with-unsafe-inline-in-style-src-only                0
//	                                csp-implemented-but-duplicate-directives                            0
//	                                csp-implemented-with-insecure-scheme-in-passive-content-only      -10
//	                                csp-implemented-with-unsafe-eval                                  -10
//	                                csp-implemented-with-unsafe-inline                                -20
//	                                csp-implemented-with-insecure-scheme                              -20
//	                                csp-header-invalid / csp-not-implemented[-but-reporting-enabled]  -25
//	cookies                         cookies-secure-with-httponly-sessions-and-samesite                 +5
//	                                cookies-secure-with-httponly-sessions / cookies-not-found           0
//	                                cookies-without-secure-flag-but-protected-by-hsts                  -5
//	                                cookies-session-without-secure-flag-but-protected-by-hsts         -10
//	                                cookies-without-secure-flag / -samesite-flag-invalid /
//	                                cookies-anticsrf-without-samesite-flag                            -20
//	                                cookies-session-without-httponly-flag                             -30
//	                                cookies-session-without-secure-flag                               -40
//	cross-origin-resource-sharing   not-implemented / public-access / restricted-access                 0
//	                                implemented-with-universal-access (reflected origin + credentials) -50
//	redirection                     to-https / not-needed-no-http / all-redirects-preloaded             0
//	                                off-host-from-http                                                 -5
//	                                not-to-https-on-initial-redirection                               -10
//	                                missing / not-to-https / invalid-cert                             -20
//	referrer-policy                 private (no-referrer, same-origin, strict-origin[-when-cross-origin]) +5
//	                                not-implemented                                                     0
//	                                unsafe / header-invalid                                            -5
//	strict-transport-security       hsts-preloaded                                                     +5
//	                                max-age at least six months (15552000)                              0
//	                                max-age less than six months                                      -10
//	                                not-implemented / header-invalid / not-implemented-no-https       -20
//	subresource-integrity           sri-not-implemented-response-not-html                               0
//	x-content-type-options          nosniff 0; not-implemented / header-invalid                        -5
//	x-frame-options                 implemented-via-csp (frame-ancestors)                              +5
//	                                sameorigin-or-deny / allow-from-origin                              0
//	                                not-implemented / header-invalid                                  -20
//	cross-origin-resource-policy    same-origin / same-site                                           +10
//	                                cross-origin / not-implemented                                      0
//	                                header-invalid                                                     -5
//
// The authoritative table is [Modifiers].
//
// # Differences from a live scan
//
//   - Subresource Integrity needs the HTML body and its script tags; for an
//     HTML response the test is left out (it scores 0 or more when every
//     script is same-origin, as in the Malai web UI). <meta http-equiv> CSP
//     is not read for the same reason.
//   - Several enforced CSP policies are combined by exact source match;
//     the Observatory also matches path prefixes between policies.
//   - An HSTS max-age that is not a number is invalid here; the
//     Observatory's parseInt would read a numeric prefix.
//   - The scan's own checks (a 2xx status, a valid certificate chain) are
//     the caller's: Input.TLS must only be true for a verified chain.
//   - The MDN documentation page lists CORP same-origin at 0 and cross-origin
//     at -20; the scanner's code, followed here, gives +10 and 0.
package observatory
