package jwtverify_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/jwtverify/devissuer"
)

const issuer = "https://identity.malai.test"

// identity stands in for the reference system's identity service: a
// development issuer minting RFC 9068 access tokens, serving its JWKS.
type identity struct {
	iss  *devissuer.Issuer
	jwks *httptest.Server
}

func newIdentity() *identity {
	iss, err := devissuer.New(devissuer.Config{Issuer: issuer, KeyID: "id-2026-01"})
	if err != nil {
		log.Fatal(err)
	}
	return &identity{iss: iss, jwks: httptest.NewServer(iss)}
}

func (id *identity) mint(sub, clientID string, service bool, scope string) string {
	tok, err := id.iss.Mint(devissuer.Token{Subject: sub, ClientID: clientID, Service: service,
		Audience: []string{"ledger"}, Scopes: []string{scope}})
	if err != nil {
		log.Fatal(err)
	}
	return tok
}

// The ledger verifies every token again with its own Verifier against the
// identity service's JWKS: user routes take user tokens, internal routes
// service tokens with a scope.
func Example() {
	id := newIdentity()
	defer id.jwks.Close()

	v, err := jwtverify.New(jwtverify.Config{
		Issuers: []jwtverify.Issuer{{
			Issuer:    issuer,
			JWKSURL:   id.jwks.URL, // https in production
			Audiences: []string{"ledger"},
		}},
		CacheSize: 10000,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()
	<-v.Ready()

	balance := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := jwtverify.FromContext(r.Context())
		fmt.Fprintf(w, "balance of %s", c.Subject())
	})
	settle := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := jwtverify.FromContext(r.Context())
		fmt.Fprintf(w, "settled by %s", c.ClientID())
	})
	mux := http.NewServeMux()
	mux.Handle("GET /balance", v.RequireUser("ledger:read")(balance))
	mux.Handle("POST /internal/settle", v.RequireService("ledger:settle")(settle))
	ledger := v.Handler(mux)

	userTok := id.mint("alice", "web", false, "ledger:read")
	workerTok := id.mint("", "worker", true, "ledger:settle")

	call := func(method, path, tok string) {
		r := httptest.NewRequest(method, path, nil)
		if tok != "" {
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		w := httptest.NewRecorder()
		ledger.ServeHTTP(w, r)
		if w.Code == http.StatusOK {
			fmt.Println(w.Code, w.Body.String())
		} else {
			fmt.Println(w.Code, w.Header().Get("WWW-Authenticate"))
		}
	}
	call("GET", "/balance", userTok)
	call("POST", "/internal/settle", workerTok)
	call("POST", "/internal/settle", userTok) // a user token on an internal route
	call("GET", "/balance", "")
	// Output:
	// 200 balance of alice
	// 200 settled by worker
	// 403 Bearer error="insufficient_scope", scope="ledger:settle"
	// 401 Bearer
}

// A queue worker verifies the token that travelled with a job, without HTTP.
func ExampleVerifier_Verify() {
	id := newIdentity()
	defer id.jwks.Close()
	v, err := jwtverify.New(jwtverify.Config{Issuers: []jwtverify.Issuer{{
		Issuer: issuer, JWKSURL: id.jwks.URL, Audiences: []string{"ledger"},
	}}})
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()
	<-v.Ready()

	tok := id.mint("", "worker", true, "ledger:settle")
	c, err := v.Verify(context.Background(), tok)
	if err != nil {
		fmt.Println("refused:", jwtverify.ReasonOf(err))
		return
	}
	err = jwtverify.Requirement{Class: jwtverify.ClassService, Scopes: []string{"ledger:settle"}}.Check(c)
	fmt.Println(c.Subject(), c.Class(), c.Scopes(), err)

	_, err = v.Verify(context.Background(), tok[:len(tok)-4]+"AAAA")
	fmt.Println("tampered:", jwtverify.ReasonOf(err))
	// Output:
	// worker service [ledger:settle] <nil>
	// tampered: bad_signature
}
