package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/malai-sec/malai/examples/malai/identity/internal/assertion"
	"github.com/malai-sec/malai/examples/malai/identity/store"
)

// maxLiveClientKeys bounds the keys one component may hold at once (one
// per running task, plus renewals).
const maxLiveClientKeys = 64

// ClientKeyInfo is the answer to a key registration.
type ClientKeyInfo struct {
	ClientID string    `json:"client_id"`
	KeyID    string    `json:"kid"`
	Expires  time.Time `json:"expires_at"`
}

// RegisterClientKey registers a component's public key (a JWK: EC P-256
// or Ed25519, public part only) for private_key_jwt. The key id is the
// key's RFC 7638 thumbprint, whatever "kid" the JWK carries; assertions
// must name it. The key is accepted for ClientKeyLifetime. Registering
// the same key again answers the same key id. Callers reach this over
// the network only through POST /internal/v1/clients, where the client
// id is the name in the caller's verified certificate.
func (s *Service) RegisterClientKey(ctx context.Context, clientID string, publicJWK []byte) (ClientKeyInfo, error) {
	if s.isClosed() {
		return ClientKeyInfo{}, ErrClosed
	}
	if _, ok := s.clients[clientID]; !ok {
		return ClientKeyInfo{}, fmt.Errorf("%w: %q may not obtain tokens", ErrForbidden, clientID)
	}
	kid, canonical, err := parsePublicJWK(publicJWK)
	if err != nil {
		return ClientKeyInfo{}, err
	}
	now := s.cfg.Now()
	existing, err := s.st.ClientKeys(ctx, clientID)
	if err != nil {
		return ClientKeyInfo{}, storeErr(err)
	}
	live := 0
	for _, k := range existing {
		if k.KeyID == kid {
			if !k.Revoked.IsZero() {
				return ClientKeyInfo{}, fmt.Errorf("%w: this key was revoked; generate a new one", ErrInvalidClient)
			}
			return ClientKeyInfo{ClientID: clientID, KeyID: kid, Expires: k.Expires.UTC()}, nil
		}
		if k.Revoked.IsZero() && now.Before(k.Expires) {
			live++
		}
	}
	if live >= maxLiveClientKeys {
		return ClientKeyInfo{}, fmt.Errorf("%w: too many live keys for %q", ErrForbidden, clientID)
	}
	k := store.ClientKey{ClientID: clientID, KeyID: kid, JWK: canonical, Registered: now, Expires: now.Add(s.cfg.ClientKeyLifetime)}
	dctx, cancel := durable(ctx)
	defer cancel()
	if err := s.st.AddClientKey(dctx, k); err != nil && !errors.Is(err, store.ErrExists) {
		return ClientKeyInfo{}, storeErr(err)
	}
	s.auditEvent(ctx, AuditClientKeyAdded, map[string]any{"client_id": clientID, "kid": kid, "expires": k.Expires.UTC()})
	s.log.InfoContext(ctx, "identity: component key registered", "client_id", clientID, "kid", kid)
	return ClientKeyInfo{ClientID: clientID, KeyID: kid, Expires: k.Expires.UTC()}, nil
}

// parsePublicJWK accepts a public EC P-256 or Ed25519 JWK (strict JSON,
// no duplicate members) and returns its thumbprint and the JWK to store
// (public members only, kid set to the thumbprint).
func parsePublicJWK(b []byte) (string, []byte, error) {
	bad := func(why string) (string, []byte, error) {
		return "", nil, fmt.Errorf("%w: %s", ErrMalformedRequest, why)
	}
	if len(b) > 2048 {
		return bad("JWK too large")
	}
	probe, err := assertion.StrictObject(b)
	if err != nil {
		return bad("not a JWK")
	}
	for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "k"} {
		if _, ok := probe[private]; ok {
			return bad("a private key must never leave its component")
		}
	}
	key, err := jwk.ParseKey(b)
	if err != nil {
		return bad("not a JWK")
	}
	var raw any
	if err := key.Raw(&raw); err != nil {
		return bad("not a JWK")
	}
	switch k := raw.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return bad("EC keys must be P-256 (ES256)")
		}
		// Coordinates wider than the field, or a point off the curve,
		// are refused here (Bytes validates the point): encoding such a
		// key panics in jwx.
		if _, err := k.Bytes(); err != nil {
			return bad("EC point not on the curve")
		}
	case ed25519.PublicKey:
	default:
		return bad("only EC P-256 and Ed25519 public keys are accepted")
	}
	pub, err := jwk.FromRaw(raw)
	if err != nil {
		return bad("not a JWK")
	}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return bad("not a JWK")
	}
	kid := base64.RawURLEncoding.EncodeToString(tp)
	if err := pub.Set(jwk.KeyIDKey, kid); err != nil {
		return "", nil, err
	}
	canonical, err := json.Marshal(pub)
	if err != nil {
		return "", nil, err
	}
	return kid, canonical, nil
}

// RevokeClientKeys revokes one key of a component (kid), or all of them
// (kid ""): assertions signed with it are refused from that moment, on
// every replica, and no other component is touched. Tokens the component
// already holds live out their AccessTokenTTL. The task whose key was
// revoked stays refused until it is restarted with a fresh key, which it
// can register only with its component's certificate.
func (s *Service) RevokeClientKeys(ctx context.Context, clientID, kid string) (int, error) {
	if _, ok := s.clients[clientID]; !ok {
		return 0, fmt.Errorf("%w: unknown client %q", ErrInvalidClient, clientID)
	}
	dctx, cancel := durable(ctx)
	defer cancel()
	n, err := s.st.RevokeClientKeys(dctx, clientID, kid, s.cfg.Now())
	if err != nil {
		return 0, storeErr(err)
	}
	s.auditEvent(ctx, AuditClientKeysRevoked, map[string]any{"client_id": clientID, "kid": kid, "revoked": n})
	s.log.WarnContext(ctx, "identity: component keys revoked", "client_id", clientID, "kid", kid, "revoked", n)
	return n, nil
}

// ClientKeys lists a component's registered keys (for the operator).
func (s *Service) ClientKeys(ctx context.Context, clientID string) ([]store.ClientKey, error) {
	keys, err := s.st.ClientKeys(ctx, clientID)
	return keys, storeErr(err)
}

func (s *Service) serveRegisterKey(w http.ResponseWriter, r *http.Request) {
	peer := s.cfg.PeerComponent(r)
	if peer == "" {
		s.fail(w, r, ErrForbidden)
		return
	}
	jwkJSON, err := decodeKeyRegistration(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	info, err := s.RegisterClientKey(r.Context(), peer, jwkJSON)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	b, _ := json.Marshal(info)
	writeJSON(w, http.StatusCreated, b)
}

// decodeKeyRegistration reads {"jwk": {…}}: strict JSON, that one member.
func decodeKeyRegistration(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil, ErrUnsupportedMediaType
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err != nil {
		return nil, ErrBodyTooLarge
	}
	m, err := assertion.StrictObject(b)
	if err != nil || len(m) != 1 || len(m["jwk"]) == 0 || m["jwk"][0] != '{' {
		return nil, ErrMalformedRequest
	}
	return m["jwk"], nil
}

func (s *Service) serveRevokeClient(w http.ResponseWriter, r *http.Request) {
	// Whatever the listener admits, only an operator's certificate may
	// revoke.
	if peer := s.cfg.PeerComponent(r); peer == "" || !slices.Contains(s.cfg.OperatorPeers, peer) {
		s.fail(w, r, ErrForbidden)
		return
	}
	var kid string
	if err := decodeJSON(w, r, map[string]*string{"kid": &kid}); err != nil {
		s.fail(w, r, err)
		return
	}
	n, err := s.RevokeClientKeys(r.Context(), r.PathValue("id"), kid)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	b, _ := json.Marshal(map[string]int{"revoked": n})
	writeJSON(w, http.StatusOK, b)
}
