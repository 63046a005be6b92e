// Package identity is the identity domain of the Malai reference system:
// accounts with stable opaque subjects, sign-in with a lockout that
// protects the owner, optional TOTP MFA with recovery codes, account
// security changes behind re-authentication, server-side refresh
// sessions, the OAuth2 client-credentials grant for components with
// private_key_jwt (no shared secret), and the ES256 keys that sign every
// access token.
//
// # State
//
// Everything the service knows lives in a [store.Store]: accounts,
// password hashes, sealed TOTP secrets, recovery-code digests, refresh
// sessions, lockout counts, the signing keys (sealed), component keys and
// used assertion ids. The embedded default is boltstore (one fsynced bbolt
// file under the data directory; one process at a time); distributed mode
// uses pgstore (PostgreSQL, any number of replicas, an application role
// that cannot delete a username). Both pass the same conformance suite.
// A restart forgets nothing: the same keys sign, sessions keep rotating,
// throttles keep counting, and a username once registered can never be
// registered again, even after the account is deleted.
//
// The store holds no username, client address, user agent, TOTP secret or
// private key in the clear: usernames are indexed by a keyed digest and
// sealed for display, networks and devices are kept as keyed digests,
// secrets and keys are sealed with Config.Ring (AES-256-GCM, each record
// bound to its owner by additional data, so a sealed secret copied to
// another account fails to open).
//
// # Tokens
//
// Access tokens are JWTs (RFC 9068 profile) signed with ES256, header
// typ "at+jwt" and a kid, carrying iss, sub, aud, exp, iat, nbf, jti,
// client_id, scope and [ClaimTokenClass]. They live [DefaultAccessTokenTTL]
// (five minutes; at most [MaxAccessTokenTTL]). "iss" is Config.Issuer, the
// system's stable public URL.
//
//   - User tokens: sub "user:<id>" where id is the account's random
//     128-bit identifier ([UserSubject], [UserID]) — never the username,
//     so nothing keyed on a subject can pass to another person; aud
//     [AudienceUser], class [ClassUser], plus auth_time, amr, sid (the
//     refresh session) and roles when the account has any.
//   - Service tokens: sub == client_id == the component's name, aud
//     [AudienceService], class [ClassService]. Client ids cannot contain
//     ':', so user and service subjects never collide (RFC 9068 §5).
//
// Every verifier of the system applies [VerifierProfile]: ES256 only, typ
// at+jwt (any case, with or without "application/"), the issuer, one
// audience, a lifetime of at most MaxAccessTokenTTL, the token_class
// claim stated (never inferred from sub and client_id), strict JSON (no
// duplicate members, no crit, NumericDates as numbers). Identity checks
// its own account routes with jwtverify and that profile, then requires
// the account to exist and the token's session to be live — so a signed-out
// or revoked session's token buys nothing here, although other domains
// accept it until it expires.
//
// The signing keys are stored with their schedule: a key signs for
// Config.KeyRotationInterval from the moment it was activated, whoever
// restarts in between; the next key is published one interval before it
// signs; a retired key stays in the JWKS until every token it signed has
// expired (token lifetime + leeway + one JWKS cache period). The JWKS and
// the RFC 8414 metadata ([MetadataPath]) are served "public,
// max-age=300". [Service.RotateKey] rotates at once; an emergency rotation
// replaces every key. [Service.RotateKeyOnce] answers a numbered rotation
// request once however many replicas answer it, recording it with the
// keys: the reference system's component answers each "malai rotate-keys"
// this way, as its key-file watch reads the request or at its next start.
//
// # Passwords
//
// Two policies, chosen by Config.PasswordPolicy: [PolicyPage] (default;
// the security page's rule: at least 12 characters with a lower-case
// letter, an upper-case letter, a digit and a symbol) and [PolicyNIST]
// (NIST SP 800-63B-4 single-factor: at least 15 characters, no
// composition rules). Both accept up to 128 code points, normalise to
// NFKC, refuse passwords that contain the username or use fewer than
// five distinct characters, and refuse compromised passwords ([OfflineCorpus]
// by default; [RangeChecker] for a k-anonymity range API). Hashes are
// argon2id (OWASP baseline: 19 MiB, 2 passes, 1 lane; per-user salt;
// constant-time compare), upgraded on sign-in when the parameters change;
// Config.MaxConcurrentHashes bounds the memory a flood can claim. The cost
// is deliberate: about one argon2id computation per sign-in attempt that
// reaches the password check.
//
// # Sign-in and lockout
//
// POST /v1/sessions {username, password[, totp_code | recovery_code]}.
// Every attempt is judged from failure counts in the store (window 15
// minutes; see [Lockout]) before the password is looked at:
//
//   - A device that completed a sign-in before carries the signed
//     [DeviceCookie] (HttpOnly, Secure, SameSite=Strict, sent only to
//     /v1/sessions; its MAC binds the username). It is judged by its own
//     failures only. Nothing an attacker does elsewhere — many networks,
//     many failures, the owner's own NAT address — slows it.
//   - Anyone else is throttled, never hard-blocked: per (account,
//     network) after 5 failures; per network after 30 failures or 10
//     failing accounts (credential stuffing); per password fingerprint
//     after 5 accounts failed with it (spraying, from one network or many;
//     the fingerprint is a keyed digest kept for the window); per account
//     after 10 failures, or 5 from 3 networks (distributed guessing). A
//     throttle answers 429 sign-in-throttled with Retry-After: the wait
//     starts at 1 s and doubles with every further failure up to 15
//     minutes, and refused attempts do not count, so nobody can keep an
//     account shut for free.
//   - With the right password, an unknown device on a network the account
//     never used while the account is under attack is high risk: it needs
//     the second factor, and without one it is refused with the same
//     answer as a wrong password.
//   - TOTP and recovery codes are bounded per account and device class
//     (the known device, or any unknown one): 3 free failures per 24
//     hours, then a wait from 30 s doubling to 1 hour.
//
// Every decision and its reasons go to the log; every refusal that is not
// a plain wrong password, and every success, goes to the audit chain
// (one entry per key and minute, so a flood cannot flood the chain). The
// pre-password decision depends only on what the client sent, never on
// whether the account exists; an unknown username costs the same argon2id
// work and gets the same answer as a wrong password.
//
// A right password on an account with MFA and no code answers 401
// mfa-required with a one-use "mfa_token" (five minutes, bound to the
// account); POST /v1/sessions/mfa {mfa_token, totp_code | recovery_code}
// completes the sign-in, so a backend never needs to keep the password. A
// wrong code there answers invalid-credentials with a fresh mfa_token.
//
// A successful sign-in returns a [TokenResponse], sets the refresh cookie
// ([RefreshCookie]: HttpOnly, Secure, SameSite=Strict, Path [RefreshPath])
// and the device cookie. The refresh token is 256 random bits stored as a
// SHA-256 digest; POST /v1/refresh rotates it, and presenting a rotated
// token revokes the whole session. Refresh and sign-out (POST
// /v1/refresh/revoke, or DELETE /v1/refresh) require [CSRFHeader]: 1 and
// an Origin in Config.AllowedOrigins (default the issuer's origin).
//
// # Account security
//
// Every change needs re-authentication beyond the bearer token: the
// current "password" and, when the account has a second factor, a current
// "totp_code" or an unused "recovery_code". Wrong answers are throttled
// per session, so a stolen token is no password oracle.
//
//	GET    /v1/account                 the account (id, sub, username, roles, mfa)
//	POST   /v1/account/password        {password, new_password[, code]}: revokes every other session
//	POST   /v1/mfa/totp                {password}: start TOTP enrolment → secret, otpauth_url
//	POST   /v1/mfa/totp/confirm        {code}: same session, within 15 min → recovery codes
//	POST   /v1/mfa/totp/disable        {password, totp_code | recovery_code}
//	POST   /v1/mfa/recovery-codes      {password, totp_code | recovery_code} → new codes
//	GET    /v1/sessions                the account's live sessions
//	POST   /v1/sessions/{id}/revoke    revoke one (also DELETE /v1/sessions/{id})
//
// Each change is an audit event ([AuditPasswordChanged] and the others).
//
// # Components
//
// Each component task generates an ES256 (or Ed25519) key pair in memory
// and registers the public key with POST /internal/v1/clients, which
// admits only a caller whose verified client certificate names a
// component in Config.Clients (Config.PeerComponent reads it); the
// client id is that name. POST /oauth2/token then takes only
// private_key_jwt (RFC 7523): an assertion with iss = sub = client id,
// aud = Config.TokenEndpoint exactly, a lifetime of at most five minutes
// and a "jti" used once (stored until it expires, on every replica). The
// assertion must come over the connection of the component it names.
// client_secret_basic, client_secret_post and client_secret_jwt answer
// 401 invalid_client; every answer is RFC 6749 §5.2 with Cache-Control:
// no-store. These routes are on the internal listener only; the gateway
// does not route them. Package clientauth is the component side.
//
// [Service.RevokeClientKeys] (POST /internal/v1/clients/{id}/revoke, which
// admits only an "operator" certificate; `malai revoke-client` calls it)
// revokes one task's key, or all of a component's keys:
// that task is refused from the next request, on every replica, and no
// other component or task is touched. Tokens it already holds live out
// their five minutes.
//
// # Usage
//
//	st, err := boltstore.Open(filepath.Join(dataDir, "identity"), 0)
//	svc, err := identity.New(identity.Config{
//		Issuer: "https://malai.example", // the gateway's public URL
//		Store:  st, Ring: ring, Audit: auditLog,
//		Clients:       []identity.Client{{ID: "worker", Scopes: []string{"ledger:transfer"}}},
//		PeerComponent: certificateName, // from the mutual-TLS connection
//		ClientIP:      resolver.Resolve, // trusted-proxy aware
//	})
//	if err != nil { … }
//	defer svc.Close()
//	internalMux.Handle("/", svc.Handler())
//
// # Errors and secrets
//
// /v1 errors are problem+json (see [WriteError] and docs/problems.md);
// Config.ErrorHandler replaces them. JSON bodies are capped at 4 KiB and
// decoded strictly: one object, exact member names, no duplicates, strings
// only, valid UTF-8. Passwords, codes and tokens travel as [Secret], which
// redacts itself in slog and fmt; no error, log line or audit payload
// carries one, nor a username.
//
// Sign-up reveals whether a username is taken (409): the price of
// self-service registration without e-mail verification.
//
// [Config.Faults] switch single defences off for evidence tests; [New]
// refuses them outside tests.
//
// A [Service] is safe for concurrent use.
package identity
