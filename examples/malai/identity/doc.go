// Package identity is the identity domain of the Malai reference system:
// sign-up, sign-in with adaptive risk scoring, optional TOTP MFA with
// recovery codes, server-side refresh sessions, the OAuth2
// client-credentials grant for components, and the ES256 keys that sign
// every access token.
//
// # Reference grade, not production grade
//
// Every store (accounts, refresh sessions, clients, risk history, keys) is
// in process memory: a restart forgets accounts and sessions and generates
// new signing keys, and two replicas do not share state. The behaviour,
// the wire format and the security decisions are the production ones; the
// storage is not. A production deployment would keep accounts and sessions
// in PostgreSQL, risk counters in Redis, and the signing key in a KMS or
// HSM so the private key never sits in process memory.
//
// # Tokens
//
// Access tokens are JWTs (RFC 9068 profile) signed with ES256, header
// typ "at+jwt" and a kid, carrying iss, sub, aud, exp, iat, nbf, jti,
// client_id, scope and [ClaimTokenClass]. They live [DefaultAccessTokenTTL]
// (five minutes; at most [MaxAccessTokenTTL]).
//
//   - User tokens: sub "user:<username>" ([UserSubject], [Username]), aud
//     [AudienceUser], class [ClassUser], client_id Config.UserClientID,
//     plus auth_time and amr.
//   - Service tokens: aud [AudienceService], class [ClassService],
//     sub == client_id. Client ids cannot contain ':', so user and
//     service subjects never collide (RFC 9068 §5). A service token is
//     not a user token: a verifier
//     that requires aud malai-api and class user refuses it, and the
//     reverse holds for internal routes.
//
// The keys are generated in process and kept in a ring: the current key
// signs, the previous key stays published so its tokens verify until they
// expire, and the next key is published a whole rotation interval before
// it signs, so verifiers caching the JWKS for [JWKSMaxAge] never meet an
// unknown kid. Rotation happens on Config.KeyRotationInterval (checked
// when a token is minted) or on [Service.RotateKey]; two rotations in a
// row retire a leaked key and every token it signed.
//
// # Passwords
//
// Two policies, chosen by Config.PasswordPolicy:
//
//   - [PolicyPage] (default) is the rule the security page promises: at
//     least 12 characters with a lower-case letter, an upper-case letter, a
//     digit and a symbol.
//   - [PolicyNIST] is NIST SP 800-63B-4 for single-factor passwords: at
//     least 15 characters and no composition rules.
//
// Both accept up to 128 code points, normalise to NFKC, refuse passwords
// that contain the username or use fewer than five distinct characters,
// and refuse compromised passwords. Hashes are argon2id (OWASP baseline:
// 19 MiB, 2 passes, 1 lane; per-user 16-byte salt; constant-time compare),
// upgraded on sign-in when the parameters change. Config.MaxConcurrentHashes
// bounds the memory a sign-in flood can claim.
//
// # Compromised passwords
//
// [OfflineCorpus], the default [BreachChecker], is an offline corpus: the
// 30,000 most frequent passwords of public breach dumps as embedded in
// github.com/trustelem/zxcvbn, in a bloom filter, matched ignoring case,
// leading and trailing digits and symbols, and common substitutions
// ("P@ssw0rd!!" matches "password"). It is a fixed snapshot, not a live
// breach feed: a password leaked last week is not in it. For live data,
// [RangeChecker] queries a k-anonymity range API (Have I Been Pwned's
// Pwned Passwords: only the first five hex digits of the SHA-1 leave the
// process, responses padded); [AnyBreachChecker] chains it behind the
// offline corpus. A checker error fails closed (503). A
// compromised password is refused at sign-up; at sign-in it flags the
// account for a reset and no token is issued until [Service.ResetPassword]
// runs.
//
// # Sign-in and adaptive risk
//
// Every sign-in is scored from failures per account, per client network
// (IPv4 address or IPv6 /64), per account and network, the number of
// distinct accounts failing from one network (credential stuffing), and,
// once the password is right, whether the network is new for the account.
// The score decides, and the decision is enforced:
//
//   - allow: a token is issued (after TOTP when the account enrolled it);
//   - step-up: a TOTP code or recovery code is required; an account
//     without a second factor is refused;
//   - block: refused. A block decided before the password is checked
//     answers 403 sign-in-blocked and depends only on the submitted name
//     and the network; a block decided after it answers exactly like a
//     wrong password, so a credential stuffer never learns that a pair
//     was right.
//
// An unknown username gets the same 401 invalid-credentials answer as a
// wrong password after the same argon2id work (against a dummy hash).
// The client address comes from Config.ClientIP; the default, the
// RemoteAddr host, is right only without a proxy.
//
// A successful sign-in returns a [TokenResponse] and sets the refresh
// cookie ([RefreshCookie]: HttpOnly, Secure, SameSite=Strict, Path
// [RefreshPath]). The refresh token is 256 random bits stored as a
// SHA-256 digest; POST /v1/refresh rotates it, and presenting a rotated
// token revokes the whole session (its family). Two tabs refreshing with
// the same cookie at once therefore sign the user out: strict by design.
//
// # MFA
//
// POST /v1/mfa/totp (user token whose sign-in is at most
// [MFAEnrollMaxAuthAge] old) returns the otpauth URL and secret once; POST
// /v1/mfa/totp/confirm with a current code activates it and returns ten
// single-use recovery codes (80 bits each, stored as digests); a wrong code
// answers 422 invalid-otp-code and leaves the enrolment pending. A TOTP code
// is accepted only for a time step later than the last accepted one, so a
// code cannot be replayed. Disabling TOTP and regenerating recovery codes
// are not implemented.
//
// # Components
//
// [Service.RegisterClient] gives each component its own client id and a
// 256-bit secret (returned once, stored as a digest); POST /oauth2/token
// with grant_type=client_credentials and HTTP Basic returns a service
// token whose scope is at most the client's. Errors follow RFC 6749 §5.2.
// [Service.RevokeClient] stops one component without touching the others;
// tokens it already holds live out their five minutes. The client
// credentials grant has no grant to be invalid, so invalid_grant never
// occurs; a revoked or wrong secret is invalid_client (401, WWW-Authenticate:
// Basic), a password or code grant is unauthorized_client.
//
// [Service.CreateUser] seeds accounts (demo data, operator tools) through
// the same policy, breach check and hashing as POST /v1/users.
//
// # Usage
//
//	svc, err := identity.New(identity.Config{
//		Issuer:   "https://identity.malai.internal",
//		ClientIP: resolver.ClientIP, // trusted-proxy aware
//	})
//	if err != nil { … }
//	defer svc.Close()
//	ledgerSecret, err := svc.RegisterClient("ledger", []string{"audit:append"})
//	mux.Handle("/", svc.Handler())
//
// Other domains verify tokens with jwtverify against JWKSPath, requiring
// [Algorithm], [TokenType], the issuer, and [AudienceUser] + [ClassUser]
// on user routes or [AudienceService] + [ClassService] on internal routes.
//
// # Errors and secrets
//
// /v1 errors are problem+json (see [WriteError] and docs/problems.md);
// Config.ErrorHandler replaces them. Bodies are capped at 4 KiB and decoded
// strictly: one object, exact member names, no duplicates, strings only,
// valid UTF-8. Passwords, codes and tokens travel as [Secret], which
// redacts itself in slog and fmt; no error or log line carries one, and
// an unknown username is not logged (it may be a mistyped password).
//
// Sign-up reveals whether a username is taken (409): the price of
// self-service registration without e-mail verification. Rate limits on
// sign-up and sign-in belong to the gateway.
//
// A [Service] is safe for concurrent use.
package identity
