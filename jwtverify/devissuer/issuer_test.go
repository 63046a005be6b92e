package devissuer_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/jwtverify/devissuer"
)

func decode(t *testing.T, tok string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("%d segments", len(parts))
	}
	for i, dst := range []*map[string]any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	return header, claims
}

func TestShapes(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	for _, tc := range []struct {
		shape       devissuer.Shape
		iss         string
		typ, alg    string
		life        time.Duration
		user, svc   map[string]any // claims that must be present (subset)
		absentInSvc []string
	}{
		{devissuer.RFC9068, "https://id.example", "at+jwt", "ES256", 5 * time.Minute,
			map[string]any{"sub": "alice", "client_id": "web", "scope": "a b", "roles": []any{"r"}},
			map[string]any{"sub": "worker", "client_id": "worker"}, nil},
		{devissuer.Auth0, "https://t.example.auth0.com/", "JWT", "RS256", 24 * time.Hour,
			map[string]any{"sub": "auth0|alice", "azp": "web", "scope": "a b", "permissions": []any{"r"}},
			map[string]any{"sub": "worker@clients", "azp": "worker", "gty": "client-credentials"}, []string{"client_id"}},
		{devissuer.Keycloak, "https://kc.example/realms/malai", "JWT", "RS256", 5 * time.Minute,
			map[string]any{"sub": "alice", "azp": "web", "typ": "Bearer", "realm_access": map[string]any{"roles": []any{"r"}}},
			map[string]any{"client_id": "worker", "azp": "worker", "preferred_username": "service-account-worker"}, []string{"sid"}},
		{devissuer.EntraID, "https://login.microsoftonline.com/11111111-2222-4333-8444-555555555555/v2.0", "JWT", "RS256", time.Hour,
			map[string]any{"sub": "alice", "azp": "web", "scp": "a b", "roles": []any{"r"}, "ver": "2.0",
				"tid": "11111111-2222-4333-8444-555555555555"},
			map[string]any{"azp": "worker"}, []string{"scp"}},
	} {
		t.Run(tc.shape.String(), func(t *testing.T) {
			iss, err := devissuer.New(devissuer.Config{Issuer: tc.iss, Shape: tc.shape, Now: clock})
			if err != nil {
				t.Fatal(err)
			}
			sub := "alice"
			if tc.shape == devissuer.Auth0 {
				sub = "auth0|alice"
			}
			tok, err := iss.Mint(devissuer.Token{Subject: sub, Audience: []string{"api"}, Scopes: []string{"a", "b"}, Roles: []string{"r"}})
			if err != nil {
				t.Fatal(err)
			}
			h, c := decode(t, tok)
			if h["typ"] != tc.typ || h["alg"] != tc.alg || h["kid"] != devissuer.DefaultKeyID {
				t.Fatalf("header %v", h)
			}
			if c["iss"] != tc.iss || c["aud"] != "api" || c["iat"] != float64(now.Unix()) || c["exp"] != float64(now.Add(tc.life).Unix()) {
				t.Fatalf("registered claims %v", c)
			}
			for k, want := range tc.user {
				if diff := cmp.Diff(want, c[k]); diff != "" {
					t.Errorf("user %s: %s", k, diff)
				}
			}
			tok, err = iss.Mint(devissuer.Token{ClientID: "worker", Service: true, Audience: []string{"api", "other"}})
			if err != nil {
				t.Fatal(err)
			}
			_, c = decode(t, tok)
			for k, want := range tc.svc {
				if diff := cmp.Diff(want, c[k]); diff != "" {
					t.Errorf("service %s: %s", k, diff)
				}
			}
			for _, k := range tc.absentInSvc {
				if _, ok := c[k]; ok {
					t.Errorf("service token has %s", k)
				}
			}
			if tc.shape == devissuer.EntraID && (c["sub"] == nil || c["sub"] != c["oid"]) {
				t.Errorf("app-only sub %v oid %v", c["sub"], c["oid"])
			}
			if diff := cmp.Diff([]any{"api", "other"}, c["aud"]); diff != "" {
				t.Errorf("aud: %s", diff)
			}
		})
	}
}

// RFC 9068 tokens from the issuer pass jwtverify's strict default, fetched
// over HTTP, and survive a key rotation until the old key is retired.
func TestVerifiesAndRotates(t *testing.T) {
	iss, err := devissuer.New(devissuer.Config{Issuer: "https://id.example"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(iss)
	defer srv.Close()
	v, err := jwtverify.New(jwtverify.Config{Issuers: []jwtverify.Issuer{{Issuer: "https://id.example", JWKSURL: srv.URL, Audiences: []string{"api"}, Cooldown: time.Nanosecond}}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	old, err := iss.Mint(devissuer.Token{Subject: "alice", Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := v.Verify(context.Background(), old); err != nil || c.Class() != jwtverify.ClassUser {
		t.Fatalf("%v %v", c, err)
	}
	k2, err := devissuer.NewKey("EdDSA", "dev-2")
	if err != nil {
		t.Fatal(err)
	}
	if err := iss.Rotate(k2); err != nil {
		t.Fatal(err)
	}
	if err := iss.Rotate(k2); err == nil {
		t.Fatal("a key id was published twice")
	}
	fresh, _ := iss.Mint(devissuer.Token{ClientID: "worker", Service: true, Audience: []string{"api"}})
	if c, err := v.Verify(context.Background(), fresh); err != nil || c.Class() != jwtverify.ClassService || c.KeyID() != "dev-2" {
		t.Fatalf("after rotation: %v %v", c, err)
	}
	if _, err := v.Verify(context.Background(), old); err != nil {
		t.Fatalf("old key dropped before retirement: %v", err)
	}
	if err := iss.Retire("dev-2"); err == nil {
		t.Fatal("retired the signing key")
	}
	if err := iss.Retire(devissuer.DefaultKeyID); err != nil {
		t.Fatal(err)
	}
	var doc struct{ Keys []map[string]string }
	if err := json.Unmarshal(iss.JWKS(), &doc); err != nil || len(doc.Keys) != 1 || doc.Keys[0]["kid"] != "dev-2" {
		t.Fatalf("JWKS after retirement: %s", iss.JWKS())
	}
	resp, err := http.Post(srv.URL, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
}

func TestErrors(t *testing.T) {
	if _, err := devissuer.New(devissuer.Config{}); !errors.Is(err, devissuer.ErrInvalidConfig) {
		t.Fatalf("no issuer: %v", err)
	}
	if _, err := devissuer.NewKey("HS256", ""); !errors.Is(err, devissuer.ErrAlgorithm) {
		t.Fatalf("HS256: %v", err)
	}
	iss, _ := devissuer.New(devissuer.Config{Issuer: "https://id.example"})
	for _, tok := range []devissuer.Token{
		{Subject: "alice"},                         // no audience
		{Audience: []string{"api"}},                // no subject
		{Service: true, Audience: []string{"api"}}, // no client
	} {
		if _, err := iss.Mint(tok); !errors.Is(err, devissuer.ErrInvalidConfig) {
			t.Errorf("%+v: %v", tok, err)
		}
	}
	k, _ := devissuer.NewKey("ES256", "")
	k.Alg = "ES384" // a header naming another algorithm than the key's
	if _, err := k.Sign(k.Header("JWT"), map[string]any{}); !errors.Is(err, devissuer.ErrAlgorithm) {
		t.Fatalf("mismatched key: %v", err)
	}
}
