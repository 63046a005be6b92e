package jwtverify

import (
	"context"
	"encoding/json"
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
	members                        members
	v                              *Verifier
}

// Issuer returns "iss".
func (c *Claims) Issuer() string { return c.issuer }

// Subject returns "sub".
func (c *Claims) Subject() string { return c.subject }

// ClientID returns "client_id" (RFC 9068), or "".
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

// Roles returns a copy of the "roles" claim (string or array).
func (c *Claims) Roles() []string { return slices.Clone(c.roles) }

// HasRole reports whether "roles" contains r.
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

// buildClaims decodes and validates the claims of a token whose signature
// has been verified, against profile p at time now.
func (p *profile) buildClaims(t *rawToken, now time.Time) (*Claims, *Error) {
	c := &Claims{issuer: p.cfg.Issuer, keyID: t.kid, algorithm: t.alg, typ: t.typ, members: t.claims}
	var e *Error
	if c.expiresAt, e = numericDate(t.claims, "exp", true); e != nil {
		return nil, e
	}
	if c.issuedAt, e = numericDate(t.claims, "iat", true); e != nil {
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
	if !c.expiresAt.After(c.issuedAt) || c.expiresAt.Sub(c.issuedAt) > p.cfg.MaxLifetime {
		return nil, errLifetime
	}

	var ok bool
	for _, m := range t.claims {
		switch m.key {
		case "sub":
			c.subject, ok = jsonString(m.val)
		case "client_id":
			c.clientID, ok = jsonString(m.val)
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
		case "roles":
			c.roles, ok = jsonStrings(m.val)
		default:
			ok = true
		}
		if !ok {
			return nil, errBadClaim
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
	switch {
	case c.clientID == "":
		return ClassAny, errClass
	case c.subject == c.clientID:
		return ClassService, nil
	default:
		return ClassUser, nil
	}
}
