package jwttest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/malai-sec/malai/jwtverify/jwttest"
)

// Tokens minted here must verify with an independent implementation (jwx)
// against the JWKS the server publishes.
func TestMintVerifiesWithJWX(t *testing.T) {
	for _, alg := range []string{"ES256", "EdDSA", "RS256"} {
		t.Run(alg, func(t *testing.T) {
			k := jwttest.NewKey(t, alg, "k-"+alg)
			srv := jwttest.NewServer(t, k)
			resp, err := http.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			doc, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			set, err := jwk.Parse(doc)
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			tok := k.Mint(t, jwttest.ServiceClaims("https://id.test", "ledger", "worker", now))
			parsed, err := jwt.Parse([]byte(tok), jwt.WithKeySet(set), jwt.WithValidate(true), jwt.WithAudience("ledger"))
			if err != nil {
				t.Fatal(err)
			}
			if parsed.Subject() != "worker" || srv.Hits() != 1 {
				t.Fatalf("sub %q hits %d", parsed.Subject(), srv.Hits())
			}
			if class, _ := parsed.Get("token_class"); class != "service" {
				t.Fatalf("token_class %v", class)
			}
			srv.SetStatus(http.StatusServiceUnavailable)
			if resp, err := http.Get(srv.URL); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("SetStatus: %v %v", resp, err)
			}
			var m map[string]any
			_ = json.Unmarshal(doc, &m)
			if len(m["keys"].([]any)) != 1 {
				t.Fatal("published keys")
			}
		})
	}
}
