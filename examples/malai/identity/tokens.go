package identity

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/malai-sec/malai/examples/malai/identity/internal/signkeys"
	"github.com/malai-sec/malai/examples/malai/identity/store"
	"github.com/malai-sec/malai/jwtverify"
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

// grant describes one access token to mint.
type grant struct {
	class    string
	subject  string
	clientID string
	scopes   []string
	amr      []string  // user tokens only
	authTime time.Time // user tokens only
	session  string    // user tokens only
	roles    []string  // user tokens only
}

func (s *Service) mintUser(ctx context.Context, u store.User, sess store.Session) (TokenResponse, error) {
	return s.mint(ctx, grant{class: ClassUser, subject: UserSubject(u.ID), clientID: s.cfg.UserClientID,
		scopes: s.cfg.UserScopes, amr: sess.AMR, authTime: sess.AuthTime, session: sess.ID, roles: u.Roles})
}

// mint signs an access token with the current key (rotating the set
// first when a rotation is due).
func (s *Service) mint(ctx context.Context, g grant) (TokenResponse, error) {
	now := s.cfg.Now()
	key, err := s.keys.Signer(ctx)
	if err != nil {
		if errors.Is(err, signkeys.ErrClosed) {
			return TokenResponse{}, ErrClosed
		}
		return TokenResponse{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
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
		Claim(ClaimScope, scope)
	if g.class != ClassUser || !s.cfg.Faults.NoTokenClass {
		b = b.Claim(ClaimTokenClass, g.class)
	}
	if g.class == ClassUser {
		b = b.Claim(ClaimAuthTime, g.authTime.Unix()).Claim(ClaimAMR, g.amr).Claim(ClaimSession, g.session)
		if len(g.roles) > 0 {
			b = b.Claim(ClaimRoles, g.roles)
		}
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

// VerifierProfile is the token profile every verifier of the system
// applies to identity's tokens of audience aud: ES256 only, typ at+jwt,
// the issuer, one audience, at most MaxAccessTokenTTL, token_class
// required (every token identity issues states it). Set the key
// source (JWKSURL or Keys) before use.
func VerifierProfile(issuer, aud string) jwtverify.Issuer {
	return jwtverify.Issuer{Issuer: issuer, Algorithms: []string{Algorithm}, Audiences: []string{aud},
		Type: TokenType, ClassClaim: ClaimTokenClass, RequireClassClaim: true, MaxLifetime: MaxAccessTokenTTL}
}

// inProcessVerifier builds identity's own verifier: the system's profile
// with the key set read from the service itself.
func (s *Service) inProcessVerifier() (*jwtverify.Verifier, error) {
	is := VerifierProfile(s.cfg.Issuer, AudienceUser)
	is.JWKSURL = "https://identity.in-process" + JWKSPath
	v, err := jwtverify.New(jwtverify.Config{
		Issuers:    []jwtverify.Issuer{is},
		HTTPClient: &http.Client{Transport: handlerTransport{http.HandlerFunc(s.serveJWKS)}, Timeout: 5 * time.Second},
		CacheSize:  10_000,
		Realm:      "malai",
		Now:        s.cfg.Now,
	})
	if err != nil {
		return nil, err
	}
	select {
	case <-v.Ready():
	case <-time.After(10 * time.Second):
		v.Close()
		return nil, errors.New("identity: in-process key set not ready")
	}
	return v, nil
}

// handlerTransport answers HTTP requests from a handler in process.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	rec := &memResponse{header: http.Header{}}
	t.h.ServeHTTP(rec, r)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return &http.Response{
		Status: strconv.Itoa(rec.status) + " " + http.StatusText(rec.status), StatusCode: rec.status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: rec.header, Body: io.NopCloser(bytes.NewReader(rec.body.Bytes())),
		ContentLength: int64(rec.body.Len()), Request: r,
	}, nil
}

// memResponse collects a response in memory.
type memResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (m *memResponse) Header() http.Header { return m.header }
func (m *memResponse) WriteHeader(code int) {
	if m.status == 0 {
		m.status = code
	}
}
func (m *memResponse) Write(b []byte) (int, error) {
	if m.status == 0 {
		m.status = http.StatusOK
	}
	return m.body.Write(b)
}

// userRequirement is what identity's account routes demand of a token:
// exactly one audience and one class.
var userRequirement = jwtverify.Requirement{Class: jwtverify.ClassUser, Audiences: []string{AudienceUser}}

// caller is the verified user behind an account-route request.
type caller struct {
	user     store.User
	session  string
	authTime time.Time
}

// withUser verifies the bearer token with jwtverify (the same profile as
// the gateway and the ledger), then checks the account still exists and
// the token's session is live, and passes the caller to h.
func (s *Service) withUser(h func(http.ResponseWriter, *http.Request, caller)) http.Handler {
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var tc tokenClaims
		var ok bool
		if s.cfg.Faults.NoTokenCheck {
			tc, ok = unverifiedClaims(r)
		} else if c, found := jwtverify.FromContext(r.Context()); found {
			tc, ok = tokenClaims{Sub: c.Subject()}, true
			if raw, found := c.Claim(ClaimSession); found {
				_ = json.Unmarshal(raw, &tc.Sid)
			}
			if raw, found := c.Claim(ClaimAuthTime); found {
				_ = json.Unmarshal(raw, &tc.AuthTime)
			}
		}
		id, idOK := UserID(tc.Sub)
		if !ok || !idOK {
			s.fail(w, r, ErrInvalidToken)
			return
		}
		u, exists, err := s.st.UserByID(r.Context(), id)
		if err != nil {
			s.fail(w, r, storeErr(err))
			return
		}
		if !exists || tc.Sid == "" {
			s.fail(w, r, ErrInvalidToken)
			return
		}
		live, err := s.sessionLive(r.Context(), id, tc.Sid)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if !live {
			// Signed out or revoked: the token's remaining minutes buy
			// nothing on identity's own routes.
			s.fail(w, r, ErrInvalidToken)
			return
		}
		h(w, r, caller{user: u, session: tc.Sid, authTime: time.Unix(tc.AuthTime, 0)})
	})
	if s.cfg.Faults.NoTokenCheck {
		return inner
	}
	return s.verifier.Require(userRequirement)(inner)
}

// tokenClaims are what the account routes read from a user token.
type tokenClaims struct {
	Sub      string `json:"sub"`
	Sid      string `json:"sid"`
	AuthTime int64  `json:"auth_time"`
}

// unverifiedClaims reads a bearer token's claims without checking
// anything: only for Faults.NoTokenCheck.
func unverifiedClaims(r *http.Request) (tokenClaims, bool) {
	_, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	parts := strings.Split(tok, ".")
	if !ok || len(parts) != 3 {
		return tokenClaims{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return tokenClaims{}, false
	}
	var tc tokenClaims
	return tc, json.Unmarshal(b, &tc) == nil
}

func (s *Service) sessionLive(ctx context.Context, userID, sid string) (bool, error) {
	ss, err := s.st.Sessions(ctx, userID)
	if err != nil {
		return false, storeErr(err)
	}
	now := s.cfg.Now()
	return slices.ContainsFunc(ss, func(x store.Session) bool {
		return x.ID == sid && !x.Revoked && !x.Expired(now, s.cfg.RefreshTTL, s.cfg.SessionMaxAge)
	}), nil
}

func (s *Service) serveJWKS(w http.ResponseWriter, r *http.Request) {
	writeCacheable(w, r, "application/jwk-set+json", s.keys.JWKS())
}

// writeCacheable sends a public document verifiers and clients may cache
// for JWKSMaxAge.
func writeCacheable(w http.ResponseWriter, r *http.Request, contentType string, b []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(JWKSMaxAge/time.Second)))
	h.Set("Content-Length", strconv.Itoa(len(b)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(b)
}

// Metadata is the RFC 8414 authorization server metadata document.
type Metadata struct {
	Issuer                       string   `json:"issuer"`
	JWKSURI                      string   `json:"jwks_uri"`
	TokenEndpoint                string   `json:"token_endpoint"`
	TokenEndpointAuthMethods     []string `json:"token_endpoint_auth_methods_supported"`
	TokenEndpointAuthSigningAlgs []string `json:"token_endpoint_auth_signing_alg_values_supported"`
	GrantTypes                   []string `json:"grant_types_supported"`
	ResponseTypes                []string `json:"response_types_supported"`
	Scopes                       []string `json:"scopes_supported"`
}

// Metadata returns the document served at MetadataPath.
func (s *Service) Metadata() Metadata {
	scopes := slices.Clone(s.cfg.UserScopes)
	for _, sc := range s.clients {
		scopes = append(scopes, sc...)
	}
	slices.Sort(scopes)
	return Metadata{
		Issuer:                       s.cfg.Issuer,
		JWKSURI:                      strings.TrimSuffix(s.cfg.Issuer, "/") + JWKSPath,
		TokenEndpoint:                s.cfg.TokenEndpoint,
		TokenEndpointAuthMethods:     []string{"private_key_jwt"},
		TokenEndpointAuthSigningAlgs: []string{"ES256", "EdDSA"},
		GrantTypes:                   []string{"client_credentials"},
		ResponseTypes:                []string{},
		Scopes:                       slices.Compact(scopes),
	}
}

func (s *Service) serveMetadata(w http.ResponseWriter, r *http.Request) {
	var b bytes.Buffer
	_ = json.NewEncoder(&b).Encode(s.Metadata())
	writeCacheable(w, r, "application/json", bytes.TrimSpace(b.Bytes()))
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
