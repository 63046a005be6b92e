package jwttest_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/jwtverify/devissuer"
	"github.com/malai-sec/malai/jwtverify/jwttest"
)

// Tokens minted here verify against the JWKS the server publishes, for
// every algorithm; the server's status can be changed. (The interop module
// checks the same tokens with an independent implementation.)
func TestMintVerifies(t *testing.T) {
	for _, alg := range devissuer.Algorithms() {
		t.Run(alg, func(t *testing.T) {
			k := jwttest.NewKey(t, alg, "k-"+alg)
			srv := jwttest.NewServer(t, k)
			resp, err := http.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			doc, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var m struct{ Keys []map[string]string }
			if err := json.Unmarshal(doc, &m); err != nil || len(m.Keys) != 1 || m.Keys[0]["kid"] != "k-"+alg || m.Keys[0]["alg"] != alg {
				t.Fatalf("published %s (%v)", doc, err)
			}
			v, err := jwtverify.New(jwtverify.Config{Issuers: []jwtverify.Issuer{{
				Issuer: "https://id.test", Keys: doc, Audiences: []string{"ledger"}, Algorithms: []string{alg},
			}}})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			tok := k.Mint(t, jwttest.ServiceClaims("https://id.test", "ledger", "worker", time.Now()))
			c, err := v.Verify(context.Background(), tok)
			if err != nil {
				t.Fatal(err)
			}
			if c.Subject() != "worker" || c.Class() != jwtverify.ClassService || srv.Hits() != 1 {
				t.Fatalf("sub %q class %v hits %d", c.Subject(), c.Class(), srv.Hits())
			}
			srv.SetStatus(http.StatusServiceUnavailable)
			if resp, err := http.Get(srv.URL); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("SetStatus: %v %v", resp, err)
			}
		})
	}
}
