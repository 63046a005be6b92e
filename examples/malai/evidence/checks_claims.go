package evidence

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"
)

// badClaims are user tokens signed with identity's real key whose claims
// or header no layer may accept, beside the valid spellings of typ every
// layer must accept. Each is a header and a claims object, built from a
// real token's claims; raw JSON where a duplicate member or a wrong type
// is the point.
func badClaims(real map[string]any) (bad map[string][2]string, good map[string][2]string) {
	now := time.Now().Unix()
	claims := func(edit func(c map[string]any)) string {
		c := map[string]any{}
		for k, v := range real {
			c[k] = v
		}
		c["iat"], c["nbf"], c["exp"] = now, now, now+240
		c["jti"] = fmt.Sprintf("ev-%d", time.Now().UnixNano())
		if edit != nil {
			edit(c)
		}
		b, _ := json.Marshal(c)
		return string(b)
	}
	set := func(k string, v any) func(map[string]any) { return func(c map[string]any) { c[k] = v } }
	del := func(k string) func(map[string]any) { return func(c map[string]any) { delete(c, k) } }
	const hdr = `{"alg":"ES256","kid":"$KID","typ":"at+jwt"}`
	valid := claims(nil)
	bad = map[string][2]string{
		"no iat":            {hdr, claims(del("iat"))},
		"no exp":            {hdr, claims(del("exp"))},
		"two-hour lifetime": {hdr, claims(set("exp", now+7200))},
		"one-year lifetime": {hdr, claims(set("exp", now+365*86400))},
		"exp as a string":   {hdr, claims(set("exp", fmt.Sprint(now+240)))},
		"expired":           {hdr, claims(func(c map[string]any) { c["iat"], c["nbf"], c["exp"] = now-400, now-400, now-120 })},
		"iat in the future": {hdr, claims(func(c map[string]any) { c["iat"], c["nbf"], c["exp"] = now+120, now+120, now+400 })},
		"duplicate sub":     {hdr, strings.Replace(valid, `"sub":`, `"sub":"user:aaaaaaaaaaaaaaaaaaaaaaaaaa","sub":`, 1)},
		"duplicate alg":     {`{"alg":"ES256","alg":"none","kid":"$KID","typ":"at+jwt"}`, valid},
		"unknown crit":      {`{"alg":"ES256","kid":"$KID","typ":"at+jwt","crit":["exp"]}`, valid},
		"typ JWT":           {`{"alg":"ES256","kid":"$KID","typ":"JWT"}`, valid},
		"no typ":            {`{"alg":"ES256","kid":"$KID"}`, valid},
		"wrong issuer":      {hdr, claims(set("iss", "https://evil.example"))},
		"service audience":  {hdr, claims(set("aud", "malai-internal"))},
		"service class":     {hdr, claims(set("token_class", "service"))},
		"no class":          {hdr, claims(del("token_class"))},
		"no sub":            {hdr, claims(del("sub"))},
		"jku header":        {`{"alg":"ES256","kid":"$KID","typ":"at+jwt","jku":"https://evil.example/jwks"}`, valid},
	}
	good = map[string][2]string{}
	for _, typ := range []string{"at+jwt", "application/at+jwt", "AT+JWT"} {
		good["typ "+typ] = [2]string{`{"alg":"ES256","kid":"$KID","typ":"` + typ + `"}`, claims(nil)}
	}
	return bad, good
}

// claimLayers are the places that verify user tokens, each at a route a
// token of the fixture's Bob may read.
var claimLayers = []layer{
	{name: "gateway", url: func(f *Fixture) string { return f.Target.Gateway }, method: "GET", path: "/v1/accounts"},
	{name: "ledger directly, as the gateway", local: true, component: "gateway",
		url: func(f *Fixture) string { return f.Local.LedgerURL() }, method: "GET", path: "/v1/accounts"},
	{name: "identity directly, as the gateway", local: true, component: "gateway",
		url: func(f *Fixture) string { return f.Local.IdentityURL() }, method: "GET", path: "/v1/account"},
}

// badClaimChecks: "Signature, expiry, audience and issuer are checked at
// both layers" — with the signature right. Only an insider holding the
// key ring can sign these, so the checks are local.
func badClaimChecks() []Check {
	var cs []Check
	for _, l := range claimLayers {
		cs = append(cs, Check{Row: RowTokens, Local: true,
			Name: l.name + ": tokens signed with the real key but with bad claims (lifetime, iat, exp type, issuer, audience, class, typ, crit, duplicates, jku) → 401 or 403; valid typ spellings → 200",
			Run: func(ctx context.Context, f *Fixture) (string, error) {
				c, err := l.client(f)
				if err != nil {
					return "", err
				}
				bad, good := badClaims(JWTPart(f.Bob.Token, 1))
				send := func(hc [2]string) (Response, error) {
					tok, err := f.Local.SignToken([]byte(hc[0]), []byte(hc[1]))
					if err != nil {
						return Response{}, err
					}
					h := Bearer(tok)
					if l.component == "" {
						h = h.With("X-Forwarded-For", f.client)
					}
					return Send(ctx, c, l.method, l.url(f)+l.path, nil, h)
				}
				var accepted, refusedGood []string
				for _, name := range sortedKeys(bad) {
					r, err := send(bad[name])
					if err != nil {
						return "", fmt.Errorf("%s: %w", name, err)
					}
					// 403: a well-signed token of the wrong class.
					if r.Status != http.StatusUnauthorized && r.Status != http.StatusForbidden {
						accepted = append(accepted, fmt.Sprintf("%s → %d", name, r.Status))
						continue
					}
					if l.name == "gateway" {
						if _, seen := f.Local.TraceID("ledger", r.Header.Get("X-Request-ID")); seen {
							accepted = append(accepted, name+" → passed by the gateway (the ledger refused it)")
						}
					}
				}
				for _, name := range sortedKeys(good) {
					r, err := send(good[name])
					if err != nil {
						return "", fmt.Errorf("%s: %w", name, err)
					}
					if r.Status != http.StatusOK {
						refusedGood = append(refusedGood, fmt.Sprintf("%s → %d", name, r.Status))
					}
				}
				obs := fmt.Sprintf("%d bad-claim tokens: %d refused (401/403); %d valid typ spellings: %d accepted",
					len(bad), len(bad)-len(accepted), len(good), len(good)-len(refusedGood))
				if len(accepted) > 0 {
					return obs, fmt.Errorf("not refused: %s", strings.Join(accepted, ", "))
				}
				if len(refusedGood) > 0 {
					return obs, fmt.Errorf("valid tokens refused: %s", strings.Join(refusedGood, ", "))
				}
				return obs, nil
			}})
	}
	return cs
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
