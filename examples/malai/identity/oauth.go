package identity

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/malai-sec/malai/examples/malai/identity/internal/assertion"
	"github.com/malai-sec/malai/examples/malai/identity/store"
)

// maxFormBody caps the token request body.
const maxFormBody = 8 << 10

// AssertionType is the client_assertion_type of private_key_jwt (RFC 7523
// §2.2).
const AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// OAuth2 error codes (RFC 6749 §5.2).
const (
	oauthInvalidRequest       = "invalid_request"
	oauthInvalidClient        = "invalid_client"
	oauthUnauthorizedClient   = "unauthorized_client"
	oauthUnsupportedGrantType = "unsupported_grant_type"
	oauthInvalidScope         = "invalid_scope"
)

// TokenError is the RFC 6749 §5.2 error body of POST /oauth2/token.
type TokenError struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description,omitempty"`
}

// tokenError is a refusal at the token endpoint: status, code and a
// description that names the rule broken, never token text.
type tokenError struct {
	status         int
	code, desc     string
	basicChallenge bool
}

func (e *tokenError) Error() string { return e.code + ": " + e.desc }

func invalidClient(desc string) *tokenError {
	return &tokenError{status: http.StatusUnauthorized, code: oauthInvalidClient, desc: desc}
}

func badRequest(code, desc string) *tokenError {
	return &tokenError{status: http.StatusBadRequest, code: code, desc: desc}
}

func writeTokenError(w http.ResponseWriter, e *tokenError) {
	if e.basicChallenge {
		// RFC 6749 §5.2: a client that tried the Authorization header
		// gets a challenge for the scheme it used.
		w.Header().Set("WWW-Authenticate", `Basic realm="malai", charset="UTF-8"`)
	}
	b, _ := json.Marshal(TokenError{Error: e.code, ErrorDescription: e.desc})
	writeJSON(w, e.status, b)
}

// serveToken implements the client-credentials grant (RFC 6749 §4.4)
// with private_key_jwt client authentication only (RFC 7523 §2.2, OpenID
// Connect Core §9). client_secret_basic, client_secret_post and
// client_secret_jwt are refused: no component holds a shared secret.
func (s *Service) serveToken(w http.ResponseWriter, r *http.Request) {
	tok, e := s.token(r.Context(), w, r)
	if e != nil {
		s.log.LogAttrs(r.Context(), slog.LevelWarn, "identity: token request refused",
			slog.String("error", e.code), slog.String("reason", e.desc), slog.String("peer", s.cfg.PeerComponent(r)))
		writeTokenError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, marshalToken(tok))
}

func (s *Service) token(ctx context.Context, w http.ResponseWriter, r *http.Request) (TokenResponse, *tokenError) {
	if r.Header.Get("Authorization") != "" {
		e := invalidClient("client_secret_basic is not accepted: authenticate with private_key_jwt")
		e.basicChallenge = strings.HasPrefix(strings.ToLower(r.Header.Get("Authorization")), "basic ")
		return TokenResponse{}, e
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return TokenResponse{}, badRequest(oauthInvalidRequest, "body must be application/x-www-form-urlencoded")
	}
	if r.URL.RawQuery != "" {
		return TokenResponse{}, badRequest(oauthInvalidRequest, "parameters belong in the body, not the query")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFormBody))
	if err != nil {
		return TokenResponse{}, badRequest(oauthInvalidRequest, "body too large or unreadable")
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return TokenResponse{}, badRequest(oauthInvalidRequest, "malformed form body")
	}
	for k, v := range form {
		if len(v) > 1 {
			return TokenResponse{}, badRequest(oauthInvalidRequest, "parameter repeated: "+url.QueryEscape(k))
		}
	}
	if form.Has("client_secret") {
		return TokenResponse{}, invalidClient("client_secret_post is not accepted: authenticate with private_key_jwt")
	}
	if form.Get("client_assertion_type") != AssertionType || form.Get("client_assertion") == "" {
		return TokenResponse{}, invalidClient("client authentication required: private_key_jwt (client_assertion_type " + AssertionType + ")")
	}
	a, err := assertion.Parse(form.Get("client_assertion"))
	if err != nil {
		return TokenResponse{}, invalidClient("client assertion refused: " + strings.TrimPrefix(err.Error(), "assertion: "))
	}
	clientID := a.Subject
	if cid := form.Get("client_id"); cid != "" && cid != clientID {
		return TokenResponse{}, invalidClient("client_id does not match the assertion")
	}
	scopes, known := s.clients[clientID]
	if !known {
		return TokenResponse{}, invalidClient("unknown client")
	}
	if peer := s.cfg.PeerComponent(r); peer != clientID {
		// The assertion must come over the mutual-TLS connection of the
		// component it names: a leaked key is useless without that
		// component's certificate too.
		return TokenResponse{}, invalidClient("the calling component is not the asserted client")
	}
	now := s.cfg.Now()
	if err := a.Check(clientID, s.cfg.TokenEndpoint, now); err != nil {
		return TokenResponse{}, invalidClient("client assertion refused: " + strings.TrimPrefix(err.Error(), "assertion: "))
	}
	pub, e := s.clientKey(ctx, clientID, a.KeyID, now)
	if e != nil {
		return TokenResponse{}, e
	}
	if err := a.Verify(pub); err != nil {
		return TokenResponse{}, invalidClient("client assertion refused: " + strings.TrimPrefix(err.Error(), "assertion: "))
	}
	switch gt := form.Get("grant_type"); gt {
	case "":
		return TokenResponse{}, badRequest(oauthInvalidRequest, "grant_type is required")
	case "client_credentials":
	case "authorization_code", "refresh_token", "password", "urn:ietf:params:oauth:grant-type:jwt-bearer":
		return TokenResponse{}, badRequest(oauthUnauthorizedClient, "this client may only use client_credentials")
	default:
		return TokenResponse{}, badRequest(oauthUnsupportedGrantType, "only client_credentials is supported")
	}
	granted := scopes
	if form.Has("scope") {
		req := strings.Fields(form.Get("scope"))
		if len(req) == 0 {
			return TokenResponse{}, badRequest(oauthInvalidScope, "scope is empty")
		}
		for _, sc := range req {
			if !slices.Contains(scopes, sc) {
				return TokenResponse{}, badRequest(oauthInvalidScope, "scope exceeds what the client may request")
			}
		}
		granted = slices.Compact(slices.Sorted(slices.Values(req)))
	}
	if !s.cfg.Faults.NoAssertionReplayCheck {
		dctx, cancel := durable(ctx)
		err := s.st.UseAssertion(dctx, clientID, a.JTI, a.Expiry.Add(assertion.Leeway))
		cancel()
		if errors.Is(err, store.ErrReplay) {
			s.auditEvent(ctx, AuditSignInRefused, map[string]any{"client_id": clientID, "kid": a.KeyID, "outcome": "assertion-replayed"})
			return TokenResponse{}, invalidClient("client assertion already used (jti)")
		}
		if err != nil {
			return TokenResponse{}, &tokenError{status: http.StatusServiceUnavailable, code: "temporarily_unavailable", desc: "try again"}
		}
	}
	subject := clientID
	if s.cfg.Faults.ServiceSubjectNotClient {
		subject = "client:" + clientID
	}
	tok, err := s.mint(ctx, grant{class: ClassService, subject: subject, clientID: clientID, scopes: granted})
	if err != nil {
		return TokenResponse{}, &tokenError{status: http.StatusServiceUnavailable, code: "temporarily_unavailable", desc: "try again"}
	}
	return tok, nil
}

// clientKey returns the client's registered, unrevoked, unexpired key kid.
func (s *Service) clientKey(ctx context.Context, clientID, kid string, now time.Time) (crypto.PublicKey, *tokenError) {
	keys, err := s.st.ClientKeys(ctx, clientID)
	if err != nil {
		return nil, &tokenError{status: http.StatusServiceUnavailable, code: "temporarily_unavailable", desc: "try again"}
	}
	for _, k := range keys {
		if k.KeyID != kid {
			continue
		}
		if !k.Revoked.IsZero() {
			return nil, invalidClient("client key revoked")
		}
		if !now.Before(k.Expires) {
			return nil, invalidClient("client key expired: register a new one")
		}
		key, err := jwk.ParseKey(k.JWK)
		if err != nil {
			return nil, invalidClient("client key unusable")
		}
		var raw any
		if err := key.Raw(&raw); err != nil {
			return nil, invalidClient("client key unusable")
		}
		return raw, nil
	}
	return nil, invalidClient("unknown client key (kid)")
}
