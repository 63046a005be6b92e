package jwtverify

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// Class is a token's class: a token acting for a user, or a service acting
// for itself (client credentials).
type Class uint8

const (
	// ClassAny in a [Requirement] accepts both classes. It is never the
	// class of a verified token.
	ClassAny Class = iota
	// ClassUser: a token issued to a client acting for a user.
	ClassUser
	// ClassService: a token a service obtained for itself.
	ClassService
)

func (c Class) String() string {
	switch c {
	case ClassUser:
		return "user"
	case ClassService:
		return "service"
	default:
		return "any"
	}
}

// Claims are the verified claims of one token. A Claims is immutable and
// safe for concurrent use; accessors return copies, so callers cannot
// change what other requests sharing a cached verification see. The zero
// value is empty and belongs to no Verifier.
type Claims struct {
	issuer, subject, clientID, jti string
	audience, scopes, roles        []string
	class                          Class
	issuedAt, expiresAt, notBefore time.Time
	keyID, algorithm, typ          string
	payload                        string // the verified claims JSON
	members                        members
	v                              *Verifier
}

// Issuer returns "iss".
func (c *Claims) Issuer() string { return c.issuer }

// Subject returns "sub".
func (c *Claims) Subject() string { return c.subject }

// ClientID returns the client the token was issued to: "client_id" (RFC
// 9068); with [ProfileOIDC], else "azp", else "appid". It is "" when the
// token names none.
func (c *Claims) ClientID() string { return c.clientID }

// JTI returns "jti", or "".
func (c *Claims) JTI() string { return c.jti }

// Class returns the token class, [ClassUser] or [ClassService].
func (c *Claims) Class() Class { return c.class }

// Audience returns a copy of "aud".
func (c *Claims) Audience() []string { return slices.Clone(c.audience) }

// Scopes returns a copy of the scopes, normalised from the space-separated
// "scope" claim and the "scp" claim (string or array), sorted and unique.
func (c *Claims) Scopes() []string { return slices.Clone(c.scopes) }

// HasScope reports whether the token grants scope s.
func (c *Claims) HasScope(s string) bool {
	_, ok := slices.BinarySearch(c.scopes, s)
	return ok
}

// Roles returns a copy of the roles claim ([Issuer.RolesClaim], "roles" by
// default; a string or an array of strings).
func (c *Claims) Roles() []string { return slices.Clone(c.roles) }

// HasRole reports whether the roles claim contains r.
func (c *Claims) HasRole(r string) bool { return slices.Contains(c.roles, r) }

// IssuedAt returns "iat".
func (c *Claims) IssuedAt() time.Time { return c.issuedAt }

// ExpiresAt returns "exp".
func (c *Claims) ExpiresAt() time.Time { return c.expiresAt }

// NotBefore returns "nbf", or the zero time.
func (c *Claims) NotBefore() time.Time { return c.notBefore }

// KeyID returns the "kid" of the header ("" if the token had none).
func (c *Claims) KeyID() string { return c.keyID }

// Algorithm returns the verified "alg".
func (c *Claims) Algorithm() string { return c.algorithm }

// Type returns the header "typ" as sent ("" if absent), for a
// [Issuer.Classify] rule that tells classes apart by type.
func (c *Claims) Type() string { return c.typ }

// Decode unmarshals the verified claims into v with encoding/json, for
// typed access to claims of your own:
//
//	var ext struct {
//		Tenant string   `json:"tid"`
//		Groups []string `json:"groups"`
//	}
//	if err := claims.Decode(&ext); err != nil { ... }
//
// The claims were checked as strict JSON (no duplicate member at any
// depth) before the signature was verified, so what Decode sees is what
// the issuer signed.
func (c *Claims) Decode(v any) error {
	if c.payload == "" {
		return errors.New("jwtverify: no claims to decode")
	}
	return json.Unmarshal([]byte(c.payload), v)
}

// Claim returns a copy of the raw JSON of a top-level claim.
func (c *Claims) Claim(name string) (json.RawMessage, bool) {
	v, ok := c.members.get(name)
	if !ok {
		return nil, false
	}
	return json.RawMessage(v), true
}

// LogValue implements slog.LogValuer with identifiers only, never the token.
func (c *Claims) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("iss", c.issuer),
		slog.String("sub", c.subject),
		slog.String("client_id", c.clientID),
		slog.String("jti", c.jti),
		slog.String("class", c.class.String()),
		slog.String("kid", c.keyID),
	)
}

type ctxKey struct{}

// NewContext returns a copy of ctx carrying c.
func NewContext(ctx context.Context, c *Claims) context.Context {
	return context.WithValue(ctx, ctxKey{}, c)
}

// FromContext returns the verified claims [Verifier.Handler] stored.
func FromContext(ctx context.Context) (*Claims, bool) {
	c, ok := ctx.Value(ctxKey{}).(*Claims)
	return c, ok && c != nil
}

// numericDate reads a required or optional NumericDate claim.
func numericDate(ms members, name string, required bool) (time.Time, *Error) {
	raw, ok := ms.get(name)
	if !ok {
		if required {
			return time.Time{}, errMissingClaim
		}
		return time.Time{}, nil
	}
	sec, nsec, ok := jsonNumericDate(raw)
	if !ok {
		return time.Time{}, errBadClaim
	}
	return time.Unix(sec, nsec), nil
}

// typeOK applies the profile's "typ" rule.
func (p *profile) typeOK(t *rawToken) bool {
	if p.cfg.Type != "" {
		return t.hasTyp && normType(t.typ) == p.cfg.Type
	}
	// ProfileOIDC without an explicit Type.
	if !t.hasTyp {
		return true
	}
	switch normType(t.typ) {
	case "at+jwt", "jwt":
		return true
	}
	return false
}

// buildClaims decodes and validates the claims of a token whose signature
// has been verified, against profile p at time now.
func (p *profile) buildClaims(t *rawToken, now time.Time) (*Claims, *Error) {
	oidc := p.cfg.Profile == ProfileOIDC
	c := &Claims{issuer: p.cfg.Issuer, keyID: t.kid, algorithm: t.alg, typ: t.typ, payload: t.payload, members: t.claims}
	var e *Error
	if c.expiresAt, e = numericDate(t.claims, "exp", true); e != nil {
		return nil, e
	}
	if c.issuedAt, e = numericDate(t.claims, "iat", !oidc); e != nil {
		return nil, e
	}
	if c.notBefore, e = numericDate(t.claims, "nbf", false); e != nil {
		return nil, e
	}
	leeway := p.cfg.Leeway
	if !now.Before(c.expiresAt.Add(leeway)) {
		return nil, errExpired
	}
	if !c.notBefore.IsZero() && c.notBefore.After(now.Add(leeway)) {
		return nil, errNotYetValid
	}
	if c.issuedAt.After(now.Add(leeway)) {
		return nil, errIssuedInFuture
	}
	from := c.issuedAt
	if from.IsZero() {
		// No iat (ProfileOIDC): the token must not be valid for longer
		// than the lifetime from now on.
		from = now
	}
	if !c.expiresAt.After(c.issuedAt) || c.expiresAt.Sub(from) > p.cfg.MaxLifetime {
		return nil, errLifetime
	}

	var ok bool
	var azp, appid string
	for _, m := range t.claims {
		switch m.key {
		case "sub":
			c.subject, ok = jsonString(m.val)
		case "client_id":
			c.clientID, ok = jsonString(m.val)
		case "azp":
			azp, ok = jsonString(m.val)
		case "appid":
			appid, ok = jsonString(m.val)
		case "jti":
			c.jti, ok = jsonString(m.val)
		case "aud":
			c.audience, ok = jsonStrings(m.val)
		case "scope":
			var s string
			if s, ok = jsonString(m.val); ok {
				c.scopes = append(c.scopes, strings.Fields(s)...)
			}
		case "scp":
			var s []string
			if s, ok = jsonStrings(m.val); ok {
				for _, x := range s {
					c.scopes = append(c.scopes, strings.Fields(x)...)
				}
			}
		case "at_hash", "c_hash":
			if oidc {
				// Only ID tokens carry these (OpenID Connect Core §3.1.3.6,
				// §3.3.2.11): an ID token is not an access token.
				return nil, errIDToken
			}
			ok = true
		default:
			ok = true
		}
		if !ok {
			return nil, errBadClaim
		}
	}
	if c.roles, ok = rolesAt(t.claims, p.cfg.RolesClaim); !ok {
		return nil, errBadClaim
	}
	if oidc && c.clientID == "" {
		c.clientID = azp
		if c.clientID == "" {
			c.clientID = appid
		}
	}
	if c.subject == "" || len(c.audience) == 0 {
		return nil, errMissingClaim
	}
	if len(c.scopes) > 1 {
		slices.Sort(c.scopes)
		c.scopes = slices.Compact(c.scopes)
	}
	if !p.audienceOK(c.audience) {
		return nil, errAudience
	}
	if c.class, e = p.classify(c); e != nil {
		return nil, e
	}
	return c, nil
}

// rolesAt reads the roles claim at path: a string or an array of strings;
// absent (at any step) means none.
func rolesAt(ms members, path []string) ([]string, bool) {
	raw, ok := ms.get(path[0])
	for _, name := range path[1:] {
		if !ok {
			break
		}
		if len(raw) == 0 || raw[0] != '{' {
			return nil, false
		}
		inner, err := parseObject(raw)
		if err != nil {
			return nil, false
		}
		raw, ok = inner.get(name)
	}
	if !ok {
		return nil, true
	}
	return jsonStrings(raw)
}

func (p *profile) audienceOK(aud []string) bool {
	if len(p.cfg.Audiences) > 0 && !slices.ContainsFunc(aud, func(a string) bool {
		return slices.Contains(p.cfg.Audiences, a)
	}) {
		return false
	}
	for _, want := range p.cfg.AllAudiences {
		if !slices.Contains(aud, want) {
			return false
		}
	}
	return true
}

func (p *profile) classify(c *Claims) (Class, *Error) {
	if p.cfg.Classify != nil {
		switch cl := p.cfg.Classify(c); cl {
		case ClassUser, ClassService:
			return cl, nil
		default:
			return ClassAny, errClass
		}
	}
	if raw, ok := c.members.get(p.cfg.ClassClaim); ok {
		switch s, _ := jsonString(raw); s {
		case "user":
			return ClassUser, nil
		case "service":
			return ClassService, nil
		default:
			return ClassAny, errClass
		}
	}
	if p.cfg.RequireClassClaim {
		return ClassAny, errClass
	}
	if p.cfg.Profile == ProfileOIDC && oidcService(c) {
		return ClassService, nil
	}
	switch {
	case c.clientID == "":
		return ClassAny, errClass
	case c.subject == c.clientID:
		return ClassService, nil
	default:
		return ClassUser, nil
	}
}

// oidcService reports the service-token markers of common providers, all
// set by the provider, never by the user: Auth0's grant type, Entra ID's
// token type and app-only shape.
func oidcService(c *Claims) bool {
	str := func(name string) string {
		raw, ok := c.members.get(name)
		if !ok {
			return ""
		}
		s, _ := jsonString(raw)
		return s
	}
	switch {
	case str("gty") == "client-credentials":
		return true
	case str("idtyp") == "app":
		return true
	}
	if _, hasScp := c.members.get("scp"); !hasScp && str("tid") != "" {
		if oid := str("oid"); oid != "" && oid == c.subject {
			return true
		}
	}
	return false
}
