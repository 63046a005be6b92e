// Package clientauth is the component side of identity's client
// authentication: each running task generates its own ES256 key pair in
// memory, registers the public key with identity over mutual TLS (its
// certificate names the component), and proves itself at the token
// endpoint with a fresh signed assertion per request — private_key_jwt
// (RFC 7523 §2.2): one-use "jti", a lifetime of one minute, "aud" the
// token endpoint. No secret is configured, shared, written to disk or
// sent over the wire; a leaked private key is one task's, revoked alone.
//
//	src, err := clientauth.New(ctx, clientauth.Config{
//		IdentityURL: "https://identity.internal:7001",
//		HTTPClient:  mtlsClient, // presents the worker's certificate
//		Scopes:      []string{"ledger:transfer"},
//	})
//	client := oauth2.NewClient(ctx, src) // or &oauth2.Transport{Source: src}
//
// The key never leaves the process. It is renewed (a new key registered,
// the old one left to expire) when half its registration has passed. A
// task whose key an operator revoked is refused until it is restarted:
// [Source] does not re-register on its own after a refusal.
package clientauth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"golang.org/x/oauth2"
)

// Wire constants (they match identity's).
const (
	AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	AssertionTyp  = "client-authentication+jwt"
	TokenPath     = "/oauth2/token"
	ClientsPath   = "/internal/v1/clients"
	MetadataPath  = "/.well-known/oauth-authorization-server"
	// Lifetime of one assertion.
	Lifetime = time.Minute
)

// ErrRefused is returned when identity refuses the client (RFC 6749 §5.2
// error in the message, never a token).
var ErrRefused = errors.New("clientauth: identity refused the client")

// Key is one task's signing key. It is safe for concurrent use.
type Key struct {
	priv *ecdsa.PrivateKey
	kid  string
	jwk  []byte
}

// NewKey generates an ES256 key.
func NewKey() (*Key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	pub, err := jwk.FromRaw(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	kid := base64.RawURLEncoding.EncodeToString(tp)
	if err := pub.Set(jwk.KeyIDKey, kid); err != nil {
		return nil, err
	}
	b, err := json.Marshal(pub)
	if err != nil {
		return nil, err
	}
	return &Key{priv: priv, kid: kid, jwk: b}, nil
}

// ID is the key id (RFC 7638 thumbprint) identity knows it by.
func (k *Key) ID() string { return k.kid }

// PublicJWK is the public key as a JWK.
func (k *Key) PublicJWK() []byte { return bytes.Clone(k.jwk) }

// Assertion returns a client assertion for clientID and the token
// endpoint audience, valid from now for Lifetime, with a random jti.
func (k *Key) Assertion(clientID, audience string, now time.Time) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	hdr, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": k.kid, "typ": AssertionTyp})
	claims, _ := json.Marshal(map[string]any{
		"iss": clientID, "sub": clientID, "aud": audience,
		"jti": base64.RawURLEncoding.EncodeToString(jti[:]),
		"iat": now.Unix(), "exp": now.Add(Lifetime).Unix(),
	})
	in := base64.RawURLEncoding.EncodeToString(hdr) + "." + base64.RawURLEncoding.EncodeToString(claims)
	d := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, k.priv, d[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// Config configures [New].
type Config struct {
	// IdentityURL is identity's internal base URL. Required.
	IdentityURL string
	// HTTPClient reaches it over mutual TLS with the component's
	// certificate. Required.
	HTTPClient *http.Client
	// Scopes to ask for; empty asks for all the client may have.
	Scopes []string
	// Audience is the token endpoint identifier assertions name. Default:
	// the token_endpoint of identity's metadata.
	Audience string
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Source is an oauth2.TokenSource for one task. It is safe for concurrent
// use; tokens are reused until shortly before they expire.
type Source struct {
	cfg Config

	mu       sync.Mutex
	clientID string
	key      *Key
	expires  time.Time // of the key's registration
	renewAt  time.Time
	tok      *oauth2.Token
}

var _ oauth2.TokenSource = (*Source)(nil)

// New generates the task's key, learns the token endpoint audience when
// not given, and registers the key.
func New(ctx context.Context, cfg Config) (*Source, error) {
	if cfg.IdentityURL == "" || cfg.HTTPClient == nil {
		return nil, errors.New("clientauth: IdentityURL and HTTPClient are required")
	}
	cfg.IdentityURL = strings.TrimSuffix(cfg.IdentityURL, "/")
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Audience == "" {
		aud, err := discover(ctx, cfg)
		if err != nil {
			return nil, err
		}
		cfg.Audience = aud
	}
	s := &Source{cfg: cfg}
	if err := s.register(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func discover(ctx context.Context, cfg Config) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.IdentityURL+MetadataPath, nil)
	if err != nil {
		return "", err
	}
	resp, err := cfg.HTTPClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("clientauth: metadata: %w", err)
	}
	defer resp.Body.Close()
	var md struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&md) != nil || md.TokenEndpoint == "" {
		return "", fmt.Errorf("clientauth: metadata: status %d", resp.StatusCode)
	}
	return md.TokenEndpoint, nil
}

// register generates a fresh key and registers it.
func (s *Source) register(ctx context.Context) error {
	key, err := NewKey()
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]json.RawMessage{"jwk": key.PublicJWK()})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.IdentityURL+ClientsPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("clientauth: register: %w", err)
	}
	defer resp.Body.Close()
	var info struct {
		ClientID string    `json:"client_id"`
		KeyID    string    `json:"kid"`
		Expires  time.Time `json:"expires_at"`
	}
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("%w: register: status %d", ErrRefused, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&info); err != nil || info.KeyID != key.ID() || info.ClientID == "" {
		return fmt.Errorf("clientauth: register: unexpected answer")
	}
	now := s.cfg.Now()
	s.clientID, s.key, s.expires = info.ClientID, key, info.Expires
	s.renewAt = now.Add(info.Expires.Sub(now) / 2)
	return nil
}

// ClientID is the client id identity registered the task under.
func (s *Source) ClientID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clientID
}

// KeyID is the id of the task's current key.
func (s *Source) KeyID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.key.ID()
}

// Token returns a valid service token, asking identity for a new one
// with a fresh assertion when the cached one is about to expire.
func (s *Source) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	if s.tok != nil && now.Before(s.tok.Expiry.Add(-30*time.Second)) {
		return s.tok, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !now.Before(s.renewAt) {
		if err := s.register(ctx); err != nil && !now.Before(s.expires) {
			return nil, err
		}
	}
	tok, err := s.request(ctx, now)
	if err != nil {
		return nil, err
	}
	s.tok = tok
	return tok, nil
}

func (s *Source) request(ctx context.Context, now time.Time) (*oauth2.Token, error) {
	a, err := s.key.Assertion(s.clientID, s.cfg.Audience, now)
	if err != nil {
		return nil, err
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {AssertionType}, "client_assertion": {a}}
	if len(s.cfg.Scopes) > 0 {
		form.Set("scope", strings.Join(s.cfg.Scopes, " "))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.IdentityURL+TokenPath, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("clientauth: token: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
			Desc  string `json:"error_description"`
		}
		_ = json.Unmarshal(body, &e)
		return nil, fmt.Errorf("%w: %d %s: %s", ErrRefused, resp.StatusCode, e.Error, e.Desc)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.AccessToken == "" || !strings.EqualFold(tr.TokenType, "Bearer") {
		return nil, errors.New("clientauth: token: unexpected answer")
	}
	return &oauth2.Token{AccessToken: tr.AccessToken, TokenType: "Bearer", Expiry: now.Add(time.Duration(tr.ExpiresIn) * time.Second)}, nil
}
