// Package web is the reference system's customer web app: server-rendered
// pages (html/template, one small script, everything embedded) served by
// the gateway, acting as a backend-for-frontend to the identity and
// ledger services.
//
// # Pages
//
// Sign-up (each password rule marked as it is met while typing; the breach
// check's answer shown plainly, both "found" and "not in it"), sign-in,
// the second-factor challenge (a TOTP code or a recovery code), TOTP
// enrolment (the otpauth URI as an inline SVG QR code rendered on the
// server, the key in text, then confirmation and the recovery codes,
// shown once and never stored), accounts (balances, recent transfers,
// the status of queued transfers, polled until they finish), the transfer
// form, account security (password change, turning the second factor off,
// new recovery codes, the session list with sign-out per session: each
// with the re-authentication identity asks for, the current password and
// a current TOTP code or an unused recovery code, told apart by their
// form) and sign-out. A sign-in waiting for its second factor keeps only
// identity's one-use mfa_token, never the password.
//
// # Backend-for-frontend: no token in the browser
//
// The browser holds one cookie, [CookieName]: 256 random bits, HttpOnly,
// Secure, SameSite=Strict, Path=/, no Domain (the __Host- prefix makes the
// browser enforce the last three), no expiry (gone with the browser). It
// names a server-side session record; the access and refresh tokens live
// only there. The choice over tokens in page memory: a page's memory is
// readable by any script that runs in it, so one injection would hand an
// attacker a bearer token usable from anywhere for its lifetime; with the
// tokens on the server an injected script can only act through the
// victim's open page, and every such request still passes the CSRF check
// below. Nothing is written to localStorage, sessionStorage, IndexedDB or
// the Cache API (the browser tests assert it).
//
// A record is sealed with the data key ring (AES-256-GCM, the store key as
// additional data, so a record moved to another key fails to open) and
// stored under the SHA-256 of the cookie value, so a dump of the store
// holds no usable cookie and no token. Sessions end after
// [DefaultIdleTimeout] without use and [DefaultAbsoluteTimeout] after
// sign-in, whatever the activity; a session that never signed in (it
// only carries a form's CSRF token) ends after [AnonymousTimeout]. The
// store's own expiry removes records by themselves. The id and the CSRF
// token change at every change of privilege (sign-in, second factor on
// or off, password change), and sign-out deletes the record and revokes
// the refresh session at identity.
//
// The store is [NewBoltStore] (one durable file; bbolt locks it, so one
// process) or [NewRedisStore] (any number of gateway replicas; Redis
// Cluster works, each command touches one key). Every change to a record
// is a read-modify-write under a per-session lease (SET NX PX in Redis),
// so two tabs or two replicas never overwrite each other's changes — above
// all a rotated refresh token, whose loss would revoke the session at the
// next refresh. An access token is refreshed under that lease 30 seconds
// before it expires; a service answering 401 gets one forced refresh and
// one retry (every service checks the token before it acts).
//
// The app calls identity and the ledger directly over mutual TLS with its
// own client certificate, carrying the user's token: each service verifies
// it again, so the app is no trusted shortcut around the services' checks.
// It forwards the browser's address (from the gateway's trusted-proxy
// resolver) for identity's risk scoring.
//
// # CSRF
//
// Every state-changing route (every POST, listed by [App.Routes]) needs
// both: an Origin of the app (the configured origins, else the request's
// own https://Host), or, when a browser sends no Origin or "null", the
// browser's own Sec-Fetch-Site: same-origin; and the session's
// synchroniser token in the form field "csrf", compared in constant time.
// SameSite=Strict alone is not enough: two ports of one host are the same
// site, so a page on another port sends the cookie; the Origin check
// refuses it. The browser tests post from such a page to every route,
// with the victim's real token, and every post is refused.
//
// # Transfers
//
// The transfer form carries an Idempotency-Key made for that rendering of
// the form; the app sends it to the ledger, which applies one key once. A
// double click, a repeated post or a retry therefore moves money once;
// when the first submission is still running the app waits for its
// outcome, and when the outcome is unknown (a timeout, a 5xx) the form
// comes back with the same key, so submitting again is safe.
//
// # Content-Security-Policy
//
// [CSP] is the app's policy, applied by the headers middleware through
// [HeadersApp] and [SelectHeaders]: default-src 'none'; the one script by
// nonce (and Subresource Integrity); styles and images from the app;
// connections to the app; form-action 'self'; frame-ancestors 'none';
// base-uri 'none'; require-trusted-types-for 'script' with the single
// policy name [TrustedTypesPolicy], which the script creates first (so no
// injected script can) and which refuses every conversion (the app uses
// no HTML or script sink); reports to [ReportPath], the headers package's
// report handler. The other forced headers are the API's, except a
// same-origin referrer policy: under no-referrer browsers send "Origin:
// null" with the app's own form posts.
//
// # Usage
//
//	app, err := web.New(web.Config{
//		IdentityURL: identityURL, LedgerURL: ledgerURL,
//		Transport: mtlsTransport, // the app's own client certificate
//		Store:     store,         // web.NewBoltStore(path) or web.NewRedisStore(rdb, "malai:web:")
//		Ring:      dataKeys,      // the same keys on every replica
//		ClientIP:  resolver.Resolve,
//	})
//	if err != nil { … }
//	hm, err := headers.New(headers.Config{
//		Apps:   map[string]headers.App{web.HeadersAppName: web.HeadersApp()},
//		Select: web.SelectHeaders,
//	})
//	srv.Handler = hm.Handler(app.Handler())
//
// # Caveats
//
//   - A refresh whose answer is lost after identity rotated the token
//     leaves the session holding the old token; the next refresh is then
//     a reuse, identity revokes the session and the user signs in again.
//     That fails safe, never open.
//   - A crashed replica holding a session's lease blocks that session for
//     at most the lease time (15 s).
//   - The app adds no rate limit of its own: the gateway's per-IP limit
//     and identity's sign-in throttling apply.
//   - A session signed out from another device ends at identity at once,
//     and in the app at its next change (every signed-in form post asks
//     identity first whether the session is live) or its next page that
//     asks identity; until then its account pages still show balances
//     for at most the access-token lifetime (5 minutes by default).
//   - The browser keeps no cookie but the session's, so identity's known-
//     device cookie stays with the app's request and is not kept: every
//     sign-in through the app is judged as an unknown device (throttled
//     per account and network, never locked).
package web
