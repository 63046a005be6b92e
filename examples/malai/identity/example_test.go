package identity_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/malai-sec/malai/examples/malai/identity"
)

// The reference system runs the identity service behind the gateway, gives
// each component its own client, and lets every domain verify tokens
// against the JWKS.
func Example() {
	svc, err := identity.New(identity.Config{
		Issuer: "https://identity.malai.internal",
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	ledgerSecret, err := svc.RegisterClient("ledger", []string{"audit:append"})
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(svc.Handler())
	defer srv.Close()

	post := func(path, ct, body string, basic ...string) *http.Response {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", ct)
		if len(basic) == 2 {
			req.SetBasicAuth(basic[0], basic[1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		return resp
	}
	// A person signs up and signs in.
	resp := post("/v1/users", "application/json", `{"username":"alice","password":"Tr1cky-Harbour-Lantern"}`)
	fmt.Println("sign-up:", resp.StatusCode)
	resp = post("/v1/sessions", "application/json", `{"username":"alice","password":"Tr1cky-Harbour-Lantern"}`)
	var user identity.TokenResponse
	_ = json.NewDecoder(resp.Body).Decode(&user)
	resp.Body.Close()
	fmt.Println("sign-in:", resp.StatusCode, user.TokenType, user.ExpiresIn, "refresh cookie:", len(resp.Cookies()) == 1)

	// The ledger component gets a service token.
	form := url.Values{"grant_type": {"client_credentials"}}.Encode()
	resp = post("/oauth2/token", "application/x-www-form-urlencoded", form, "ledger", ledgerSecret)
	var service identity.TokenResponse
	_ = json.NewDecoder(resp.Body).Decode(&service)
	resp.Body.Close()
	fmt.Println("client credentials:", resp.StatusCode, service.Scope)

	// Any domain verifies against the published keys.
	set, err := jwk.Fetch(context.Background(), srv.URL+identity.JWKSPath)
	if err != nil {
		log.Fatal(err)
	}
	for _, tc := range []struct {
		tok      identity.Secret
		aud, cls string
	}{
		{user.AccessToken, identity.AudienceUser, identity.ClassUser},
		{service.AccessToken, identity.AudienceService, identity.ClassService},
		{service.AccessToken, identity.AudienceUser, identity.ClassUser}, // a service token posing as a user
	} {
		tok, err := jwt.Parse([]byte(tc.tok.Reveal()), jwt.WithKeySet(set), jwt.WithValidate(true),
			jwt.WithIssuer("https://identity.malai.internal"), jwt.WithAudience(tc.aud),
			jwt.WithClaimValue(identity.ClaimTokenClass, tc.cls))
		if err != nil {
			fmt.Println("refused as", tc.cls)
			continue
		}
		fmt.Println("verified:", tok.Subject(), tc.cls)
	}
	// Output:
	// sign-up: 201
	// sign-in: 200 Bearer 300 refresh cookie: true
	// client credentials: 200 audit:append
	// verified: user:alice user
	// verified: ledger service
	// refused as user
}

// The security page promises 12+ characters with mixed classes; NIST SP
// 800-63B-4 asks for 15+ and forbids composition rules. Both refuse
// compromised passwords.
func ExampleConfig_passwordPolicy() {
	for _, policy := range []identity.PasswordPolicy{identity.PolicyPage, identity.PolicyNIST} {
		svc, err := identity.New(identity.Config{
			Issuer:         "https://identity.malai.internal",
			PasswordPolicy: policy,
			Argon2:         identity.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}, // example speed only
			Logger:         slog.New(slog.DiscardHandler),
		})
		if err != nil {
			log.Fatal(err)
		}
		for i, pw := range []string{"Harb0ur-Lamp", "quiet harbour lantern", "Password123!"} {
			err := svc.CreateUser(context.Background(), fmt.Sprintf("user%d", i), pw)
			var pe *identity.PolicyError
			switch {
			case err == nil:
				fmt.Printf("%-22q accepted\n", pw)
			case errors.As(err, &pe):
				fmt.Printf("%-22q refused: %v\n", pw, pe.Violations)
			case errors.Is(err, identity.ErrPasswordCompromised):
				fmt.Printf("%-22q refused: compromised\n", pw)
			}
		}
		_ = svc.Close()
	}
	// Output:
	// "Harb0ur-Lamp"         accepted
	// "quiet harbour lantern" refused: [missing-uppercase missing-digit]
	// "Password123!"         refused: compromised
	// "Harb0ur-Lamp"         refused: [too-short]
	// "quiet harbour lantern" accepted
	// "Password123!"         refused: [too-short]
}
