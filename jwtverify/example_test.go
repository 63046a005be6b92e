package jwtverify_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/malai-sec/malai/jwtverify"
)

const issuer = "https://identity.malai.test"

// identity stands in for the reference system's identity service: it holds
// a signing key, serves its JWKS and mints RFC 9068 access tokens with jwx.
type identity struct {
	key  jwk.Key
	jwks *httptest.Server
}

func newIdentity() *identity {
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	key, _ := jwk.FromRaw(raw)
	_ = key.Set(jwk.KeyIDKey, "id-2026-01")
	_ = key.Set(jwk.AlgorithmKey, jwa.ES256)
	pub, _ := jwk.PublicKeyOf(key)
	_ = pub.Set(jwk.KeyUsageKey, jwk.ForSignature)
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	doc, _ := json.Marshal(set)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "max-age=300")
		_, _ = w.Write(doc)
	}))
	return &identity{key: key, jwks: srv}
}

func (id *identity) mint(sub, clientID, class, scope string) string {
	now := time.Now()
	tok, err := jwt.NewBuilder().Issuer(issuer).Audience([]string{"ledger"}).Subject(sub).
		IssuedAt(now).Expiration(now.Add(5*time.Minute)).JwtID("j-"+sub).
		Claim("client_id", clientID).Claim("token_class", class).Claim("scope", scope).Build()
	if err != nil {
		log.Fatal(err)
	}
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.TypeKey, "at+jwt")
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, id.key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		log.Fatal(err)
	}
	return string(signed)
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

	userTok := id.mint("alice", "web", "user", "ledger:read")
	workerTok := id.mint("worker", "worker", "service", "ledger:settle")

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

	tok := id.mint("worker", "worker", "service", "ledger:settle")
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
