package identity

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func basic(id, secret string) reqOpt {
	return func(r *http.Request) {
		r.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString(
			[]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret))))
	}
}

const formCT = "application/x-www-form-urlencoded"

// clientToken runs a successful client-credentials grant.
func (h *harness) clientToken(id, secret, scope string) Secret {
	h.t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}}
	if scope != "" {
		form.Set("scope", scope)
	}
	w := h.do(http.MethodPost, "/oauth2/token", formCT, form.Encode(), basic(id, secret))
	if w.Code != 200 {
		h.t.Fatalf("client credentials: %d %s", w.Code, w.Body)
	}
	if w.Header().Get("Pragma") != "no-cache" {
		h.t.Fatal("token response without Pragma: no-cache")
	}
	return decodeToken(h.t, w).AccessToken
}

func TestClientCredentialsSuccess(t *testing.T) {
	h := newHarness(t, nil)
	ledger, err := h.svc.RegisterClient("ledger", []string{"audit:append", "accounts:read"})
	if err != nil {
		t.Fatal(err)
	}
	worker, _ := h.svc.RegisterClient("worker", []string{"transfers:run"})
	if len(ledger) < 43 || ledger == worker {
		t.Fatal("client secrets too short or shared")
	}
	tests := []struct {
		name, id, secret, scope, want string
	}{
		{"all allowed scopes by default", "ledger", ledger, "", "accounts:read audit:append"},
		{"subset", "ledger", ledger, "audit:append", "audit:append"},
		{"other component", "worker", worker, "transfers:run", "transfers:run"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := h.clientToken(tt.id, tt.secret, tt.scope)
			claims, err := h.verifyWithJWKS(tok, AudienceService, ClassService)
			if err != nil {
				t.Fatalf("service token does not verify: %v", err)
			}
			cid, _ := claims.Get(ClaimClientID)
			scope, _ := claims.Get(ClaimScope)
			if claims.Subject() != tt.id || cid != tt.id || scope != tt.want {
				t.Fatalf("sub %q client_id %v scope %v", claims.Subject(), cid, scope)
			}
			if _, ok := claims.Get(ClaimAuthTime); ok {
				t.Fatal("service token carries user-only claims")
			}
			// A compromised internal client cannot pass as a user.
			if _, err := h.verifyWithJWKS(tok, AudienceUser, ClassUser); err == nil {
				t.Fatal("service token verified as a user token")
			}
		})
	}
}

func TestClientCredentialsErrors(t *testing.T) {
	h := newHarness(t, nil)
	secret, _ := h.svc.RegisterClient("ledger", []string{"audit:append"})
	revokedSecret, _ := h.svc.RegisterClient("old-worker", []string{"transfers:run"})
	if err := h.svc.RevokeClient("old-worker"); err != nil {
		t.Fatal(err)
	}
	grant := "grant_type=client_credentials"
	tests := []struct {
		name   string
		ct     string
		body   string
		auth   reqOpt
		status int
		code   string
	}{
		{"no authentication", formCT, grant, nil, 401, "invalid_client"},
		{"wrong secret", formCT, grant, basic("ledger", secret+"x"), 401, "invalid_client"},
		{"unknown client", formCT, grant, basic("nobody", secret), 401, "invalid_client"},
		{"revoked client", formCT, grant, basic("old-worker", revokedSecret), 401, "invalid_client"},
		{"secret in body", formCT, grant + "&client_id=ledger&client_secret=" + secret, nil, 400, "invalid_request"},
		{"missing grant_type", formCT, "scope=audit:append", basic("ledger", secret), 400, "invalid_request"},
		{"password grant", formCT, "grant_type=password&username=a&password=b", basic("ledger", secret), 400, "unauthorized_client"},
		{"unknown grant", formCT, "grant_type=urn:x", basic("ledger", secret), 400, "unsupported_grant_type"},
		{"scope beyond client", formCT, grant + "&scope=transfers:run", basic("ledger", secret), 400, "invalid_scope"},
		{"empty scope", formCT, grant + "&scope=", basic("ledger", secret), 400, "invalid_scope"},
		{"repeated parameter", formCT, grant + "&" + grant, basic("ledger", secret), 400, "invalid_request"},
		{"json body", "application/json", `{"grant_type":"client_credentials"}`, basic("ledger", secret), 400, "invalid_request"},
		{"client_id mismatch", formCT, grant + "&client_id=worker", basic("ledger", secret), 400, "invalid_request"},
		{"oversized body", formCT, grant + "&pad=" + strings.Repeat("a", 5000), basic("ledger", secret), 400, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []reqOpt
			if tt.auth != nil {
				opts = append(opts, tt.auth)
			}
			w := h.do(http.MethodPost, "/oauth2/token", tt.ct, tt.body, opts...)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			var e TokenError
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error != tt.code {
				t.Fatalf("error %q (%v), want %q", e.Error, err, tt.code)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("content type %q", ct)
			}
			if tt.status == 401 && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Basic") {
				t.Fatal("401 without WWW-Authenticate: Basic")
			}
			if strings.Contains(w.Body.String(), secret) {
				t.Fatal("error echoes the secret")
			}
		})
	}
}

func TestRegisterClient(t *testing.T) {
	h := newHarness(t, nil)
	if _, err := h.svc.RegisterClient("ledger", []string{"audit:append"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		id     string
		scopes []string
		want   error
	}{
		{"duplicate", "ledger", []string{"a"}, ErrClientExists},
		{"bad id", "Led Ger", []string{"a"}, ErrInvalidClient},
		{"user client id", DefaultUserClientID, []string{"a"}, ErrInvalidClient},
		{"no scopes", "gateway", nil, ErrInvalidClient},
		{"bad scope", "gateway", []string{"a b"}, ErrInvalidClient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := h.svc.RegisterClient(tt.id, tt.scopes); !errors.Is(err, tt.want) {
				t.Fatalf("RegisterClient: %v, want %v", err, tt.want)
			}
		})
	}
	if err := h.svc.RevokeClient("nobody"); !errors.Is(err, ErrInvalidClient) {
		t.Fatalf("RevokeClient(unknown): %v", err)
	}
}
