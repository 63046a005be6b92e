package identity

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// BadClaimTokens is the forged-claim table every layer must refuse: each
// entry is signed with identity's real current key, so only the claim
// and header checks stand between it and the route. The gateway and the
// ledger run the same table through their verifiers.
func badClaimTokens(h *harness, sub, sid string) map[string]Secret {
	now := h.clock.Now().Unix()
	base := func(replace ...string) string {
		p := fmt.Sprintf(`{"iss":%q,"sub":%q,"aud":"malai-api","exp":%d,"iat":%d,"nbf":%d,"jti":"j1","client_id":"malai-web","scope":"ledger:read","token_class":"user","auth_time":%d,"amr":["pwd"],"sid":%q}`,
			testIssuer, sub, now+300, now, now, now, sid)
		return strings.NewReplacer(replace...).Replace(p)
	}
	hdr := `{"alg":"ES256","kid":"$KID","typ":"at+jwt"}`
	exp := fmt.Sprintf(`"exp":%d`, now+300)
	iat := fmt.Sprintf(`"iat":%d`, now)
	return map[string]Secret{
		"no iat":                     h.signRaw(hdr, base(iat+",", "")),
		"no exp":                     h.signRaw(hdr, base(exp+",", "")),
		"two-hour lifetime":          h.signRaw(hdr, base(exp, fmt.Sprintf(`"exp":%d`, now+7200))),
		"one-year lifetime":          h.signRaw(hdr, base(exp, fmt.Sprintf(`"exp":%d`, now+365*86400))),
		"exp as a string":            h.signRaw(hdr, base(exp, fmt.Sprintf(`"exp":"%d"`, now+300))),
		"iat as a string":            h.signRaw(hdr, base(iat, fmt.Sprintf(`"iat":"%d"`, now))),
		"expired":                    h.signRaw(hdr, base(exp, fmt.Sprintf(`"exp":%d`, now-120), iat, fmt.Sprintf(`"iat":%d`, now-400))),
		"iat in the future":          h.signRaw(hdr, base(iat, fmt.Sprintf(`"iat":%d`, now+120), exp, fmt.Sprintf(`"exp":%d`, now+400))),
		"nbf in the future":          h.signRaw(hdr, base(fmt.Sprintf(`"nbf":%d`, now), fmt.Sprintf(`"nbf":%d`, now+120))),
		"duplicate sub":              h.signRaw(hdr, base(`"sub":`, `"sub":"user:aaaaaaaaaaaaaaaaaaaaaaaaaa","sub":`)),
		"duplicate alg":              h.signRaw(`{"alg":"ES256","alg":"none","kid":"$KID","typ":"at+jwt"}`, base()),
		"unknown crit":               h.signRaw(`{"alg":"ES256","kid":"$KID","typ":"at+jwt","crit":["exp"]}`, base()),
		"crit with a private member": h.signRaw(`{"alg":"ES256","kid":"$KID","typ":"at+jwt","crit":["x"],"x":1}`, base()),
		"typ JWT":                    h.signRaw(`{"alg":"ES256","kid":"$KID","typ":"JWT"}`, base()),
		"no typ":                     h.signRaw(`{"alg":"ES256","kid":"$KID"}`, base()),
		"wrong issuer":               h.signRaw(hdr, base(`"iss":"`+testIssuer+`"`, `"iss":"https://evil.example"`)),
		"service audience":           h.signRaw(hdr, base(`"aud":"malai-api"`, `"aud":"malai-internal"`)),
		"both audiences":             h.signRaw(hdr, base(`"aud":"malai-api"`, `"aud":["malai-internal","other"]`)),
		"service class":              h.signRaw(hdr, base(`"token_class":"user"`, `"token_class":"service"`)),
		"unknown class":              h.signRaw(hdr, base(`"token_class":"user"`, `"token_class":"admin"`)),
		"no sub":                     h.signRaw(hdr, base(`"sub":"`+sub+`",`, "")),
		"sub of a username":          h.signRaw(hdr, base(`"sub":"`+sub+`"`, `"sub":"user:alice"`)),
		"jku header":                 h.signRaw(`{"alg":"ES256","kid":"$KID","typ":"at+jwt","jku":"https://evil.example/jwks"}`, base()),
		"unknown kid":                h.signRaw(`{"alg":"ES256","kid":"nope","typ":"at+jwt"}`, base()),
	}
}

// validTypSpellings are the spellings of at+jwt RFC 7515 §4.1.9 allows:
// case-insensitive, with or without the application/ prefix.
var validTypSpellings = []string{"at+jwt", "application/at+jwt", "AT+JWT", "Application/At+Jwt"}

func TestBadClaimTokensRefused(t *testing.T) {
	h := newHarness(t, nil)
	sub := h.signUp("alice", strongPW)
	s := h.signInOK(creds("alice", strongPW))
	sid := claimsOf(t, s.token)[ClaimSession].(string)
	for name, tok := range badClaimTokens(h, sub, sid) {
		t.Run(name, func(t *testing.T) {
			w := h.do(http.MethodGet, "/v1/account", "", "", withBearer(tok))
			if w.Code != http.StatusUnauthorized && w.Code != http.StatusForbidden {
				t.Fatalf("identity accepted %s: %d %s", name, w.Code, w.Body)
			}
			if !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("no Bearer challenge: %v", w.Header())
			}
		})
	}
	for _, typ := range validTypSpellings {
		t.Run("typ "+typ, func(t *testing.T) {
			now := h.clock.Now().Unix()
			tok := h.signRaw(`{"alg":"ES256","kid":"$KID","typ":"`+typ+`"}`, fmt.Sprintf(
				`{"iss":%q,"sub":%q,"aud":"malai-api","exp":%d,"iat":%d,"jti":"j-%s","client_id":"malai-web","scope":"ledger:read","token_class":"user","auth_time":%d,"amr":["pwd"],"sid":%q}`,
				testIssuer, sub, now+300, now, typ, now, sid))
			if w := h.do(http.MethodGet, "/v1/account", "", "", withBearer(tok)); w.Code != http.StatusOK {
				t.Fatalf("refused typ %q: %d %s", typ, w.Code, w.Body)
			}
		})
	}
	// Tokens alone never reach the account routes without a session.
	w := h.do(http.MethodGet, "/v1/account", "", "")
	if w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") == "" {
		t.Fatalf("no token: %d %v", w.Code, w.Header())
	}
}
