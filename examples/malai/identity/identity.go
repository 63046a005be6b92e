package identity

import (
	"context"
	"crypto/rand"
	"encoding/base32"
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
	"testing"
	"time"
	"unicode/utf8"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/examples/malai/identity/internal/breach"
	"github.com/malai-sec/malai/examples/malai/identity/internal/lockout"
	"github.com/malai-sec/malai/examples/malai/identity/internal/password"
	"github.com/malai-sec/malai/examples/malai/identity/internal/signkeys"
	"github.com/malai-sec/malai/examples/malai/identity/store"
	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/keyring"
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
	// UserSubjectPrefix starts the "sub" of every user token; the rest is
	// the account's opaque id, never its username. Client ids cannot
	// contain ':', so a user subject never equals a service subject (the
	// client id): the disjoint namespaces RFC 9068 §5 asks for.
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
	// ClaimSession is the refresh session a user token belongs to.
	ClaimSession = "sid"
	// ClaimRoles lists the account's roles (teller, auditor), when any.
	ClaimRoles = "roles"
	// ClassUser marks a token that acts for a person.
	ClassUser = "user"
	// ClassService marks a token that acts for a component.
	ClassService = "service"
	// JWKSPath is where the public keys are published.
	JWKSPath = "/.well-known/jwks.json"
	// MetadataPath is the RFC 8414 authorization server metadata.
	MetadataPath = "/.well-known/oauth-authorization-server"
	// TokenPath is the OAuth2 token endpoint (internal listener only).
	TokenPath = "/oauth2/token"
	// ClientsPath is where a component registers its public key (internal
	// listener only, by the component's own certificate).
	ClientsPath = "/internal/v1/clients"
	// JWKSMaxAge is the Cache-Control max-age of the JWKS and metadata.
	JWKSMaxAge = 5 * time.Minute
	// RefreshCookie names the cookie that carries the refresh token. The
	// __Secure- prefix makes browsers refuse it without the Secure flag.
	RefreshCookie = "__Secure-malai-refresh"
	// RefreshPath is the only path the refresh cookie is sent to.
	RefreshPath = "/v1/refresh"
	// SignOutPath signs out with POST (DELETE RefreshPath does the same).
	SignOutPath = RefreshPath + "/revoke"
	// DeviceCookie names the signed cookie that marks a device that has
	// completed a sign-in; it is sent only to SignInPath.
	DeviceCookie = "__Secure-malai-device"
	// DeviceCookieFormat is the whole shape of a device cookie's value
	// (RE2): a version, a 128-bit random device id, the issue time and a
	// 128-bit HMAC, base64url. The gateway's WAF leaves a value of
	// exactly this shape uninspected (random text trips the SQL rules now
	// and then); identity checks the MAC before using it.
	DeviceCookieFormat = `v1\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{11}\.[A-Za-z0-9_-]{22}`
	// RefreshCookieFormat is the whole shape of a refresh token: 256
	// random bits, base64url, only ever hashed and looked up.
	RefreshCookieFormat = `[A-Za-z0-9_-]{43}`
	// SignInPath is the sign-in route.
	SignInPath = "/v1/sessions"
	// CSRFHeader must accompany refresh and sign-out with the value
	// "1": a cross-site form cannot set it, and a cross-site script
	// cannot send it without a CORS preflight nobody answers.
	CSRFHeader = "X-Malai-CSRF"
)

// Defaults applied by [New] to zero Config fields.
const (
	DefaultAccessTokenTTL      = 5 * time.Minute
	DefaultRefreshTTL          = 8 * time.Hour
	DefaultSessionMaxAge       = 24 * time.Hour
	DefaultKeyRotationInterval = 24 * time.Hour
	DefaultClientKeyLifetime   = 24 * time.Hour
	DefaultUserClientID        = "malai-web"
	DefaultTOTPIssuer          = "Malai"
	// MaxAccessTokenTTL keeps the page's promise: lifetimes in minutes.
	MaxAccessTokenTTL = 15 * time.Minute
	// ReauthMaxAge is how long a pending TOTP enrolment may wait for its
	// confirmation, and how recent the sign-in behind a token must be for
	// an account-security change (on top of the password it must carry).
	ReauthMaxAge = 15 * time.Minute
	// MFATokenTTL is the life of the one-use token that carries a right
	// password to the second-factor step of a two-step sign-in.
	MFATokenTTL = 5 * time.Minute
	// DeviceCookieTTL is how long a device stays known without a sign-in.
	DeviceCookieTTL = 365 * 24 * time.Hour
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
	ErrThrottled             = errors.New("identity: too many failures; retry later")
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
	ErrReauthenticate        = errors.New("identity: re-authentication failed")
	ErrMFAAlreadyEnrolled    = errors.New("identity: second factor already enrolled")
	ErrMFANotEnrolled        = errors.New("identity: no second factor enrolled")
	ErrMFANotPending         = errors.New("identity: no pending second-factor enrolment")
	ErrInvalidCode           = errors.New("identity: invalid one-time code")
	ErrInvalidMFAToken       = errors.New("identity: invalid or used mfa_token")
	ErrInvalidRefresh        = errors.New("identity: invalid refresh token")
	ErrRefreshReused         = errors.New("identity: refresh token reused; session revoked")
	ErrCSRF                  = errors.New("identity: cross-site request refused")
	ErrClientIP              = errors.New("identity: client address unavailable")
	ErrNotFound              = errors.New("identity: not found")
	ErrMethodNotAllowed      = errors.New("identity: method not allowed")
	ErrForbidden             = errors.New("identity: caller not allowed")
	ErrUnavailable           = errors.New("identity: dependency unavailable")
	ErrClosed                = errors.New("identity: service closed")
	ErrInvalidClient         = errors.New("identity: invalid client")
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

// ThrottleError says how long to wait. It wraps [ErrThrottled].
type ThrottleError struct {
	RetryAfter time.Duration
	Reasons    []string
}

func (e *ThrottleError) Error() string {
	return fmt.Sprintf("%v (retry after %v: %s)", ErrThrottled, e.RetryAfter, strings.Join(e.Reasons, ", "))
}

func (e *ThrottleError) Unwrap() error { return ErrThrottled }

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

// Lockout holds the lockout thresholds; the zero value is the default
// policy (see the package documentation).
type Lockout = lockout.Config

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

// noCorpus knows no compromised password: only for Faults.NoBreachCorpus.
type noCorpus struct{}

func (noCorpus) Breached(context.Context, string) (bool, error) { return false, nil }

// Client is a component allowed to obtain service tokens: its id (the
// component's name, which its certificate carries) and the most it may
// ask for.
type Client struct {
	ID     string
	Scopes []string
}

// Faults switch single defences off so that an evidence check can show
// it fails without them. [New] refuses them outside tests.
type Faults struct {
	// NoReauth: account-security changes accept a bearer token alone.
	NoReauth bool
	// HardLockout: known devices get no exemption, and an account under
	// attack is refused outright (the lockout an attacker can aim).
	HardLockout bool
	// NoSprayDetection: per-password counts are not kept.
	NoSprayDetection bool
	// NoAssertionReplayCheck: a client assertion may be used again.
	NoAssertionReplayCheck bool
	// ServiceSubjectNotClient: a client-credentials token's sub is not
	// its client_id ("client:<client_id>"; class and client_id unchanged).
	ServiceSubjectNotClient bool
	// NoTokenCheck: identity's own bearer-token verification is off (the
	// claims of any well-formed token are believed); other layers keep
	// theirs.
	NoTokenCheck bool
	// ShortPasswords: the password policy's minimum is 8 characters, not
	// the page's 12 (composition rules unchanged).
	ShortPasswords bool
	// NoSymbolRequired: the password policy does not require a symbol
	// (length and the other composition rules unchanged).
	NoSymbolRequired bool
	// NoBreachCorpus: the compromised-password corpus is never consulted,
	// at sign-up, password change or sign-in.
	NoBreachCorpus bool
	// NoRiskEngine: sign-in ignores the account-under-attack signal
	// (failures for the account from unknown devices and many networks):
	// it neither throttles the account nor blocks a right password from a
	// new network. Pair, network, stuffing, spraying and device limits
	// are unchanged.
	NoRiskEngine bool
	// NoTokenClass: user tokens state no token_class; every verifier of
	// the system requires it and refuses them.
	NoTokenClass bool
}

// Config configures a [Service]. Issuer, Store, Ring and Audit are
// required; every other field has a strict default.
type Config struct {
	// Issuer is the "iss" of every token and the issuer identifier of the
	// metadata: the system's stable public URL (the gateway's), an
	// absolute https URL without query or fragment. Required.
	Issuer string
	// TokenEndpoint identifies the token endpoint: the only "aud" a
	// client assertion may carry. Default Issuer + "/oauth2/token" (the
	// endpoint itself is reached on identity's internal listener).
	TokenEndpoint string
	// Store keeps accounts, sessions, risk counts, keys and client keys.
	// Required.
	Store store.Store
	// Ring seals TOTP secrets, signing keys and the service's own MAC
	// keys in the store. Required.
	Ring *keyring.Ring
	// Audit receives an event for every account-security change and every
	// lockout decision. Required.
	Audit *auditlog.Log
	// Verifier checks identity's own user tokens on its account routes.
	// Default: a jwtverify.Verifier with the system's profile (ES256,
	// typ at+jwt, the issuer, audience AudienceUser, at most
	// MaxAccessTokenTTL) reading the key set in process.
	Verifier *jwtverify.Verifier
	// Clients are the components that may register keys and obtain
	// service tokens. Default none.
	Clients []Client
	// ClientKeyLifetime is how long a registered component key is
	// accepted. Default 24 hours.
	ClientKeyLifetime time.Duration
	// PeerComponent names the component whose verified client
	// certificate made the request ("" for none). Key registration, the
	// token endpoint (the assertion's client must be the calling
	// component) and revocation require it. Default: always "", so no
	// component can obtain a token until it is set.
	PeerComponent func(*http.Request) string
	// OperatorPeers are the components (by PeerComponent) that may revoke
	// component keys over POST /internal/v1/clients/{id}/revoke. Default
	// ["operator"].
	OperatorPeers []string
	// AllowedOrigins are the browser origins refresh and sign-out accept.
	// Default: the origin of Issuer.
	AllowedOrigins []string
	// OriginExemptPeers are components (by PeerComponent) whose refresh
	// and sign-out need no Origin: server-side clients such as a
	// backend-for-frontend, which defend their own browser pages against
	// cross-site requests. They still send CSRFHeader. Default none.
	OriginExemptPeers []string
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// ClientIP resolves the client address of a request. Default: the host
	// of RemoteAddr (right when nothing proxies).
	ClientIP func(*http.Request) (netip.Addr, error)
	// PasswordPolicy selects the sign-up rule. Default PolicyPage.
	PasswordPolicy PasswordPolicy
	// Breach checks passwords at sign-up (refused) and at sign-in (the
	// account must reset its password). Default OfflineCorpus().
	Breach BreachChecker
	// Argon2 sets the password-hashing cost. Default OWASP's baseline.
	// Lowering it is a loosening meant for tests.
	Argon2 Argon2Params
	// MaxConcurrentHashes bounds argon2id computations in flight; excess
	// requests wait. Default 2×GOMAXPROCS.
	MaxConcurrentHashes int
	// AccessTokenTTL is the access-token lifetime. Default 5 minutes; at
	// most MaxAccessTokenTTL.
	AccessTokenTTL time.Duration
	// RefreshTTL is how long an unused refresh token stays valid. Default
	// 8 hours.
	RefreshTTL time.Duration
	// SessionMaxAge bounds a refresh session whatever its activity.
	// Default 24 hours.
	SessionMaxAge time.Duration
	// KeyRotationInterval is how long a signing key signs. Default 24
	// hours; it must exceed AccessTokenTTL + JWKSMaxAge.
	KeyRotationInterval time.Duration
	// Lockout tunes the sign-in throttles. Default: see [Lockout].
	Lockout Lockout
	// UserClientID is the client_id of user tokens. Default "malai-web".
	UserClientID string
	// UserScopes are the scopes of user tokens. Default
	// ["ledger:read", "ledger:write"].
	UserScopes []string
	// TOTPIssuer labels enrolments in authenticator apps. Default "Malai".
	TOTPIssuer string
	// Logger receives security events. Secrets never reach it. Default
	// slog.Default().
	Logger *slog.Logger
	// ErrorHandler writes error responses for the /v1 routes. Default:
	// problem+json as listed in docs/problems.md. The token endpoint
	// always answers in RFC 6749 §5.2 form.
	ErrorHandler func(http.ResponseWriter, *http.Request, error)
	// Faults are for evidence tests only; New refuses them elsewhere.
	Faults Faults
}

// Service is the identity domain. It is safe for concurrent use; create
// it with [New].
type Service struct {
	cfg       Config
	st        store.Store
	ring      *keyring.Ring
	lock      lockout.Config
	policy    password.Policy
	argon     password.Params
	keys      *signkeys.Keys
	verifier  *jwtverify.Verifier
	ownVerify bool
	hashSem   chan struct{}
	hashes    atomic.Int64 // argon2id computations run (tests, metrics)
	dummy     string       // a hash compared against when the user is unknown
	handler   http.Handler
	log       *slog.Logger
	riskKey   []byte // keys risk counters and password fingerprints
	deviceKey []byte // signs device cookies and mfa tokens
	clients   map[string][]string
	origins   []string
	audited   auditDedup

	closed atomic.Bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

var (
	usernameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{2,63}$`)
	clientIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	userIDRE   = regexp.MustCompile(`^[a-z2-7]{26}$`)
	// scopeRE is RFC 6749 §3.3 scope-token.
	scopeRE = regexp.MustCompile(`^[\x21\x23-\x5B\x5D-\x7E]+$`)
)

// New validates cfg, loads (or on first start creates) the signing keys
// and the service's MAC keys from the store, and returns a running
// service. It starts a background loop that rotates keys on schedule and
// prunes expired records; [Service.Close] stops it.
func New(cfg Config) (*Service, error) {
	c := cfg
	c.UserScopes = slices.Clone(cfg.UserScopes)
	c.Clients = slices.Clone(cfg.Clients)
	c.AllowedOrigins = slices.Clone(cfg.AllowedOrigins)
	c.OriginExemptPeers = slices.Clone(cfg.OriginExemptPeers)
	c.OperatorPeers = slices.Clone(cfg.OperatorPeers)
	if len(c.OperatorPeers) == 0 {
		c.OperatorPeers = []string{"operator"}
	}
	u, err := url.Parse(c.Issuer)
	if c.Issuer == "" || err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("%w: Issuer must be an absolute https URL without query or fragment", ErrInvalidConfig)
	}
	if c.Store == nil || c.Ring == nil || c.Audit == nil {
		return nil, fmt.Errorf("%w: Store, Ring and Audit are required", ErrInvalidConfig)
	}
	if c.Faults != (Faults{}) && !testing.Testing() {
		return nil, fmt.Errorf("%w: Faults are for tests only", ErrInvalidConfig)
	}
	if c.TokenEndpoint == "" {
		c.TokenEndpoint = strings.TrimSuffix(c.Issuer, "/") + TokenPath
	}
	if te, err := url.Parse(c.TokenEndpoint); err != nil || te.Scheme != "https" || te.Host == "" || te.RawQuery != "" || te.Fragment != "" {
		return nil, fmt.Errorf("%w: TokenEndpoint must be an absolute https URL", ErrInvalidConfig)
	}
	if len(c.AllowedOrigins) == 0 {
		c.AllowedOrigins = []string{u.Scheme + "://" + u.Host}
	}
	for _, o := range c.AllowedOrigins {
		ou, err := url.Parse(o)
		if err != nil || ou.Scheme == "" || ou.Host == "" || ou.Path != "" || ou.RawQuery != "" {
			return nil, fmt.Errorf("%w: AllowedOrigins must be scheme://host[:port]", ErrInvalidConfig)
		}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ClientIP == nil {
		c.ClientIP = RemoteAddrIP
	}
	if c.PeerComponent == nil {
		c.PeerComponent = func(*http.Request) string { return "" }
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
	if c.Faults.NoBreachCorpus {
		c.Breach = noCorpus{}
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
		{"ClientKeyLifetime", &c.ClientKeyLifetime, DefaultClientKeyLifetime},
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
	clients := map[string][]string{}
	for _, cl := range c.Clients {
		if !clientIDRE.MatchString(cl.ID) || cl.ID == c.UserClientID {
			return nil, fmt.Errorf("%w: client id %q must match %s and differ from UserClientID", ErrInvalidConfig, cl.ID, clientIDRE)
		}
		if _, dup := clients[cl.ID]; dup || len(cl.Scopes) == 0 {
			return nil, fmt.Errorf("%w: client %q listed twice or without scopes", ErrInvalidConfig, cl.ID)
		}
		for _, sc := range cl.Scopes {
			if !scopeRE.MatchString(sc) {
				return nil, fmt.Errorf("%w: client %q: invalid scope token %q", ErrInvalidConfig, cl.ID, sc)
			}
		}
		clients[cl.ID] = slices.Compact(slices.Sorted(slices.Values(cl.Scopes)))
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
	if c.Faults != (Faults{}) {
		c.Logger.Warn("identity: FAULTS ENABLED — defences are switched off for an evidence test", "faults", fmt.Sprintf("%+v", c.Faults))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := &Service{
		cfg: c, st: c.Store, ring: c.Ring, lock: c.Lockout.WithDefaults(), policy: policy, argon: argon,
		hashSem: make(chan struct{}, c.MaxConcurrentHashes), log: c.Logger, clients: clients,
		origins: c.AllowedOrigins, stop: make(chan struct{}),
	}
	if s.riskKey, err = s.macKey(ctx, "risk-key"); err != nil {
		return nil, err
	}
	if s.deviceKey, err = s.macKey(ctx, "device-key"); err != nil {
		return nil, err
	}
	s.keys, err = signkeys.New(ctx, signkeys.Config{
		Store: c.Store, Ring: c.Ring, Interval: c.KeyRotationInterval,
		// A retired key stays published until every token it signed has
		// expired, with the verifiers' leeway and one JWKS cache period.
		Overlap: c.AccessTokenTTL + jwtverify.DefaultLeeway + JWKSMaxAge,
		Now:     c.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("identity: signing keys: %w", err)
	}
	dummyPW := make([]byte, 32)
	_, _ = rand.Read(dummyPW)
	if s.dummy, err = password.Hash(base64.RawURLEncoding.EncodeToString(dummyPW), argon); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if c.Verifier != nil {
		s.verifier = c.Verifier
	} else {
		if s.verifier, err = s.inProcessVerifier(); err != nil {
			s.keys.Close()
			return nil, err
		}
		s.ownVerify = true
	}
	s.handler = s.routes()
	s.wg.Add(1)
	go s.housekeeping()
	return s, nil
}

// macKey returns the service's MAC key of that name: created once, sealed
// in the store, the same for every replica.
func (s *Service) macKey(ctx context.Context, name string) ([]byte, error) {
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, err
	}
	aad := []byte("malai.identity.secret:" + name)
	sealed, err := s.ring.Seal(nil, fresh, aad)
	if err != nil {
		return nil, err
	}
	stored, err := s.st.Secret(ctx, name, sealed)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", name, err)
	}
	key, _, err := s.ring.Open(nil, stored, aad)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: cannot open it with this key ring: %w", name, err)
	}
	return key, nil
}

// housekeeping rotates keys when due and forgets expired records.
func (s *Service) housekeeping() {
	defer s.wg.Done()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := s.keys.Refresh(ctx); err != nil {
			s.log.Error("identity: signing-key refresh failed", "error", err.Error())
		}
		now := s.cfg.Now()
		if err := s.st.Prune(ctx, store.Prune{
			EventsBefore: now.Add(-max(s.lock.Window, s.lock.CodeWindow)),
			Now:          now, Idle: s.cfg.RefreshTTL, MaxAge: s.cfg.SessionMaxAge,
		}); err != nil {
			s.log.Error("identity: pruning failed", "error", err.Error())
		}
		cancel()
	}
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

// Handler returns the service's routes (see [Routes] for the table).
func (s *Service) Handler() http.Handler { return s.handler }

// Verifier returns the verifier identity checks its own user tokens with.
func (s *Service) Verifier() *jwtverify.Verifier { return s.verifier }

// Close stops the background loop and drops the private signing key;
// requests and calls made afterwards fail with [ErrClosed]. It does not
// close the store or the audit log, which the caller owns. It is
// idempotent.
func (s *Service) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.stop)
	s.wg.Wait()
	s.keys.Close()
	if s.ownVerify {
		return s.verifier.Close()
	}
	return nil
}

func (s *Service) isClosed() bool { return s.closed.Load() }

// RotateKey rotates the signing keys now. A normal rotation promotes the
// pre-published next key and keeps the current one published until its
// tokens have expired; an emergency rotation (a leaked key) replaces every
// key, so tokens signed before it stop verifying once verifiers refresh.
func (s *Service) RotateKey(ctx context.Context, emergency bool) error {
	if s.isClosed() {
		return ErrClosed
	}
	if err := s.keys.Rotate(ctx, emergency); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	s.auditEvent(ctx, "identity.keys.rotated", map[string]any{"emergency": emergency, "published": s.keys.Published()})
	return nil
}

// RotateKeyOnce answers a numbered rotation request, such as the key
// file's count of "malai rotate-keys" runs: the first call (from any
// replica sharing the store) with a request above the last one answered
// rotates as RotateKey(ctx, false) does, and records the request with the
// keys, so every later call with it, here or after a restart, does
// nothing. Tokens signed before keep verifying until they expire: the
// previous key stays in the JWKS. It reports whether this call rotated.
func (s *Service) RotateKeyOnce(ctx context.Context, request uint64) (bool, error) {
	if s.isClosed() {
		return false, ErrClosed
	}
	rotated, err := s.keys.RotateOnce(ctx, request)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if rotated {
		s.auditEvent(ctx, AuditKeysRotated, map[string]any{"emergency": false, "request": request, "published": s.keys.Published()})
	}
	return rotated, nil
}

// JWKS returns the published JSON Web Key Set document, the same bytes
// GET /.well-known/jwks.json serves.
func (s *Service) JWKS() []byte { return slices.Clone(s.keys.JWKS()) }

var userIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newUserID returns 128 random bits as 26 lower-case base32 characters.
func newUserID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return userIDEncoding.EncodeToString(b[:]), nil
}

// UserSubject returns the "sub" of a user's tokens for an account id.
func UserSubject(id string) string { return UserSubjectPrefix + id }

// UserID returns the account id in a user token's "sub", and false when
// sub is not a user subject.
func UserID(sub string) (string, bool) {
	id, ok := strings.CutPrefix(sub, UserSubjectPrefix)
	return id, ok && userIDRE.MatchString(id)
}

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

// newPasswordHash normalises pw, applies the policy and the breach check,
// and hashes it.
func (s *Service) newPasswordHash(ctx context.Context, username, pw string) (string, error) {
	pw = password.Normalize(pw)
	if v := s.policyViolations(pw, username); len(v) > 0 {
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

// policyViolations are the rules of the configured policy pw (already
// normalised) breaks, less those a test's Faults weaken.
func (s *Service) policyViolations(pw, username string) []password.Violation {
	v := s.policy.Check(pw, username)
	f := s.cfg.Faults
	if !f.ShortPasswords && !f.NoSymbolRequired {
		return v
	}
	return slices.DeleteFunc(v, func(x password.Violation) bool {
		return f.ShortPasswords && x == password.TooShort && utf8.RuneCountInString(pw) >= 8 ||
			f.NoSymbolRequired && x == password.MissingSymbol
	})
}

// verifyPassword checks pw against hash (the dummy hash when hash is ""),
// always paying one argon2id computation. stale reports parameters older
// than the configured ones.
func (s *Service) verifyPassword(ctx context.Context, pw, hash string) (ok, stale bool, err error) {
	if hash == "" {
		hash = s.dummy
	}
	if err := s.acquireHash(ctx); err != nil {
		return false, false, err
	}
	defer s.releaseHash()
	ok, stale, err = password.Verify(password.Normalize(pw), hash, s.argon)
	if err == nil {
		s.hashes.Add(1)
	}
	return ok, stale, err
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

// storeErr maps a store failure to ErrUnavailable (503), keeping the
// cause for logs.
func storeErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, store.ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("%w: store: %w", ErrUnavailable, err)
}

// durable returns a context for a write that must not be abandoned half
// way when the client goes away.
func durable(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}
