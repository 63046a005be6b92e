package identity_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	auditmem "github.com/malai-sec/malai/auditlog/memstore"
	"github.com/malai-sec/malai/examples/malai/identity"
	"github.com/malai-sec/malai/examples/malai/identity/clientauth"
	"github.com/malai-sec/malai/examples/malai/identity/store/boltstore"
	"github.com/malai-sec/malai/keyring"
)

// The identity service on its embedded store: a person signs up and signs
// in (with the argon2id cost lowered for the example), and the worker
// component obtains a service token with its own key, no secret shared.
func Example() {
	dir, _ := os.MkdirTemp("", "identity-example")
	defer os.RemoveAll(dir)
	st, err := boltstore.Open(dir, 0)
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	k, _ := keyring.NewKey()
	ring, _ := keyring.NewRing("k1", map[string]keyring.Key{"k1": k})
	skey, _, _ := note.GenerateKey(rand.Reader, "example/identity-audit")
	signer, _ := note.NewSigner(skey)
	audit, err := auditlog.New(auditlog.Config{Store: auditmem.New(), Origin: "example/identity-audit", Signers: []note.Signer{signer}, Ring: ring})
	if err != nil {
		log.Fatal(err)
	}
	defer audit.Close()

	svc, err := identity.New(identity.Config{
		Issuer: "https://malai.example",
		Store:  st, Ring: ring, Audit: audit,
		Argon2:  identity.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1},
		Clients: []identity.Client{{ID: "worker", Scopes: []string{"ledger:transfer"}}},
		// In the reference system: the name in the caller's verified
		// client certificate.
		PeerComponent: func(r *http.Request) string { return r.Header.Get("X-Example-Peer") },
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	srv := httptest.NewServer(svc.Handler())
	defer srv.Close()

	post := func(path, body string) *http.Response {
		resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			log.Fatal(err)
		}
		return resp
	}
	resp := post("/v1/users", `{"username":"alice","password":"Tr1cky-Harbour-Lantern"}`)
	var created struct{ Sub string }
	_ = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	fmt.Println("sign-up:", resp.StatusCode, "opaque subject:", !strings.Contains(created.Sub, "alice"))
	resp = post(identity.SignInPath, `{"username":"alice","password":"Tr1cky-Harbour-Lantern"}`)
	resp.Body.Close()
	fmt.Println("sign-in:", resp.StatusCode, "cookies:", len(resp.Cookies()))

	worker := &http.Client{Transport: peer{"worker"}}
	src, err := clientauth.New(context.Background(), clientauth.Config{IdentityURL: srv.URL, HTTPClient: worker})
	if err != nil {
		log.Fatal(err)
	}
	tok, err := src.Token()
	fmt.Println("service token:", err == nil && tok.AccessToken != "", "client:", src.ClientID())
	// Output:
	// sign-up: 201 opaque subject: true
	// sign-in: 200 cookies: 2
	// service token: true client: worker
}

type peer struct{ name string }

func (p peer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Example-Peer", p.name)
	return http.DefaultTransport.RoundTrip(r)
}
