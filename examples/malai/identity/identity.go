package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/malai-sec/malai/examples/malai/identity/internal/breach"
	"github.com/malai-sec/malai/examples/malai/identity/internal/keyring"
	"github.com/malai-sec/malai/examples/malai/identity/internal/password"
	"github.com/malai-sec/malai/examples/malai/identity/internal/risk"
)

// Token and audience constants. The other domains configure jwtverify with
// these: user routes accept [AudienceUser] tokens of class [ClassUser],
// internal routes accept [AudienceService] tokens of class [ClassService].
const (
	// TokenType is the JOSE "typ" header of every access token (RFC 9068).
	TokenType = "at+jwt"
	// Algorithm is the signing algorithm of every access token.
	Algorithm = "ES256"
	// AudienceUser is the "aud" of tokens issued to people.
	AudienceUser = "malai-api"
	// AudienceService is the "aud" of tokens issued to components through
	// the client-credentials grant.
	AudienceService = "malai-internal"
	// UserSubjectPrefix starts the "sub" of every user token. Client ids
	// cannot contain ':', so a user subject never equals a service
	// subject (the client id): the disjoint namespaces RFC 9068 §5 asks
	// for, so a policy keyed by subject cannot confuse a user called
	// "ledger" with the ledger component.
	UserSubjectPrefix = "user:"
	// ClaimTokenClass names the claim carrying [ClassUser] or [ClassService].
	ClaimTokenClass = "token_class"
	// ClaimClientID is the RFC 9068 client_id claim. For service tokens it
	// equals "sub".
	ClaimClientID = "client_id"
	// ClaimScope is the RFC 9068 space-separated scope claim.
	ClaimScope = "scope"
	// ClaimAuthTime is the time of the sign-in a user token descends from.
	ClaimAuthTime = "auth_time"
	// ClaimAMR lists the authentication methods of that sign-in (RFC 8176):
	// "pwd", plus "otp" and "mfa" when a second factor was given.
	ClaimAMR = "amr"
	// ClassUser marks a token that acts for a person.
	ClassUser = "user"
	// ClassService marks a token that acts for a component.
	ClassService = "service"
	// JWKSPath is where the public keys are published.
	JWKSPath = "/.well-known/jwks.json"
	// JWKSMaxAge is the Cache-Control max-age of the JWKS document.
	JWKSMaxAge = 5 * time.Minute
	// RefreshCookie names the cookie that carries the refresh token. The
	// __Secure- prefix makes browsers refuse it without the Secure flag.
	RefreshCookie = "__Secure-malai-refresh"
	// RefreshPath is the only path the refresh cookie is sent to.
	RefreshPath = "/v1/refresh"
)

// Defaults applied by [New] to zero Config fields.
const (
	DefaultAccessTokenTTL      = 5 * time.Minute
	DefaultRefreshTTL          = 8 * time.Hour
	DefaultSessionMaxAge       = 24 * time.Hour
	DefaultKeyRotationInterval = 24 * time.Hour
	DefaultUserClientID        = "malai-web"
	DefaultTOTPIssuer          = "Malai"
	// MaxAccessTokenTTL keeps the page's promise: lifetimes in minutes.
	MaxAccessTokenTTL = 15 * time.Minute
	// MFAEnrollMaxAuthAge is how recent the sign-in behind a token must be
	// to enrol a second factor, so that a stolen or refreshed token alone
	// cannot attach an attacker's authenticator.
	MFAEnrollMaxAuthAge = 15 * time.Minute
)

// defaultUserScopes are the scopes of a user token when Config.UserScopes
// is empty.
var defaultUserScopes = []string{"ledger:read", "ledger:write"}

// Errors. Handlers pass them (possibly wrapped) to Config.ErrorHandler;
// the default handler maps each to a problem+json response listed in
// docs/problems.md.
var (
	ErrInvalidConfig         = errors.New("identity: invalid configuration")
	ErrInvalidCredentials    = errors.New("identity: invalid credentials")
	ErrSignInBlocked         = errors.New("identity: sign-in blocked")
	ErrMFARequired           = errors.New("identity: second factor required")
	ErrPasswordResetRequired = errors.New("identity: password must be reset")
	ErrPasswordPolicy        = errors.New("identity: password does not meet the policy")
	ErrPasswordCompromised   = errors.New("identity: password is in a compromised-password corpus")
	ErrUsernameTaken         = errors.New("identity: username taken")
	ErrInvalidUsername       = errors.New("identity: invalid username")
	ErrUnknownUser           = errors.New("identity: unknown user")
	ErrMalformedRequest      = errors.New("identity: malformed request")
	ErrUnsupportedMediaType  = errors.New("identity: unsupported media type")
	ErrBodyTooLarge          = errors.New("identity: request body too large")
	ErrInvalidToken          = errors.New("identity: invalid bearer token")
	ErrReauthenticate        = errors.New("identity: sign-in too old for this action")
	ErrMFAAlreadyEnrolled    = errors.New("identity: second factor already enrolled")
	ErrMFANotPending         = errors.New("identity: no pending second-factor enrolment")
	ErrInvalidCode           = errors.New("identity: invalid one-time code")
	ErrInvalidRefresh        = errors.New("identity: invalid refresh token")
	ErrRefreshReused         = errors.New("identity: refresh token reused; session revoked")
	ErrClientIP              = errors.New("identity: client address unavailable")
	ErrNotFound              = errors.New("identity: not found")
	ErrMethodNotAllowed      = errors.New("identity: method not allowed")
	ErrUnavailable           = errors.New("identity: dependency unavailable")
	ErrClosed                = errors.New("identity: service closed")
	ErrInvalidClient         = errors.New("identity: invalid client registration")
	ErrClientExists          = errors.New("identity: client already registered")
)

// PolicyError lists the password rules a password breaks. It wraps
// [ErrPasswordPolicy].
type PolicyError struct {
	Violations []string
}

func (e *PolicyError) Error() string {
	return ErrPasswordPolicy.Error() + ": " + strings.Join(e.Violations, ", ")
}

func (e *PolicyError) Unwrap() error { return ErrPasswordPolicy }

// PasswordPolicy selects the sign-up password rule.
type PasswordPolicy int

const (
	// PolicyPage is the security page's rule and the default: at least 12
	// characters with a lower-case letter, an upper-case letter, a digit
	// and a symbol.
	PolicyPage PasswordPolicy = iota
	// PolicyNIST is the NIST SP 800-63B-4 single-factor rule: at least 15
	// characters and no composition rules.
	PolicyNIST
)

// Argon2Params are the argon2id cost parameters. The zero value selects
// the OWASP baseline (19 MiB, 2 passes, 1 lane).
type Argon2Params struct {
	Time      uint32
	MemoryKiB uint32
	Threads   uint8
}

// BreachChecker reports whether a password is known to be compromised or
// too common to be safe. Implementations must be safe for concurrent use
// and must never log or keep the password. An error fails the request
// closed (503): sign-up refuses, sign-in refuses.
//
// The default, [OfflineCorpus], is an offline list; a client of a
// k-anonymity range API (Have I Been Pwned's /range/{first 5 hex of
// SHA-1}) satisfies the same interface.
type BreachChecker interface {
	Breached(ctx context.Context, password string) (bool, error)
}

type offlineCorpus struct{ c *breach.Corpus }

func (o offlineCorpus) Breached(_ context.Context, pw string) (bool, error) {
	return o.c.Contains(pw), nil
}

// OfflineCorpus returns the built-in [BreachChecker]: the 30,000 most
// frequent passwords of public breach dumps, as embedded in
// github.com/trustelem/zxcvbn, held in a bloom filter (false-positive rate
// 1e-7), matched ignoring case, decorations (leading/trailing digits and
// symbols) and common character substitutions. It is a fixed snapshot, not
// a live breach feed.
func OfflineCorpus() BreachChecker { return offlineCorpus{breach.Default()} }

// Config configures a [Service]. The zero value is invalid only for
// Issuer; every other field has a strict default.
type Config struct {
	// Issuer is the "iss" of every token: an absolute https URL without
	// query or fragment. Required.
	Issuer string
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// ClientIP resolves the client address of a request. The reference
	// system passes the ratelimit package's trusted-proxy resolver.
	// Default: the host of RemoteAddr (right when nothing proxies).
	ClientIP func(*http.Request) (netip.Addr, error)
	// PasswordPolicy selects the sign-up rule. Default PolicyPage.
	PasswordPolicy PasswordPolicy
	// Breach checks passwords at sign-up (refused) and at sign-in (the
	// account is blocked until its password is reset). Default
	// OfflineCorpus().
	Breach BreachChecker
	// Argon2 sets the password-hashing cost. Default OWASP's baseline.
	// Lowering it is a loosening meant for tests.
	Argon2 Argon2Params
	// MaxConcurrentHashes bounds argon2id computations in flight; excess
	// requests wait (a sign-in flood cannot exhaust memory). Default
	// 2×GOMAXPROCS.
	MaxConcurrentHashes int
	// AccessTokenTTL is the access-token lifetime. Default 5 minutes; at
	// most MaxAccessTokenTTL.
	AccessTokenTTL time.Duration
	// RefreshTTL is how long an unused refresh token stays valid. Default
	// 8 hours.
	RefreshTTL time.Duration
	// SessionMaxAge bounds a refresh session (sign-in to last refresh)
	// whatever its activity. Default 24 hours.
	SessionMaxAge time.Duration
	// KeyRotationInterval rotates the signing key when the current one has
	// signed for this long (checked when a token is issued). Default 24
	// hours; it must exceed AccessTokenTTL + JWKSMaxAge so that every live
	// token's key stays published.
	KeyRotationInterval time.Duration
	// UserClientID is the client_id of user tokens (the first-party app).
	// Default "malai-web".
	UserClientID string
	// UserScopes are the scopes of user tokens. Default
	// ["ledger:read", "ledger:write"].
	UserScopes []string
	// TOTPIssuer labels enrolments in authenticator apps. Default "Malai".
	TOTPIssuer string
	// Logger receives security events (sign-in outcomes with risk score
	// and reasons, refresh reuse, blocked accounts). Secrets never reach
	// it. Default slog.Default().
	Logger *slog.Logger
	// ErrorHandler writes error responses for the /v1 routes. Default:
	// problem+json as listed in docs/problems.md. The OAuth2 token
	// endpoint always answers in RFC 6749 §5.2 form.
	ErrorHandler func(http.ResponseWriter, *http.Request, error)
}

// Service is the identity domain: accounts, sign-in, MFA, refresh
// sessions, OAuth2 clients and the token-signing keys. All state is in
// memory. It is safe for concurrent use; create it with [New].
type Service struct {
	cfg      Config
	policy   password.Policy
	argon    password.Params
	ring     *keyring.Ring
	risk     *risk.Engine
	hashSem  chan struct{}
	hashes   atomic.Int64 // argon2id computations run (tests, metrics)
	dummy    string       // a hash compared against when the user is unknown
	handler  http.Handler
	log      *slog.Logger
	sessions *sessionStore

	mu      sync.Mutex
	users   map[string]*user
	clients map[string]*client
	closed  atomic.Bool
}

var (
	usernameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{2,63}$`)
	clientIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	// scopeRE is RFC 6749 §3.3 scope-token.
	scopeRE = regexp.MustCompile(`^[\x21\x23-\x5B\x5D-\x7E]+$`)
)

// New validates cfg and returns a running service with a fresh key ring.
func New(cfg Config) (*Service, error) {
	c := cfg
	c.UserScopes = slices.Clone(cfg.UserScopes)
	u, err := url.Parse(c.Issuer)
	if c.Issuer == "" || err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("%w: Issuer must be an absolute https URL without query or fragment", ErrInvalidConfig)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ClientIP == nil {
		c.ClientIP = RemoteAddrIP
	}
	var policy password.Policy
	switch c.PasswordPolicy {
	case PolicyPage:
		policy = password.Page
	case PolicyNIST:
		policy = password.NIST
	default:
		return nil, fmt.Errorf("%w: unknown PasswordPolicy %d", ErrInvalidConfig, c.PasswordPolicy)
	}
	if c.Breach == nil {
		c.Breach = OfflineCorpus()
	}
	argon := password.Default
	if c.Argon2 != (Argon2Params{}) {
		argon = password.Params{Time: c.Argon2.Time, MemoryKiB: c.Argon2.MemoryKiB, Threads: c.Argon2.Threads}
		if err := argon.Validate(); err != nil {
			return nil, fmt.Errorf("%w: Argon2: %v", ErrInvalidConfig, err)
		}
	}
	if c.MaxConcurrentHashes < 0 {
		return nil, fmt.Errorf("%w: MaxConcurrentHashes must not be negative", ErrInvalidConfig)
	}
	if c.MaxConcurrentHashes == 0 {
		c.MaxConcurrentHashes = 2 * runtime.GOMAXPROCS(0)
	}
	durations := []struct {
		name string
		d    *time.Duration
		def  time.Duration
	}{
		{"AccessTokenTTL", &c.AccessTokenTTL, DefaultAccessTokenTTL},
		{"RefreshTTL", &c.RefreshTTL, DefaultRefreshTTL},
		{"SessionMaxAge", &c.SessionMaxAge, DefaultSessionMaxAge},
		{"KeyRotationInterval", &c.KeyRotationInterval, DefaultKeyRotationInterval},
	}
	for _, d := range durations {
		if *d.d < 0 {
			return nil, fmt.Errorf("%w: %s must not be negative", ErrInvalidConfig, d.name)
		}
		if *d.d == 0 {
			*d.d = d.def
		}
	}
	if c.AccessTokenTTL < time.Minute || c.AccessTokenTTL > MaxAccessTokenTTL {
		return nil, fmt.Errorf("%w: AccessTokenTTL must be between 1 minute and %v", ErrInvalidConfig, MaxAccessTokenTTL)
	}
	if c.SessionMaxAge < c.RefreshTTL {
		return nil, fmt.Errorf("%w: SessionMaxAge must be at least RefreshTTL", ErrInvalidConfig)
	}
	if c.KeyRotationInterval <= c.AccessTokenTTL+JWKSMaxAge {
		return nil, fmt.Errorf("%w: KeyRotationInterval must exceed AccessTokenTTL + JWKSMaxAge", ErrInvalidConfig)
	}
	if c.UserClientID == "" {
		c.UserClientID = DefaultUserClientID
	}
	if !clientIDRE.MatchString(c.UserClientID) {
		return nil, fmt.Errorf("%w: UserClientID must match %s", ErrInvalidConfig, clientIDRE)
	}
	if len(c.UserScopes) == 0 {
		c.UserScopes = slices.Clone(defaultUserScopes)
	}
	for _, s := range c.UserScopes {
		if !scopeRE.MatchString(s) {
			return nil, fmt.Errorf("%w: UserScopes: invalid scope token %q", ErrInvalidConfig, s)
		}
	}
	if c.TOTPIssuer == "" {
		c.TOTPIssuer = DefaultTOTPIssuer
	}
	if strings.ContainsAny(c.TOTPIssuer, ":") {
		return nil, fmt.Errorf("%w: TOTPIssuer must not contain ':'", ErrInvalidConfig)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	ring, err := keyring.New(c.Now)
	if err != nil {
		return nil, fmt.Errorf("identity: generating signing keys: %w", err)
	}
	dummyPW := make([]byte, 32)
	_, _ = rand.Read(dummyPW)
	dummy, err := password.Hash(base64.RawURLEncoding.EncodeToString(dummyPW), argon)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	s := &Service{
		cfg:      c,
		policy:   policy,
		argon:    argon,
		ring:     ring,
		risk:     risk.New(0, c.Now),
		hashSem:  make(chan struct{}, c.MaxConcurrentHashes),
		dummy:    dummy,
		log:      c.Logger,
		sessions: newSessionStore(c.Now, c.RefreshTTL, c.SessionMaxAge),
		users:    make(map[string]*user),
		clients:  make(map[string]*client),
	}
	s.handler = s.routes()
	return s, nil
}

// RemoteAddrIP is the default Config.ClientIP: the host part of
// r.RemoteAddr. It is right only when no proxy sits in front.
func RemoteAddrIP(r *http.Request) (netip.Addr, error) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, ErrClientIP
	}
	return a.Unmap().WithZone(""), nil
}

// Handler returns the service's routes:
//
//	GET    /.well-known/jwks.json   public keys (current, previous, next)
//	POST   /v1/users                sign-up
//	POST   /v1/sessions             sign-in → access token + refresh cookie
//	POST   /v1/refresh              rotate the refresh cookie → access token
//	DELETE /v1/refresh              sign out (revoke the refresh session)
//	POST   /v1/mfa/totp             start TOTP enrolment (user token)
//	POST   /v1/mfa/totp/confirm     confirm it → recovery codes (user token)
//	POST   /oauth2/token            client-credentials grant (HTTP Basic)
func (s *Service) Handler() http.Handler { return s.handler }

// Close drops the private signing keys and every session; requests and
// calls made afterwards fail with [ErrClosed]. It is idempotent.
func (s *Service) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.ring.Close()
	s.sessions.clear()
	return nil
}

func (s *Service) isClosed() bool { return s.closed.Load() }

// RotateKey rotates the signing keys now: the pre-published next key
// starts signing, the current key becomes the previous one (still
// published, so its tokens keep verifying), and the old previous key is
// dropped. Two calls in a row therefore invalidate every token signed
// before the first: the emergency rotation for a leaked key.
func (s *Service) RotateKey() error {
	if err := s.ring.Rotate(); err != nil {
		if errors.Is(err, keyring.ErrClosed) {
			return ErrClosed
		}
		return err
	}
	return nil
}

// JWKS returns the published JSON Web Key Set document, the same bytes
// GET /.well-known/jwks.json serves.
func (s *Service) JWKS() []byte { return slices.Clone(s.ring.JWKS()) }

// ResetPassword sets a new password for an account out of band (the
// reference system's stand-in for an e-mailed reset link, or an operator
// action). The password must meet the policy and not be compromised. It
// clears the forced-reset flag and revokes every refresh session of the
// account.
func (s *Service) ResetPassword(ctx context.Context, username, newPassword string) error {
	name, ok := normalizeUsername(username)
	if !ok {
		return ErrInvalidUsername
	}
	s.mu.Lock()
	_, exists := s.users[name]
	s.mu.Unlock()
	if !exists {
		return ErrUnknownUser
	}
	hash, err := s.newPasswordHash(ctx, name, newPassword)
	if err != nil {
		return err
	}
	s.mu.Lock()
	u, exists := s.users[name]
	if exists {
		u.hash = hash
		u.mustReset = false
	}
	s.mu.Unlock()
	if !exists {
		return ErrUnknownUser
	}
	s.sessions.revokeUser(name)
	s.log.LogAttrs(ctx, slog.LevelInfo, "identity: password reset", slog.String("user", name))
	return nil
}

// newPasswordHash normalises pw, applies the policy and the breach check,
// and hashes it.
func (s *Service) newPasswordHash(ctx context.Context, username, pw string) (string, error) {
	pw = password.Normalize(pw)
	if v := s.policy.Check(pw, username); len(v) > 0 {
		pe := &PolicyError{}
		for _, x := range v {
			pe.Violations = append(pe.Violations, string(x))
		}
		return "", pe
	}
	breached, err := s.cfg.Breach.Breached(ctx, pw)
	if err != nil {
		return "", fmt.Errorf("%w: breach check failed", ErrUnavailable)
	}
	if breached {
		return "", ErrPasswordCompromised
	}
	if err := s.acquireHash(ctx); err != nil {
		return "", err
	}
	defer s.releaseHash()
	s.hashes.Add(1)
	return password.Hash(pw, s.argon)
}

func (s *Service) acquireHash(ctx context.Context) error {
	select {
	case s.hashSem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
}

func (s *Service) releaseHash() { <-s.hashSem }

// normalizeUsername lower-cases ASCII letters and checks the syntax:
// 3–64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or
// digit.
func normalizeUsername(u string) (string, bool) {
	if len(u) > 64 {
		return "", false
	}
	u = strings.ToLower(u)
	return u, usernameRE.MatchString(u)
}

// client is a registered OAuth2 client.
type client struct {
	digest  [32]byte
	scopes  []string
	revoked bool
}

// RegisterClient registers an OAuth2 client for the client-credentials
// grant and returns its secret: 256 random bits, base64url, shown once and
// stored only as a SHA-256 digest. Each component gets its own client, so
// revoking one ([Service.RevokeClient]) leaves the others running. scopes
// are the most the client may ask for (RFC 6749 §3.3 scope tokens).
func (s *Service) RegisterClient(id string, scopes []string) (secret string, err error) {
	if !clientIDRE.MatchString(id) {
		return "", fmt.Errorf("%w: client id must match %s", ErrInvalidClient, clientIDRE)
	}
	if id == s.cfg.UserClientID {
		return "", fmt.Errorf("%w: client id is the user client id", ErrInvalidClient)
	}
	if len(scopes) == 0 {
		return "", fmt.Errorf("%w: at least one scope is required", ErrInvalidClient)
	}
	for _, sc := range scopes {
		if !scopeRE.MatchString(sc) {
			return "", fmt.Errorf("%w: invalid scope token", ErrInvalidClient)
		}
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	secret = base64.RawURLEncoding.EncodeToString(raw)
	c := &client{digest: sha256.Sum256([]byte(secret)), scopes: slices.Compact(slices.Sorted(slices.Values(scopes)))}
	if s.isClosed() {
		return "", ErrClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.clients[id]; ok {
		return "", ErrClientExists
	}
	s.clients[id] = c
	return secret, nil
}

// RevokeClient stops a client from obtaining new tokens. Tokens already
// issued stay valid until they expire (at most AccessTokenTTL). The id
// cannot be registered again.
func (s *Service) RevokeClient(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok {
		return fmt.Errorf("%w: unknown client", ErrInvalidClient)
	}
	c.revoked = true
	return nil
}

// authenticateClient checks a client secret in constant time, comparing
// against a dummy digest when the id is unknown.
func (s *Service) authenticateClient(id, secret string) (*client, bool) {
	d := sha256.Sum256([]byte(secret))
	s.mu.Lock()
	c, ok := s.clients[id]
	var snapshot client
	if ok {
		snapshot = *c
	}
	s.mu.Unlock()
	match := subtle.ConstantTimeCompare(d[:], snapshot.digest[:]) == 1
	if !ok || !match || snapshot.revoked {
		return nil, false
	}
	return &snapshot, true
}
