package jwtverify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Defaults and bounds applied by [New].
const (
	DefaultLeeway          = 30 * time.Second
	MaxLeeway              = 5 * time.Minute
	DefaultMaxLifetime     = time.Hour
	DefaultOIDCMaxLifetime = 24 * time.Hour
	DefaultType            = "at+jwt"
	DefaultClassClaim      = "token_class"
	DefaultRefresh         = 5 * time.Minute
	DefaultMinRefresh      = time.Minute
	DefaultMaxRefresh      = time.Hour
	DefaultCooldown        = 30 * time.Second
	DefaultMaxStaleness    = time.Hour
	DefaultFetchTimeout    = 5 * time.Second
	DefaultMaxJWKSSize     = 512 << 10
	DefaultCacheSize       = 10000
	DefaultCacheTTL        = 5 * time.Minute
	maxUnknownKIDsRemember = 1024
)

// Config configures a [Verifier]. The zero value is not usable (there is no
// issuer to trust); every other field's zero value is the strict default
// named in its comment. [New] copies the Config; changing it afterwards has
// no effect.
type Config struct {
	// Issuers are the trusted token issuers; at least one. A token is
	// matched to the profile whose Issuer equals its "iss" exactly.
	Issuers []Issuer

	// MaxTokenSize caps the token length in bytes before any parsing.
	// Default DefaultMaxTokenSize (8 KiB).
	MaxTokenSize int

	// CookieName, when set, also accepts the token from this cookie when no
	// Authorization header is present. Off by default: cookies need CSRF
	// protection that bearer headers do not.
	CookieName string
	// AllowQuery accepts the token from the "access_token" query parameter
	// (RFC 6750 §2.3). Off by default: URLs end up in logs and Referer.
	AllowQuery bool
	// Realm is sent in the WWW-Authenticate challenge when not empty.
	Realm string

	// CacheSize enables the verified-token cache with room for this many
	// tokens. 0 disables it.
	CacheSize int
	// CacheTTL caps how long a verified token is remembered; an entry never
	// outlives the token's "exp". Default DefaultCacheTTL.
	CacheTTL time.Duration

	// HTTPClient fetches key sets. Default: a client with no proxy and
	// FetchTimeout per request. Its Transport decides TLS roots.
	HTTPClient *http.Client

	// Now is the clock. Default time.Now.
	Now func() time.Time

	// ErrorHandler writes the response for a refused request. The
	// WWW-Authenticate header (and Retry-After for [ErrUnavailable]) is
	// already set when it is called. Default [DefaultErrorHandler].
	ErrorHandler func(http.ResponseWriter, *http.Request, error)

	// Observe, when set, is called once per verification and once per
	// refused route requirement, for metrics and audit. It must be fast and
	// safe for concurrent use.
	Observe func(context.Context, Event)

	// OnRefresh, when set, is called after every key-set fetch attempt,
	// once the fetch is over: a verification started after the call sees
	// its result. It runs on the fetching goroutine; it must not block.
	OnRefresh func(RefreshEvent)
}

// Profile is the set of rules an issuer's access tokens follow.
type Profile uint8

const (
	// ProfileRFC9068 is the strict default: the JWT access token profile
	// of RFC 9068. "typ" must be "at+jwt" (also "application/at+jwt", any
	// case); "iat" is required and exp − iat at most [DefaultMaxLifetime];
	// the client is "client_id"; a token is a service token when "sub"
	// equals "client_id" (or its class claim says so).
	ProfileRFC9068 Profile = iota
	// ProfileOIDC accepts the access tokens common OpenID Connect providers
	// issue (Auth0, Keycloak, Microsoft Entra ID, Okta, Ory): "typ" may be
	// "at+jwt", "JWT" or absent; the client is "client_id", else "azp",
	// else "appid" (Entra v1); "iat" is optional and the lifetime (from
	// "iat", or from now when absent) is at most [DefaultOIDCMaxLifetime];
	// a token carrying "at_hash" or "c_hash" is an ID token and refused
	// ([ReasonIDToken]). A token is a service token when its class claim
	// says so, when "gty" is "client-credentials" (Auth0), when "idtyp"
	// is "app" (Entra), when it has "tid" and "oid" equal to "sub" and no
	// "scp" (an Entra app-only token), or when "sub" equals the client id;
	// otherwise it is a user token if it names a client. Providers whose
	// service tokens look otherwise (Keycloak service accounts) need
	// [Issuer.Classify]; see the examples.
	//
	// Without "typ: at+jwt" nothing in the token itself says it is an
	// access token, so the audience carries that weight: never list a
	// client id (the audience of that client's ID tokens) in
	// [Issuer.Audiences].
	ProfileOIDC
)

func (p Profile) String() string {
	switch p {
	case ProfileRFC9068:
		return "rfc9068"
	case ProfileOIDC:
		return "oidc"
	}
	return "Profile(" + strconv.Itoa(int(p)) + ")"
}

// Issuer is one trusted token issuer and what its tokens must look like.
// Exactly one of JWKSURL and Keys is set.
type Issuer struct {
	// Issuer is the exact "iss" value (no normalisation).
	Issuer string
	// Profile selects the token rules; the zero value is the strict
	// [ProfileRFC9068]. Fields set below override the profile's defaults.
	Profile Profile
	// JWKSURL is the issuer's JWK Set URL (https, or http to a loopback
	// address for tests and sidecars).
	JWKSURL string
	// Keys is a static JWK Set document (RFC 7517 §5), used instead of
	// JWKSURL: for example the contents of a jwks.json file. It is parsed
	// by [New] as a fetched set is, except that private members are
	// dropped rather than refused (the file is yours).
	Keys []byte

	// Algorithms allowed; asymmetric only. Default ES256, EdDSA, RS256,
	// PS256. The token's "alg" is checked against this list before any key
	// is looked up, and the key's type must match it.
	Algorithms []string
	// Audiences: the token's "aud" must contain at least one of these.
	Audiences []string
	// AllAudiences: the token's "aud" must contain every one of these.
	// At least one of Audiences and AllAudiences must be set.
	AllAudiences []string

	// MaxLifetime bounds exp − iat (exp − now when ProfileOIDC sees no
	// iat). Default DefaultMaxLifetime (1 h), or DefaultOIDCMaxLifetime
	// (24 h) for ProfileOIDC.
	MaxLifetime time.Duration
	// Leeway for clock skew on exp, nbf and iat. Default DefaultLeeway;
	// at most MaxLeeway. Set NoLeeway for none.
	Leeway   time.Duration
	NoLeeway bool

	// Type is the required JOSE "typ" (compared case-insensitively, with
	// or without "application/"). Default "at+jwt" (RFC 9068); with
	// ProfileOIDC and no Type, "at+jwt", "JWT" or none.
	Type string
	// SkipTypeCheck accepts any or no "typ".
	SkipTypeCheck bool

	// ClassClaim names the claim that states the token class, with value
	// "user" or "service". Default DefaultClassClaim ("token_class").
	// Without it, a token whose "sub" equals its "client_id" is a service
	// token (RFC 9068 §2.2) and one with a different "sub" is a user token;
	// a token with neither is refused.
	ClassClaim string
	// RequireClassClaim refuses a token that does not state ClassClaim
	// instead of inferring its class from "sub" and "client_id": set it
	// when the issuer states the class on every token it issues, so a
	// token minted without it (another flow of the same issuer, a user
	// whose subject equals a client's id) cannot be taken for a service's.
	// Classify, when set, decides instead.
	RequireClassClaim bool
	// Classify, when set, replaces the rules above. It sees verified claims
	// and returns ClassUser, ClassService, or ClassAny to refuse the token.
	Classify func(*Claims) Class

	// RolesClaim is the path of member names to the claim [Claims.Roles]
	// reads (a string or an array of strings): ["roles"] by default (RFC
	// 9068 §2.2.3.1, Entra ID), ["realm_access", "roles"] for Keycloak,
	// ["permissions"] or a namespaced claim such as
	// ["https://example.com/roles"] for Auth0. A missing claim means no
	// roles; a claim of another type refuses the token.
	RolesClaim []string

	// RefreshInterval is the key-set refresh period when the response has
	// no Cache-Control max-age. Default DefaultRefresh. A max-age is
	// honoured within [MinRefresh, MaxRefresh] (defaults 1 min, 1 h). The
	// period never exceeds MaxStaleness/2, so a failed refresh is retried
	// before the keys in use go stale.
	RefreshInterval time.Duration
	MinRefresh      time.Duration
	MaxRefresh      time.Duration
	// Cooldown is the least time between two fetches caused by unknown key
	// ids or failures. Default DefaultCooldown.
	Cooldown time.Duration
	// MaxStaleness is how long the last good key set is still used when
	// fetches fail. Default DefaultMaxStaleness.
	MaxStaleness time.Duration
	// FetchTimeout bounds one fetch. Default DefaultFetchTimeout.
	FetchTimeout time.Duration
	// MaxJWKSSize caps the key-set document size. Default 512 KiB.
	MaxJWKSSize int64
}

// ErrInvalidConfig wraps every configuration error returned by [New].
var ErrInvalidConfig = errors.New("jwtverify: invalid config")

// ErrConfig is the former name of [ErrInvalidConfig] (the same value).
//
// Deprecated: use ErrInvalidConfig.
var ErrConfig = ErrInvalidConfig

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
}

func (c Config) withDefaults() (Config, error) {
	if len(c.Issuers) == 0 {
		return c, configErr("no issuer")
	}
	if c.MaxTokenSize == 0 {
		c.MaxTokenSize = DefaultMaxTokenSize
	}
	if c.MaxTokenSize < 0 {
		return c, configErr("negative MaxTokenSize")
	}
	if c.CacheSize < 0 {
		return c, configErr("negative CacheSize")
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = DefaultCacheTTL
	}
	if c.CacheTTL < 0 {
		return c, configErr("negative CacheTTL")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if strings.ContainsAny(c.Realm, "\"\\\r\n") {
		return c, configErr("Realm contains a quote, backslash or newline")
	}
	if c.CookieName != "" && !validCookieName(c.CookieName) {
		return c, configErr("CookieName %q is not a valid cookie name", c.CookieName)
	}
	issuers := make([]Issuer, len(c.Issuers))
	seen := map[string]bool{}
	for i, is := range c.Issuers {
		d, err := is.withDefaults()
		if err != nil {
			return c, err
		}
		if seen[d.Issuer] {
			return c, configErr("issuer %q listed twice", d.Issuer)
		}
		seen[d.Issuer] = true
		issuers[i] = d
	}
	c.Issuers = issuers
	return c, nil
}

func validCookieName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return s != ""
}

func (is Issuer) withDefaults() (Issuer, error) {
	if is.Issuer == "" {
		return is, configErr("issuer with empty Issuer")
	}
	name := is.Issuer
	switch {
	case is.JWKSURL != "" && len(is.Keys) > 0:
		return is, configErr("issuer %q: both JWKSURL and Keys", name)
	case is.JWKSURL == "" && len(is.Keys) == 0:
		return is, configErr("issuer %q: neither JWKSURL nor Keys", name)
	case is.JWKSURL != "":
		u, err := url.Parse(is.JWKSURL)
		if err != nil || u.Host == "" {
			return is, configErr("issuer %q: JWKSURL is not an absolute URL", name)
		}
		if u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname())) {
			return is, configErr("issuer %q: JWKSURL must be https (http only to loopback)", name)
		}
	}
	if len(is.Algorithms) == 0 {
		is.Algorithms = defaultAlgs
	}
	for _, a := range is.Algorithms {
		if !supportedAlgs[a] {
			return is, configErr("issuer %q: algorithm %q is not an allowed asymmetric JWS algorithm", name, a)
		}
	}
	is.Algorithms = append([]string(nil), is.Algorithms...)
	if len(is.Audiences) == 0 && len(is.AllAudiences) == 0 {
		return is, configErr("issuer %q: no audience (set Audiences or AllAudiences)", name)
	}
	for _, a := range append(append([]string(nil), is.Audiences...), is.AllAudiences...) {
		if a == "" {
			return is, configErr("issuer %q: empty audience", name)
		}
	}
	is.Audiences = append([]string(nil), is.Audiences...)
	is.AllAudiences = append([]string(nil), is.AllAudiences...)
	switch is.Profile {
	case ProfileRFC9068, ProfileOIDC:
	default:
		return is, configErr("issuer %q: unknown %v", name, is.Profile)
	}
	if is.MaxLifetime == 0 {
		is.MaxLifetime = DefaultMaxLifetime
		if is.Profile == ProfileOIDC {
			is.MaxLifetime = DefaultOIDCMaxLifetime
		}
	}
	if is.MaxLifetime < 0 {
		return is, configErr("issuer %q: negative MaxLifetime", name)
	}
	switch {
	case is.NoLeeway:
		is.Leeway = 0
	case is.Leeway == 0:
		is.Leeway = DefaultLeeway
	case is.Leeway < 0 || is.Leeway > MaxLeeway:
		return is, configErr("issuer %q: Leeway must be within (0, %v]", name, MaxLeeway)
	}
	if is.Type == "" && is.Profile == ProfileRFC9068 {
		is.Type = DefaultType
	}
	is.Type = normType(is.Type)
	if len(is.RolesClaim) == 0 {
		is.RolesClaim = []string{"roles"}
	}
	for _, n := range is.RolesClaim {
		if n == "" {
			return is, configErr("issuer %q: empty member name in RolesClaim", name)
		}
	}
	is.RolesClaim = append([]string(nil), is.RolesClaim...)
	if is.ClassClaim == "" {
		is.ClassClaim = DefaultClassClaim
	}
	durs := []struct {
		p   *time.Duration
		def time.Duration
		n   string
	}{
		{&is.RefreshInterval, DefaultRefresh, "RefreshInterval"},
		{&is.MinRefresh, DefaultMinRefresh, "MinRefresh"},
		{&is.MaxRefresh, DefaultMaxRefresh, "MaxRefresh"},
		{&is.Cooldown, DefaultCooldown, "Cooldown"},
		{&is.MaxStaleness, DefaultMaxStaleness, "MaxStaleness"},
		{&is.FetchTimeout, DefaultFetchTimeout, "FetchTimeout"},
	}
	for _, d := range durs {
		if *d.p == 0 {
			*d.p = d.def
		}
		if *d.p < 0 {
			return is, configErr("issuer %q: negative %s", name, d.n)
		}
	}
	if is.MinRefresh > is.MaxRefresh {
		return is, configErr("issuer %q: MinRefresh above MaxRefresh", name)
	}
	if is.MaxStaleness < is.MinRefresh {
		return is, configErr("issuer %q: MaxStaleness below MinRefresh", name)
	}
	if is.MaxJWKSSize == 0 {
		is.MaxJWKSSize = DefaultMaxJWKSSize
	}
	if is.MaxJWKSSize < 0 {
		return is, configErr("issuer %q: negative MaxJWKSSize", name)
	}
	return is, nil
}

func isLoopback(host string) bool {
	return host == "localhost" || host == "::1" || strings.HasPrefix(host, "127.")
}

// normType lower-cases a "typ" and drops an "application/" prefix
// (RFC 7515 §4.1.9).
func normType(t string) string {
	t = strings.ToLower(t)
	return strings.TrimPrefix(t, "application/")
}
