package jwtverify

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/malai-sec/malai/jwtverify/jwttest"
)

// privateJWKS returns a JWK Set publishing k with its private member "d",
// as a misconfigured issuer would.
func privateJWKS(t *testing.T, k *jwttest.Key) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(k.JWK(t), &m); err != nil {
		t.Fatal(err)
	}
	var d []byte
	switch p := k.Private.(type) {
	case *ecdsa.PrivateKey:
		d = ecScalar(p)
	case ed25519.PrivateKey:
		d = p.Seed()
	case *rsa.PrivateKey:
		d = p.D.Bytes()
	}
	m["d"] = base64.RawURLEncoding.EncodeToString(d)
	b, err := json.Marshal(map[string]any{"keys": []any{m}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ecScalar returns the private scalar of k, the JWK "d" member.
func ecScalar(k *ecdsa.PrivateKey) []byte {
	b, err := k.Bytes()
	if err != nil {
		panic(err)
	}
	return b
}
