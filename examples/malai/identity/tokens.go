package identity

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/malai-sec/malai/examples/malai/identity/internal/keyring"
)

// TokenResponse is the JSON body of a successful sign-in, refresh or
// client-credentials grant (RFC 6749 §5.1), for clients to decode.
// AccessToken redacts itself in logs and when marshalled.
type TokenResponse struct {
	AccessToken Secret `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Scope       string `json:"scope,omitempty"`
}

// UserSubject returns the "sub" of a user's tokens: [UserSubjectPrefix]
// followed by the username.
func UserSubject(username string) string { return UserSubjectPrefix + username }

// Username returns the username in a user token's "sub", and false when
// sub is not a user subject (a service token's sub is its client id).
func Username(sub string) (string, bool) {
	name, ok := strings.CutPrefix(sub, UserSubjectPrefix)
	if !ok || !usernameRE.MatchString(name) {
		return "", false
	}
	return name, true
}

// grant describes one access token to mint.
type grant struct {
	class    string
	subject  string
	clientID string
	scopes   []string
	amr      []string  // user tokens only
	authTime time.Time // user tokens only
}

// mint signs an access token with the current key, rotating the ring first
// when the key has signed for KeyRotationInterval.
func (s *Service) mint(g grant) (TokenResponse, error) {
	now := s.cfg.Now()
	key, since, err := s.ring.Signer()
	if err == nil && now.Sub(since) >= s.cfg.KeyRotationInterval {
		if err = s.ring.RotateIfOlder(s.cfg.KeyRotationInterval); err == nil {
			key, _, err = s.ring.Signer()
		}
	}
	if err != nil {
		if errors.Is(err, keyring.ErrClosed) {
			return TokenResponse{}, ErrClosed
		}
		return TokenResponse{}, err
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return TokenResponse{}, err
	}
	aud := AudienceUser
	if g.class == ClassService {
		aud = AudienceService
	}
	scope := strings.Join(g.scopes, " ")
	b := jwt.NewBuilder().
		Issuer(s.cfg.Issuer).
		Subject(g.subject).
		Audience([]string{aud}).
		IssuedAt(now).
		NotBefore(now).
		Expiration(now.Add(s.cfg.AccessTokenTTL)).
		JwtID(base64.RawURLEncoding.EncodeToString(jti)).
		Claim(ClaimClientID, g.clientID).
		Claim(ClaimScope, scope).
		Claim(ClaimTokenClass, g.class)
	if g.class == ClassUser {
		b = b.Claim(ClaimAuthTime, g.authTime.Unix()).Claim(ClaimAMR, g.amr)
	}
	tok, err := b.Build()
	if err != nil {
		return TokenResponse{}, err
	}
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.TypeKey, TokenType); err != nil {
		return TokenResponse{}, err
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return TokenResponse{}, fmt.Errorf("identity: signing: %w", err)
	}
	return TokenResponse{
		AccessToken: Secret(signed),
		TokenType:   "Bearer",
		ExpiresIn:   int(s.cfg.AccessTokenTTL / time.Second),
		Scope:       scope,
	}, nil
}

// userClaims are what the service needs from its own user tokens.
type userClaims struct {
	username string
	authTime time.Time
	amr      []string
}

// verifyUserToken checks the request's bearer token the way every other
// domain does through jwtverify: ES256 signature by a published key with a
// kid, typ at+jwt, iss, aud malai-api, class user, exp/nbf/iat with 30 s
// leeway.
func (s *Service) verifyUserToken(r *http.Request) (userClaims, error) {
	vals := r.Header.Values("Authorization")
	if len(vals) != 1 {
		return userClaims{}, ErrInvalidToken
	}
	scheme, raw, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || raw == "" || len(raw) > 4096 {
		return userClaims{}, ErrInvalidToken
	}
	msg, err := jws.Parse([]byte(raw))
	if err != nil || len(msg.Signatures()) != 1 {
		return userClaims{}, ErrInvalidToken
	}
	h := msg.Signatures()[0].ProtectedHeaders()
	if h.Type() != TokenType || h.Algorithm() != jwa.ES256 {
		return userClaims{}, ErrInvalidToken
	}
	tok, err := jwt.Parse([]byte(raw),
		jwt.WithKeySet(s.ring.PublicSet(), jws.WithRequireKid(true)),
		jwt.WithValidate(true),
		jwt.WithClock(jwt.ClockFunc(s.cfg.Now)),
		jwt.WithAcceptableSkew(30*time.Second),
		jwt.WithIssuer(s.cfg.Issuer),
		jwt.WithAudience(AudienceUser),
		jwt.WithClaimValue(ClaimTokenClass, ClassUser),
		jwt.WithRequiredClaim(jwt.ExpirationKey),
		jwt.WithRequiredClaim(ClaimAuthTime),
	)
	if err != nil {
		return userClaims{}, ErrInvalidToken
	}
	name, ok := Username(tok.Subject())
	if !ok {
		return userClaims{}, ErrInvalidToken
	}
	c := userClaims{username: name}
	if v, ok := tok.Get(ClaimAuthTime); ok {
		if f, ok := v.(float64); ok {
			c.authTime = time.Unix(int64(f), 0)
		}
	}
	if v, ok := tok.Get(ClaimAMR); ok {
		if list, ok := v.([]any); ok {
			for _, m := range list {
				if s, ok := m.(string); ok {
					c.amr = append(c.amr, s)
				}
			}
		}
	}
	return c, nil
}

func (s *Service) serveJWKS(w http.ResponseWriter, r *http.Request) {
	b := s.ring.JWKS()
	h := w.Header()
	h.Set("Content-Type", "application/jwk-set+json")
	h.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(JWKSMaxAge/time.Second)))
	h.Set("Content-Length", strconv.Itoa(len(b)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(b)
}

// marshalToken writes the wire form; TokenResponse itself marshals with
// the token redacted.
func marshalToken(t TokenResponse) []byte {
	b, _ := json.Marshal(struct { // strings and an int cannot fail
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int    `json:"expires_in"`
		Scope       string `json:"scope,omitempty"`
	}{t.AccessToken.Reveal(), t.TokenType, t.ExpiresIn, t.Scope})
	return b
}

func amrFor(secondFactor string) []string {
	amr := []string{"pwd"}
	switch secondFactor {
	case "otp":
		amr = append(amr, "otp", "mfa")
	case "recovery":
		amr = append(amr, "mfa")
	}
	return slices.Clip(amr)
}
