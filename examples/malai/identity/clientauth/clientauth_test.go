package clientauth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/malai-sec/malai/examples/malai/identity/clientauth"
)

// fakeIdentity is the server side just far enough to check what the
// client sends: metadata, registration, and token requests whose
// assertion it verifies with the registered key.
type fakeIdentity struct {
	t      *testing.T
	mu     sync.Mutex
	keys   map[string]*ecdsa.PublicKey
	jtis   map[string]bool
	tokens int
	refuse bool
	life   time.Duration
	now    func() time.Time
}

func (f *fakeIdentity) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.URL.Path {
	case clientauth.MetadataPath:
		_ = json.NewEncoder(w).Encode(map[string]string{"token_endpoint": "https://malai.test/oauth2/token"})
	case clientauth.ClientsPath:
		var body struct{ JWK json.RawMessage }
		if json.NewDecoder(r.Body).Decode(&body) != nil {
			w.WriteHeader(400)
			return
		}
		if strings.Contains(string(body.JWK), `"d"`) {
			f.t.Error("the private key left the client")
		}
		k, err := jwk.ParseKey(body.JWK)
		if err != nil {
			w.WriteHeader(400)
			return
		}
		var pub ecdsa.PublicKey
		if err := k.Raw(&pub); err != nil {
			w.WriteHeader(400)
			return
		}
		f.keys[k.KeyID()] = &pub
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{"client_id": "worker", "kid": k.KeyID(), "expires_at": f.now().Add(f.life)})
	case clientauth.TokenPath:
		b, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(b))
		if r.Header.Get("Authorization") != "" || form.Has("client_secret") || form.Get("client_assertion_type") != clientauth.AssertionType {
			f.t.Error("the client sent a secret or no assertion type")
		}
		parts := strings.Split(form.Get("client_assertion"), ".")
		hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
		cb, _ := base64.RawURLEncoding.DecodeString(parts[1])
		sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
		var h map[string]string
		var c map[string]any
		_ = json.Unmarshal(hb, &h)
		_ = json.Unmarshal(cb, &c)
		pub := f.keys[h["kid"]]
		d := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
		if pub == nil || len(sig) != 64 || !ecdsa.Verify(pub, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
			f.t.Error("assertion does not verify with the registered key")
		}
		if h["typ"] != clientauth.AssertionTyp || c["iss"] != "worker" || c["sub"] != "worker" || c["aud"] != "https://malai.test/oauth2/token" {
			f.t.Errorf("assertion header %v claims %v", h, c)
		}
		if exp, iat := c["exp"].(float64), c["iat"].(float64); exp-iat > 60 || exp <= iat {
			f.t.Errorf("assertion lifetime %v", exp-iat)
		}
		jti := c["jti"].(string)
		if f.jtis[jti] {
			f.t.Error("a jti was sent twice")
		}
		f.jtis[jti] = true
		if f.refuse {
			w.WriteHeader(401)
			_, _ = w.Write([]byte(`{"error":"invalid_client","error_description":"client key revoked"}`))
			return
		}
		f.tokens++
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "tok", "token_type": "Bearer", "expires_in": 300})
	default:
		w.WriteHeader(404)
	}
}

func TestSource(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	f := &fakeIdentity{t: t, keys: map[string]*ecdsa.PublicKey{}, jtis: map[string]bool{}, life: 24 * time.Hour, now: clock}
	srv := httptest.NewServer(f)
	defer srv.Close()
	src, err := clientauth.New(context.Background(), clientauth.Config{IdentityURL: srv.URL, HTTPClient: srv.Client(), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if src.ClientID() != "worker" {
		t.Fatalf("client id %q", src.ClientID())
	}
	first := src.KeyID()
	for range 3 {
		if _, err := src.Token(); err != nil {
			t.Fatal(err)
		}
	}
	if f.tokens != 1 {
		t.Fatalf("%d token requests for one valid token", f.tokens)
	}
	now = now.Add(5 * time.Minute)
	if _, err := src.Token(); err != nil || f.tokens != 2 {
		t.Fatalf("an expired token was not renewed: %v, %d requests", err, f.tokens)
	}
	// Half the registration later, the task re-keys.
	now = now.Add(12 * time.Hour)
	if _, err := src.Token(); err != nil {
		t.Fatal(err)
	}
	if src.KeyID() == first || len(f.keys) != 2 {
		t.Fatal("no new key after half the registration")
	}
	// A refusal is reported, not papered over by a silent re-registration.
	f.refuse = true
	now = now.Add(5 * time.Minute)
	keys := len(f.keys)
	if _, err := src.Token(); !errors.Is(err, clientauth.ErrRefused) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("refusal: %v", err)
	}
	if len(f.keys) != keys {
		t.Fatal("a refused task registered a new key by itself")
	}
}
