package jwtverify_test

import (
	"context"
	"fmt"
	"log"
	"net/http/httptest"
	"strings"

	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/jwtverify/devissuer"
)

// provider starts a development issuer shaped like a real identity
// provider and serves its JWKS.
func provider(iss string, shape devissuer.Shape) (*devissuer.Issuer, *httptest.Server) {
	id, err := devissuer.New(devissuer.Config{Issuer: iss, Shape: shape})
	if err != nil {
		log.Fatal(err)
	}
	return id, httptest.NewServer(id)
}

func mint(id *devissuer.Issuer, t devissuer.Token) string {
	tok, err := id.Mint(t)
	if err != nil {
		log.Fatal(err)
	}
	return tok
}

func show(v *jwtverify.Verifier, tok string) {
	c, err := v.Verify(context.Background(), tok)
	if err != nil {
		fmt.Println("refused:", jwtverify.ReasonOf(err))
		return
	}
	fmt.Println(c.Class(), c.Subject(), c.ClientID(), c.Scopes(), c.Roles())
}

// Auth0 access tokens have typ "JWT", name the client in "azp", mark
// machine-to-machine tokens with "gty": "client-credentials" and live 24
// hours: the OIDC profile takes them as they are. With RBAC enabled in the
// API's settings, Auth0 lists permissions in "permissions".
func ExampleIssuer_auth0() {
	const iss = "https://malai-dev.eu.auth0.com/" // Auth0 issuers end with a slash
	id, jwks := provider(iss, devissuer.Auth0)
	defer jwks.Close()

	v, err := jwtverify.New(jwtverify.Config{Issuers: []jwtverify.Issuer{{
		Issuer:     iss,
		JWKSURL:    jwks.URL, // https://malai-dev.eu.auth0.com/.well-known/jwks.json
		Audiences:  []string{"https://api.malai.example"},
		Profile:    jwtverify.ProfileOIDC,
		Algorithms: []string{"RS256"},
		RolesClaim: []string{"permissions"},
	}}})
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()

	show(v, mint(id, devissuer.Token{Subject: "auth0|alice", ClientID: "spa", Audience: []string{"https://api.malai.example"},
		Scopes: []string{"openid", "transfers:write"}, Roles: []string{"transfers:write"}}))
	show(v, mint(id, devissuer.Token{ClientID: "worker", Service: true, Audience: []string{"https://api.malai.example"}}))
	show(v, mint(id, devissuer.Token{Subject: "auth0|alice", ClientID: "spa", Audience: []string{"spa"}})) // an ID token's audience
	// Output:
	// user auth0|alice spa [openid transfers:write] [transfers:write]
	// service worker@clients worker [] []
	// refused: wrong_audience
}

// Keycloak access tokens have typ "JWT", put realm roles under
// "realm_access.roles", and a service account's token carries
// "client_id" (which user tokens do not), so that is the service marker
// Classify checks.
func ExampleIssuer_keycloak() {
	const iss = "https://keycloak.malai.example/realms/malai"
	id, jwks := provider(iss, devissuer.Keycloak)
	defer jwks.Close()

	v, err := jwtverify.New(jwtverify.Config{Issuers: []jwtverify.Issuer{{
		Issuer:     iss,
		JWKSURL:    jwks.URL, // .../realms/malai/protocol/openid-connect/certs
		Audiences:  []string{"ledger-api"},
		Profile:    jwtverify.ProfileOIDC,
		RolesClaim: []string{"realm_access", "roles"},
		Classify: func(c *jwtverify.Claims) jwtverify.Class {
			if _, ok := c.Claim("client_id"); ok {
				return jwtverify.ClassService
			}
			return jwtverify.ClassUser
		},
	}}})
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()

	show(v, mint(id, devissuer.Token{Subject: "0b7c3f5e-alice", ClientID: "web", Audience: []string{"ledger-api", "account"},
		Scopes: []string{"profile", "email"}, Roles: []string{"teller"}}))
	show(v, mint(id, devissuer.Token{ClientID: "worker", Service: true, Audience: []string{"ledger-api"}}))
	// Output:
	// user 0b7c3f5e-alice web [email profile] [teller]
	// service ddfe53b1-de50-c4af-d252-edcd4c2da388 worker [] []
}

// Microsoft Entra ID (v2.0 tokens) names the client in "azp", delegated
// scopes in "scp" and app roles in "roles"; an app-only token has no "scp"
// and its "sub" equals its "oid", which the OIDC profile recognises as a
// service token. Tokens live 60-90 minutes.
func ExampleIssuer_entraID() {
	const tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	iss := "https://login.microsoftonline.com/" + tenant + "/v2.0"
	id, jwks := provider(iss, devissuer.EntraID)
	defer jwks.Close()

	v, err := jwtverify.New(jwtverify.Config{Issuers: []jwtverify.Issuer{{
		Issuer:    iss,
		JWKSURL:   jwks.URL, // https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys
		Audiences: []string{"api://malai-ledger"},
		Profile:   jwtverify.ProfileOIDC,
	}}})
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()

	show(v, mint(id, devissuer.Token{Subject: "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ", ClientID: "4a1aa1d5-c567-49d0-ad0b-cd957a47f842",
		Audience: []string{"api://malai-ledger"}, Scopes: []string{"Transfers.Write"}}))
	c, err := v.Verify(context.Background(), mint(id, devissuer.Token{ClientID: "4a1aa1d5-c567-49d0-ad0b-cd957a47f842", Service: true,
		Audience: []string{"api://malai-ledger"}, Roles: []string{"Ledger.Settle"}}))
	if err != nil {
		log.Fatal(err)
	}
	var entra struct {
		Tenant string `json:"tid"`
		Object string `json:"oid"`
	}
	if err := c.Decode(&entra); err != nil {
		log.Fatal(err)
	}
	fmt.Println(c.Class(), c.Roles(), entra.Tenant == tenant, strings.EqualFold(entra.Object, c.Subject()))
	// Output:
	// user AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ 4a1aa1d5-c567-49d0-ad0b-cd957a47f842 [Transfers.Write] []
	// service [Ledger.Settle] true true
}
