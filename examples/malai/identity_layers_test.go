package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/malai-sec/malai/examples/malai/identity"
)

// TestBadClaimTokensAtEveryLayer signs forged-claim tokens with
// identity's real current signing key (read from its store and opened
// with the system's key ring, as only an insider could) and sends each to
// the three layers that verify user tokens: the gateway, the ledger
// reached directly with the gateway's certificate, and identity reached
// directly. Every layer refuses every one; the valid spellings of typ
// at+jwt are accepted everywhere.
func TestBadClaimTokensAtEveryLayer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system")
	}
	ctx := context.Background()
	sys, err := Start(ctx, Options{Addr: "127.0.0.1:0", DataDir: t.TempDir(), PerIP: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Close() })
	if _, err := sys.Identity.CreateUser(ctx, "layered", "Tr1cky-Harbour-Lantern"); err != nil {
		t.Fatal(err)
	}
	pub := sys.HTTPClient()
	resp, err := pub.Post(sys.GatewayURL+identity.SignInPath, "application/json", strings.NewReader(`{"username":"layered","password":"Tr1cky-Harbour-Lantern"}`))
	if err != nil {
		t.Fatal(err)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tr)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("sign-in: %d", resp.StatusCode)
	}
	real := payload(t, tr.AccessToken)
	sub, sid := real["sub"].(string), real["sid"].(string)

	// The insider's view: the current private key, opened with the ring.
	ks, err := sys.IdentityStore.SigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var priv *ecdsa.PrivateKey
	var kid string
	for _, k := range ks.Keys {
		if !k.Activated.IsZero() && k.Retired.IsZero() {
			der, _, err := sys.Ring.Open(nil, k.Private, []byte("malai.identity.signing-key:"+k.ID))
			if err != nil {
				t.Fatal(err)
			}
			pk, err := x509.ParsePKCS8PrivateKey(der)
			if err != nil {
				t.Fatal(err)
			}
			priv, kid = pk.(*ecdsa.PrivateKey), k.ID
		}
	}
	if priv == nil {
		t.Fatal("no current signing key in the store")
	}
	sign := func(header, claims string) string {
		header = strings.ReplaceAll(header, "$KID", kid)
		in := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(claims))
		d := sha256.Sum256([]byte(in))
		r, s, err := ecdsa.Sign(rand.Reader, priv, d[:])
		if err != nil {
			t.Fatal(err)
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return in + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	now := time.Now().Unix()
	iss := real["iss"].(string)
	claims := func(replace ...string) string {
		c := fmt.Sprintf(`{"iss":%q,"sub":%q,"aud":"malai-api","exp":%d,"iat":%d,"nbf":%d,"jti":"j%d","client_id":"malai-web","scope":"ledger:read ledger:write","token_class":"user","auth_time":%d,"amr":["pwd"],"sid":%q}`,
			iss, sub, now+240, now, now, time.Now().UnixNano(), now, sid)
		return strings.NewReplacer(replace...).Replace(c)
	}
	hdr := `{"alg":"ES256","kid":"$KID","typ":"at+jwt"}`
	exp, iat := fmt.Sprintf(`"exp":%d`, now+240), fmt.Sprintf(`"iat":%d`, now)
	bad := map[string]string{
		"no iat":            sign(hdr, claims(iat+",", "")),
		"no exp":            sign(hdr, claims(exp+",", "")),
		"two-hour lifetime": sign(hdr, claims(exp, fmt.Sprintf(`"exp":%d`, now+7200))),
		"one-year lifetime": sign(hdr, claims(exp, fmt.Sprintf(`"exp":%d`, now+365*86400))),
		"exp as a string":   sign(hdr, claims(exp, fmt.Sprintf(`"exp":"%d"`, now+240))),
		"expired":           sign(hdr, claims(exp, fmt.Sprintf(`"exp":%d`, now-120), iat, fmt.Sprintf(`"iat":%d`, now-400))),
		"iat in the future": sign(hdr, claims(iat, fmt.Sprintf(`"iat":%d`, now+120), exp, fmt.Sprintf(`"exp":%d`, now+400))),
		"duplicate sub":     sign(hdr, claims(`"sub":`, `"sub":"user:aaaaaaaaaaaaaaaaaaaaaaaaaa","sub":`)),
		"duplicate alg":     sign(`{"alg":"ES256","alg":"none","kid":"$KID","typ":"at+jwt"}`, claims()),
		"unknown crit":      sign(`{"alg":"ES256","kid":"$KID","typ":"at+jwt","crit":["exp"]}`, claims()),
		"typ JWT":           sign(`{"alg":"ES256","kid":"$KID","typ":"JWT"}`, claims()),
		"no typ":            sign(`{"alg":"ES256","kid":"$KID"}`, claims()),
		"wrong issuer":      sign(hdr, claims(`"iss":"`+iss+`"`, `"iss":"https://evil.example"`)),
		"service audience":  sign(hdr, claims(`"aud":"malai-api"`, `"aud":"malai-internal"`)),
		"service class":     sign(hdr, claims(`"token_class":"user"`, `"token_class":"service"`)),
		"no class":          sign(hdr, claims(`"token_class":"user",`, "")),
		"no sub":            sign(hdr, claims(`"sub":"`+sub+`",`, "")),
		"jku header":        sign(`{"alg":"ES256","kid":"$KID","typ":"at+jwt","jku":"https://evil.example/jwks"}`, claims()),
	}
	asGateway := func() *http.Client {
		cert, err := sys.CA.Issue("gateway")
		if err != nil {
			t.Fatal(err)
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: sys.CA.Pool(), Certificates: []tls.Certificate{cert}}}, Timeout: 10 * time.Second}
	}()
	layers := []struct {
		name string
		c    *http.Client
		url  string
	}{
		{"gateway", pub, sys.GatewayURL + "/v1/accounts"},
		{"ledger, gateway bypassed", asGateway, sys.LedgerURL + "/v1/accounts"},
		{"identity, gateway bypassed", asGateway, sys.IdentityURL + "/v1/account"},
	}
	get := func(c *http.Client, url, tok string) int {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, l := range layers {
		for name, tok := range bad {
			if code := get(l.c, l.url, tok); code != 401 && code != 403 {
				t.Errorf("%s accepted %q: %d", l.name, name, code)
			}
		}
		for _, typ := range []string{"at+jwt", "application/at+jwt", "AT+JWT"} {
			tok := sign(`{"alg":"ES256","kid":"$KID","typ":"`+typ+`"}`, claims())
			if code := get(l.c, l.url, tok); code != 200 {
				t.Errorf("%s refused typ %q: %d", l.name, typ, code)
			}
		}
	}
}

func payload(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatal("not a JWS")
	}
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}
