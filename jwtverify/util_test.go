package jwtverify

import (
	"encoding/json"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/malai-sec/malai/jwtverify/jwttest"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func privateJWKS(t *testing.T, k *jwttest.Key) string {
	pk, err := jwk.FromRaw(k.Private)
	if err != nil {
		t.Fatal(err)
	}
	_ = pk.Set(jwk.KeyIDKey, k.KID)
	s := jwk.NewSet()
	_ = s.AddKey(pk)
	b, _ := json.Marshal(s)
	return string(b)
}
