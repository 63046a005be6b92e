package jwtverify

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/malai-sec/malai/jwtverify/jwttest"
)

func enc(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestAttacks sends every known attack to a service wired like the
// reference ledger and checks that each one is refused with the RFC 6750
// status and a stable reason, and that no response echoes the token.
func TestAttacks(t *testing.T) {
	clock := newClock()
	now := clock.Now()
	key := jwttest.NewKey(t, "ES256", "k1")
	rsaKey := jwttest.NewKey(t, "RS256", "r1")
	attacker := jwttest.NewKey(t, "ES256", "k1") // same kid, different key
	rec := &recorder{}
	v := newStatic(t, clock, func(c *Config) { c.Observe = rec.observe }, key, rsaKey)
	h := routes(v)

	user := func() map[string]any { return jwttest.Claims(testIss, testAud, "alice", now) }
	with := func(k string, val any) map[string]any {
		c := user()
		if val == nil {
			delete(c, k)
		} else {
			c[k] = val
		}
		return c
	}
	hdr := func(k string, val any) map[string]any {
		h := key.Header()
		h[k] = val
		return h
	}
	valid := key.Mint(t, user())
	other := key.Mint(t, with("sub", "bob"))
	parts := strings.Split(valid, ".")
	otherParts := strings.Split(other, ".")

	// HS256 keyed with the public key, in the encodings a naive verifier
	// might use as the HMAC secret.
	hsToken := func(k *jwttest.Key) string {
		der, _ := x509.MarshalPKIXPublicKey(k.Private.Public())
		input := enc(map[string]any{"alg": "HS256", "typ": "at+jwt", "kid": k.KID}) + "." + enc(user())
		m := hmac.New(sha256.New, der)
		m.Write([]byte(input))
		return input + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	attackerJWK, _ := json.Marshal(attacker.JWK(t))
	var jwkMap map[string]any
	_ = json.Unmarshal(attackerJWK, &jwkMap)

	dupPayload := `{"iss":"` + testIss + `","aud":"` + testAud + `","sub":"alice","sub":"admin","client_id":"web","token_class":"user","iat":` +
		itoa(now.Unix()) + `,"exp":` + itoa(now.Add(5*time.Minute).Unix()) + `}`
	dupHeader := `{"alg":"ES256","kid":"k1","typ":"at+jwt","kid":"k2"}`
	escDupPayload := strings.Replace(dupPayload, `"sub":"admin"`, `"\u0073ub":"admin"`, 1)

	cases := []struct {
		name   string
		path   string
		auth   []string
		status int
		reason Reason
	}{
		{"alg none", "/any", []string{"Bearer " + enc(map[string]any{"alg": "none", "typ": "at+jwt"}) + "." + parts[1] + "."}, 401, ReasonMalformed},
		{"alg none with signature", "/any", []string{"Bearer " + enc(map[string]any{"alg": "none", "typ": "at+jwt"}) + "." + parts[1] + ".AAAA"}, 401, ReasonAlgorithm},
		{"HS256 with EC public key", "/any", []string{"Bearer " + hsToken(key)}, 401, ReasonAlgorithm},
		{"HS256 with RSA public key", "/any", []string{"Bearer " + hsToken(rsaKey)}, 401, ReasonAlgorithm},
		{"RS256 header on EC key", "/any", []string{"Bearer " + key.MintWith(t, hdr("alg", "RS256"), user())}, 401, ReasonUnknownKey},
		{"unknown kid", "/any", []string{"Bearer " + key.MintWith(t, hdr("kid", "nope"), user())}, 401, ReasonUnknownKey},
		{"kid path traversal", "/any", []string{"Bearer " + key.MintWith(t, hdr("kid", "../../../../dev/null"), user())}, 401, ReasonUnknownKey},
		{"kid SQL", "/any", []string{"Bearer " + key.MintWith(t, hdr("kid", "' OR '1'='1' --"), user())}, 401, ReasonUnknownKey},
		{"kid of 1 KiB", "/any", []string{"Bearer " + key.MintWith(t, hdr("kid", strings.Repeat("k", 1024)), user())}, 401, ReasonMalformed},
		{"jku elsewhere", "/any", []string{"Bearer " + attacker.MintWith(t, hdr("jku", "https://evil.test/jwks"), user())}, 401, ReasonUntrustedHeader},
		{"x5u elsewhere", "/any", []string{"Bearer " + attacker.MintWith(t, hdr("x5u", "https://evil.test/cert"), user())}, 401, ReasonUntrustedHeader},
		{"embedded jwk", "/any", []string{"Bearer " + attacker.MintWith(t, hdr("jwk", jwkMap), user())}, 401, ReasonUntrustedHeader},
		{"crit", "/any", []string{"Bearer " + key.MintWith(t, hdr("crit", []string{"exp"}), user())}, 401, ReasonUntrustedHeader},
		{"attacker key same kid", "/any", []string{"Bearer " + attacker.Mint(t, user())}, 401, ReasonSignature},
		{"payload altered", "/any", []string{"Bearer " + parts[0] + "." + enc(with("sub", "admin")) + "." + parts[2]}, 401, ReasonSignature},
		{"signature of another token", "/any", []string{"Bearer " + parts[0] + "." + parts[1] + "." + otherParts[2]}, 401, ReasonSignature},
		{"expired", "/any", []string{"Bearer " + key.Mint(t, with("exp", now.Add(-time.Minute).Unix()))}, 401, ReasonExpired},
		{"nbf in future", "/any", []string{"Bearer " + key.Mint(t, with("nbf", now.Add(2*time.Minute).Unix()))}, 401, ReasonNotYetValid},
		{"iat in future", "/any", []string{"Bearer " + key.Mint(t, with("iat", now.Add(2*time.Minute).Unix()))}, 401, ReasonIssuedInFuture},
		{"lifetime over max", "/any", []string{"Bearer " + key.Mint(t, with("exp", now.Add(2*time.Hour).Unix()))}, 401, ReasonLifetime},
		{"missing exp", "/any", []string{"Bearer " + key.Mint(t, with("exp", nil))}, 401, ReasonMissingClaim},
		{"exp as string", "/any", []string{"Bearer " + key.Mint(t, with("exp", "9999999999"))}, 401, ReasonBadClaim},
		{"missing iat", "/any", []string{"Bearer " + key.Mint(t, with("iat", nil))}, 401, ReasonMissingClaim},
		{"wrong iss", "/any", []string{"Bearer " + key.Mint(t, with("iss", "https://evil.test"))}, 401, ReasonIssuer},
		{"iss differs in case", "/any", []string{"Bearer " + key.Mint(t, with("iss", strings.ToUpper(testIss)))}, 401, ReasonIssuer},
		{"missing iss", "/any", []string{"Bearer " + key.Mint(t, with("iss", nil))}, 401, ReasonMissingClaim},
		{"wrong aud", "/any", []string{"Bearer " + key.Mint(t, with("aud", "gateway"))}, 401, ReasonAudience},
		{"missing aud", "/any", []string{"Bearer " + key.Mint(t, with("aud", nil))}, 401, ReasonMissingClaim},
		{"missing sub", "/any", []string{"Bearer " + key.Mint(t, with("sub", nil))}, 401, ReasonMissingClaim},
		{"wrong typ", "/any", []string{"Bearer " + key.MintWith(t, hdr("typ", "JWT"), user())}, 401, ReasonType},
		{"missing typ", "/any", []string{"Bearer " + key.MintWith(t, map[string]any{"alg": "ES256", "kid": "k1"}, user())}, 401, ReasonType},
		{"unknown class", "/any", []string{"Bearer " + key.Mint(t, with("token_class", "admin"))}, 401, ReasonClass},
		{"service token on user route", "/user", []string{"Bearer " + key.Mint(t, jwttest.ServiceClaims(testIss, testAud, "worker", now))}, 403, ReasonWrongClass},
		{"user token on internal route", "/internal", []string{"Bearer " + valid}, 403, ReasonWrongClass},
		{"oversized", "/any", []string{"Bearer " + parts[0] + "." + strings.Repeat("A", DefaultMaxTokenSize) + "." + parts[2]}, 401, ReasonTooLarge},
		{"four segments", "/any", []string{"Bearer " + valid + "." + parts[2]}, 401, ReasonMalformed},
		{"two segments", "/any", []string{"Bearer " + parts[0] + "." + parts[1]}, 401, ReasonMalformed},
		{"bad base64", "/any", []string{"Bearer " + parts[0] + "." + parts[1] + "+/." + parts[2]}, 401, ReasonMalformed},
		{"padded base64", "/any", []string{"Bearer " + parts[0] + "=." + parts[1] + "." + parts[2]}, 401, ReasonMalformed},
		{"line break inside a segment", "/any", []string{"Bearer " + valid[:10] + "\n" + valid[10:]}, 401, ReasonMalformed},
		{"duplicate claim", "/any", []string{"Bearer " + key.SignRaw(t, []byte(`{"alg":"ES256","kid":"k1","typ":"at+jwt"}`), []byte(dupPayload))}, 401, ReasonDuplicateKey},
		{"duplicate claim via escape", "/any", []string{"Bearer " + key.SignRaw(t, []byte(`{"alg":"ES256","kid":"k1","typ":"at+jwt"}`), []byte(escDupPayload))}, 401, ReasonDuplicateKey},
		{"duplicate header member", "/any", []string{"Bearer " + key.SignRaw(t, []byte(dupHeader), []byte(strings.Replace(dupPayload, `"sub":"admin",`, "", 1)))}, 401, ReasonDuplicateKey},
		{"two Authorization headers", "/any", []string{"Bearer " + valid, "Bearer " + valid}, 400, ReasonMultipleTokens},
		{"empty bearer", "/any", []string{"Bearer "}, 400, ReasonBadScheme},
		{"no token", "/any", nil, 401, ReasonNoToken},
		{"basic scheme", "/any", []string{"Basic YWxpY2U6c2VjcmV0"}, 401, ReasonNoToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := get(h, tc.path, tc.auth...)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d (reason %q)", w.Code, tc.status, rec.last().Reason)
			}
			if got := rec.last(); got.Accepted || got.Reason != tc.reason {
				t.Errorf("event %+v, want reason %q", got, tc.reason)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q", ct)
			}
			ch := w.Header().Get("WWW-Authenticate")
			wantCode := map[int]string{400: `error="invalid_request"`, 401: `error="invalid_token"`, 403: `error="insufficient_scope"`}[tc.status]
			if tc.reason == ReasonNoToken {
				if ch != "Bearer" {
					t.Errorf("challenge %q, want bare Bearer", ch)
				}
			} else if !strings.HasPrefix(ch, "Bearer ") || !strings.Contains(ch, wantCode) {
				t.Errorf("challenge %q, want %s", ch, wantCode)
			}
			for _, a := range tc.auth {
				for _, seg := range strings.Split(strings.TrimPrefix(a, "Bearer "), ".") {
					if len(seg) > 8 && (strings.Contains(w.Body.String(), seg) || strings.Contains(ch, seg)) {
						t.Errorf("response echoes token text")
					}
				}
			}
		})
	}

	// The control: the valid token passes every route it is meant for.
	if w := get(h, "/user", "Bearer "+valid); w.Code != http.StatusOK || w.Body.String() != "alice" {
		t.Fatalf("valid user token: %d %q", w.Code, w.Body.String())
	}
	svc := key.Mint(t, func() map[string]any {
		c := jwttest.ServiceClaims(testIss, testAud, "worker", now)
		c["scope"] = "ledger:read ledger:write"
		return c
	}())
	if w := get(h, "/internal", "Bearer "+svc); w.Code != http.StatusOK {
		t.Fatalf("valid service token: %d", w.Code)
	}
	noScope := key.Mint(t, jwttest.ServiceClaims(testIss, testAud, "worker", now))
	w := get(h, "/internal", "Bearer "+noScope)
	if w.Code != http.StatusForbidden || !strings.Contains(w.Header().Get("WWW-Authenticate"), `scope="ledger:write"`) {
		t.Fatalf("service token without scope: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
