package devissuer

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Shape is the form of the access tokens an [Issuer] mints, after a real
// identity provider's.
type Shape uint8

const (
	// RFC9068 is the JWT access token profile Malai's strict default
	// expects: typ "at+jwt", "client_id", a service token's "sub" equal to
	// its "client_id", five-minute lifetime.
	RFC9068 Shape = iota
	// Auth0 tokens: typ "JWT", RS256, "azp" names the client, a
	// machine-to-machine token has "gty": "client-credentials" and "sub"
	// "<client>@clients", roles in "permissions" (Auth0's RBAC claim),
	// 24-hour lifetime.
	Auth0
	// Keycloak tokens: typ "JWT", RS256, "azp", "typ": "Bearer", roles in
	// "realm_access": {"roles": [...]}, a service-account token carries
	// "client_id" and "preferred_username": "service-account-<client>",
	// five-minute lifetime.
	Keycloak
	// EntraID tokens (Microsoft Entra ID, v2.0): typ "JWT", RS256, "azp",
	// "ver": "2.0", "tid", "oid", delegated scopes in "scp", app roles in
	// "roles"; an app-only token has no "scp" and its "sub" equals its
	// "oid"; one-hour lifetime.
	EntraID
)

func (s Shape) String() string {
	switch s {
	case RFC9068:
		return "rfc9068"
	case Auth0:
		return "auth0"
	case Keycloak:
		return "keycloak"
	case EntraID:
		return "entra-id"
	}
	return fmt.Sprintf("Shape(%d)", uint8(s))
}

// Config configures [New].
type Config struct {
	// Issuer is the "iss" of every token, for example
	// "https://tenant.example.auth0.com/". Required.
	Issuer string
	// Shape is the token form. Default RFC9068.
	Shape Shape
	// Algorithm of the signing key. Default ES256 for RFC9068 and RS256
	// for the provider shapes, as those providers sign.
	Algorithm string
	// KeyID of the signing key. Default "dev-1".
	KeyID string
	// Lifetime of minted tokens. Default: the provider's usual lifetime
	// (see [Shape]).
	Lifetime time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Token says what to mint.
type Token struct {
	// Subject is the user of a user token (required for one). A service
	// token's subject follows the shape's rule from ClientID.
	Subject string
	// ClientID is the client the token was issued to. Default "web" for a
	// user token; required for a service token.
	ClientID string
	// Audience: one or more; required.
	Audience []string
	// Scopes granted, space-joined into "scope" (or "scp").
	Scopes []string
	// Roles, in the shape's roles claim.
	Roles []string
	// Service marks a client-credentials (machine-to-machine) token.
	Service bool
	// Claims are added last and override the shape's claims, for tokens
	// a test wants subtly wrong.
	Claims map[string]any
}

// Issuer mints tokens and serves its JWK Set. It is safe for concurrent
// use. It is a development tool: its keys live in memory and it signs
// whatever it is asked to; never let a production verifier trust it.
type Issuer struct {
	cfg Config

	mu   sync.Mutex
	key  *Key   // signs
	keys []*Key // published, newest last
	jwks []byte
}

// ErrInvalidConfig wraps the configuration errors of [New] and the
// errors of [Issuer.Mint] about an incomplete [Token].
var ErrInvalidConfig = errors.New("devissuer: invalid config")

// DefaultKeyID is the key id of a new Issuer's key.
const DefaultKeyID = "dev-1"

// New generates a signing key and returns the Issuer.
func New(cfg Config) (*Issuer, error) {
	if cfg.Issuer == "" {
		return nil, fmt.Errorf("%w: Issuer is required", ErrInvalidConfig)
	}
	if cfg.Shape > EntraID {
		return nil, fmt.Errorf("%w: unknown %v", ErrInvalidConfig, cfg.Shape)
	}
	if cfg.Algorithm == "" {
		cfg.Algorithm = "RS256"
		if cfg.Shape == RFC9068 {
			cfg.Algorithm = "ES256"
		}
	}
	if cfg.KeyID == "" {
		cfg.KeyID = DefaultKeyID
	}
	if cfg.Lifetime == 0 {
		cfg.Lifetime = map[Shape]time.Duration{RFC9068: 5 * time.Minute, Auth0: 24 * time.Hour,
			Keycloak: 5 * time.Minute, EntraID: time.Hour}[cfg.Shape]
	}
	if cfg.Lifetime < 0 {
		return nil, fmt.Errorf("%w: negative Lifetime", ErrInvalidConfig)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	k, err := NewKey(cfg.Algorithm, cfg.KeyID)
	if err != nil {
		return nil, err
	}
	i := &Issuer{cfg: cfg}
	if err := i.install(k); err != nil {
		return nil, err
	}
	return i, nil
}

func (i *Issuer) install(k *Key) error {
	keys := append(append([]*Key(nil), i.keys...), k)
	doc, err := JWKS(keys...)
	if err != nil {
		return err
	}
	i.key, i.keys, i.jwks = k, keys, doc
	return nil
}

// Key returns the key that signs now.
func (i *Issuer) Key() *Key {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.key
}

// Rotate makes k the signing key. The previous keys stay published, so
// tokens they signed still verify, until [Issuer.Retire].
func (i *Issuer) Rotate(k *Key) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, old := range i.keys {
		if old.KID == k.KID {
			return fmt.Errorf("devissuer: key id %q already published", k.KID)
		}
	}
	return i.install(k)
}

// Retire stops publishing the key with id kid (not the signing key).
func (i *Issuer) Retire(kid string) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if kid == i.key.KID {
		return errors.New("devissuer: cannot retire the signing key")
	}
	var keep []*Key
	for _, k := range i.keys {
		if k.KID != kid {
			keep = append(keep, k)
		}
	}
	doc, err := JWKS(keep...)
	if err != nil {
		return err
	}
	i.keys, i.jwks = keep, doc
	return nil
}

// JWKS returns the published JWK Set document, for jwtverify.Issuer.Keys.
func (i *Issuer) JWKS() []byte {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]byte(nil), i.jwks...)
}

// ServeHTTP answers GET and HEAD with the JWK Set (Cache-Control
// max-age=300), whatever the path: mount it where the verifier's JWKSURL
// points.
func (i *Issuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	doc := i.JWKS()
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "max-age=300")
	if r.Method == http.MethodGet {
		_, _ = w.Write(doc)
	}
}

// Mint signs the token t describes.
func (i *Issuer) Mint(t Token) (string, error) {
	claims, err := i.Claims(t)
	if err != nil {
		return "", err
	}
	k := i.Key()
	return k.Sign(k.Header(i.typ()), claims)
}

// typ is the JOSE "typ" of the shape's access tokens.
func (i *Issuer) typ() string {
	if i.cfg.Shape == RFC9068 {
		return "at+jwt"
	}
	return "JWT"
}

// Claims returns the claims [Issuer.Mint] would sign for t, for tests that
// change one before signing with [Key.Sign].
func (i *Issuer) Claims(t Token) (map[string]any, error) {
	if len(t.Audience) == 0 {
		return nil, fmt.Errorf("%w: Token.Audience is required", ErrInvalidConfig)
	}
	if t.Service && t.ClientID == "" {
		return nil, fmt.Errorf("%w: a service Token needs a ClientID", ErrInvalidConfig)
	}
	if !t.Service && t.Subject == "" {
		return nil, fmt.Errorf("%w: a user Token needs a Subject", ErrInvalidConfig)
	}
	if t.ClientID == "" {
		t.ClientID = "web"
	}
	now := i.cfg.Now()
	c := map[string]any{
		"iss": i.cfg.Issuer,
		"iat": now.Unix(),
		"exp": now.Add(i.cfg.Lifetime).Unix(),
		"jti": randomID(),
	}
	if len(t.Audience) == 1 {
		c["aud"] = t.Audience[0]
	} else {
		c["aud"] = append([]string(nil), t.Audience...)
	}
	scope := strings.Join(t.Scopes, " ")
	switch i.cfg.Shape {
	case RFC9068:
		c["client_id"] = t.ClientID
		c["sub"] = t.Subject
		if t.Service {
			c["sub"] = t.ClientID
		}
		if scope != "" {
			c["scope"] = scope
		}
		if len(t.Roles) > 0 {
			c["roles"] = t.Roles
		}
	case Auth0:
		c["azp"] = t.ClientID
		c["sub"] = t.Subject
		if t.Service {
			c["sub"] = t.ClientID + "@clients"
			c["gty"] = "client-credentials"
		}
		if scope != "" {
			c["scope"] = scope
		}
		if len(t.Roles) > 0 {
			c["permissions"] = t.Roles
		}
	case Keycloak:
		c["typ"] = "Bearer"
		c["azp"] = t.ClientID
		if t.Service {
			c["sub"] = uuidOf("service-account:" + t.ClientID)
			c["client_id"] = t.ClientID
			c["preferred_username"] = "service-account-" + strings.ToLower(t.ClientID)
		} else {
			c["sub"] = t.Subject
			c["sid"] = randomID()
			c["preferred_username"] = t.Subject
		}
		if scope != "" {
			c["scope"] = scope
		}
		c["realm_access"] = map[string]any{"roles": append([]string{}, t.Roles...)}
	case EntraID:
		c["ver"] = "2.0"
		c["azp"] = t.ClientID
		c["tid"] = tenantOf(i.cfg.Issuer)
		c["nbf"] = now.Unix()
		if t.Service {
			oid := uuidOf("app:" + t.ClientID)
			c["sub"], c["oid"] = oid, oid
		} else {
			c["sub"] = t.Subject
			c["oid"] = uuidOf("user:" + t.Subject)
			if scope != "" {
				c["scp"] = scope
			}
		}
		if len(t.Roles) > 0 {
			c["roles"] = t.Roles
		}
	}
	for k, v := range t.Claims {
		c[k] = v
	}
	return c, nil
}

// tenantOf returns the tenant id of an Entra ID issuer URL
// (https://login.microsoftonline.com/<tid>/v2.0), or a fixed development
// tenant.
func tenantOf(iss string) string {
	if u, err := url.Parse(iss); err == nil {
		if parts := strings.Split(strings.Trim(u.Path, "/"), "/"); len(parts) > 0 && len(parts[0]) == 36 {
			return parts[0]
		}
	}
	return "00000000-0000-4000-8000-000000000000"
}

// uuidOf derives a stable UUID-shaped identifier from s.
func uuidOf(s string) string {
	h := sha256.Sum256([]byte(s))
	x := hex.EncodeToString(h[:16])
	return x[:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+).
	return hex.EncodeToString(b[:])
}
