package identity

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/malai-sec/malai/examples/malai/identity/clientauth"
)

func TestFaultServiceSubjectNotClient(t *testing.T) {
	for _, on := range []bool{false, true} {
		h := newHarness(t, func(c *Config) { c.Faults.ServiceSubjectNotClient = on })
		key, _ := clientauth.NewKey()
		if _, err := h.svc.RegisterClientKey(context.Background(), "worker", key.PublicJWK()); err != nil {
			t.Fatal(err)
		}
		a, _ := key.Assertion("worker", testIssuer+TokenPath, h.clock.Now())
		w := h.do(http.MethodPost, TokenPath, "application/x-www-form-urlencoded", assertionForm(a).Encode(), withHeader("X-Test-Peer", "worker"))
		var tr struct {
			AccessToken string `json:"access_token"`
		}
		if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &tr) != nil {
			t.Fatalf("ServiceSubjectNotClient=%v: %d %s", on, w.Code, w.Body)
		}
		c := claimsOf(t, Secret(tr.AccessToken))
		if (c["sub"] == "worker") == on || c["client_id"] != "worker" || c[ClaimTokenClass] != ClassService {
			t.Fatalf("ServiceSubjectNotClient=%v: claims %v", on, c)
		}
	}
}
