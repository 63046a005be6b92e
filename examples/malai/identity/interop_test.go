package identity_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/malai-sec/malai/examples/malai/identity"
	"github.com/malai-sec/malai/jwtverify"
)

// TestJWTVerifyInterop wires the identity service to the jwtverify
// middleware exactly as the other domains will: the ledger verifies every
// token again against the JWKS, user routes take user tokens and internal
// routes service tokens, and a key rotation does not break anything.
func TestJWTVerifyInterop(t *testing.T) {
	svc, err := identity.New(identity.Config{
		Issuer: "https://identity.malai.test",
		Argon2: identity.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	secret, err := svc.RegisterClient("worker", []string{"ledger:settle"})
	if err != nil {
		t.Fatal(err)
	}
	idSrv := httptest.NewServer(svc.Handler())
	defer idSrv.Close()

	v, err := jwtverify.New(jwtverify.Config{Issuers: []jwtverify.Issuer{{
		Issuer:     "https://identity.malai.test",
		JWKSURL:    idSrv.URL + identity.JWKSPath,
		Algorithms: []string{identity.Algorithm},
		Audiences:  []string{identity.AudienceUser, identity.AudienceService},
		Type:       identity.TokenType,
		ClassClaim: identity.ClaimTokenClass,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	<-v.Ready()

	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := jwtverify.FromContext(r.Context())
		_, _ = w.Write([]byte(c.Subject()))
	})
	mux := http.NewServeMux()
	mux.Handle("GET /balance", v.RequireUser("ledger:read")(ok))
	mux.Handle("POST /internal/settle", v.RequireService("ledger:settle")(ok))
	ledger := v.Handler(mux)

	post := func(path, ct, body string, basic ...string) identity.TokenResponse {
		t.Helper()
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, idSrv.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", ct)
		if len(basic) == 2 {
			req.SetBasicAuth(basic[0], basic[1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var tr identity.TokenResponse
		_ = json.NewDecoder(resp.Body).Decode(&tr)
		return tr
	}
	creds := `{"username":"alice","password":"Tr1cky-Harbour-Lantern"}`
	post("/v1/users", "application/json", creds)
	user := post("/v1/sessions", "application/json", creds).AccessToken
	form := url.Values{"grant_type": {"client_credentials"}}.Encode()
	service := post("/oauth2/token", "application/x-www-form-urlencoded", form, "worker", secret).AccessToken
	if user == "" || service == "" {
		t.Fatal("no tokens minted")
	}

	call := func(method, path string, tok identity.Secret) (int, string) {
		r := httptest.NewRequest(method, path, nil)
		r.Header.Set("Authorization", "Bearer "+tok.Reveal())
		w := httptest.NewRecorder()
		ledger.ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}
	tests := []struct {
		name, method, path string
		tok                identity.Secret
		status             int
		body               string
	}{
		{"user on user route", "GET", "/balance", user, 200, "user:alice"},
		{"service on internal route", "POST", "/internal/settle", service, 200, "worker"},
		{"user token cannot reach internal routes", "POST", "/internal/settle", user, 403, ""},
		{"service token cannot act as a user", "GET", "/balance", service, 403, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := call(tt.method, tt.path, tt.tok)
			if code != tt.status || tt.body != "" && body != tt.body {
				t.Fatalf("%s %s: %d %q", tt.method, tt.path, code, body)
			}
		})
	}

	// Rotation: tokens signed before and after it both pass (the previous
	// key stays published; the new key was published before it signed).
	if err := svc.RotateKey(); err != nil {
		t.Fatal(err)
	}
	fresh := post("/v1/sessions", "application/json", creds).AccessToken
	for name, tok := range map[string]identity.Secret{"pre-rotation": user, "post-rotation": fresh} {
		if code, _ := call("GET", "/balance", tok); code != 200 {
			t.Fatalf("%s token refused after rotation: %d", name, code)
		}
	}
}
