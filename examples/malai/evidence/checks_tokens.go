package evidence

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// forgery is a way to turn a real user token into one no layer may
// accept.
type forgery struct {
	name string
	// forge turns tok into the forgery; other are the claims of another
	// real user's token.
	forge func(tok string, other map[string]any) (string, error)
}

var forgeries = []forgery{
	{"no token", func(string, map[string]any) (string, error) { return "", nil }},
	{"payload altered after signing (sub and sid of another user)", func(tok string, other map[string]any) (string, error) {
		parts := strings.Split(tok, ".")
		c := JWTPart(tok, 1)
		if len(parts) != 3 || c == nil {
			return "", errors.New("not a compact JWT")
		}
		// Subject and session both: identity ties a token to a live
		// session of its subject.
		c["sub"], c["sid"] = other["sub"], other["sid"]
		b, _ := json.Marshal(c)
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + parts[2], nil
	}},
	{"alg none", func(tok string, _ map[string]any) (string, error) {
		parts := strings.Split(tok, ".")
		if len(parts) != 3 {
			return "", errors.New("not a compact JWT")
		}
		h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt"}`))
		return h + "." + parts[1] + ".", nil
	}},
	{"signed by an attacker's key under the real kid", func(tok string, _ map[string]any) (string, error) {
		h, c := JWTPart(tok, 0), JWTPart(tok, 1)
		if h == nil || c == nil {
			return "", errors.New("not a compact JWT")
		}
		return signES256(h, c)
	}},
}

// signES256 signs header and claims with a fresh P-256 key nobody trusts.
func signES256(header, claims map[string]any) (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	hb, _ := json.Marshal(header)
	cb, _ := json.Marshal(claims)
	return SignES256(key, hb, cb)
}

// SignES256 returns the compact JWS of header and claims (raw JSON, sent
// as they are) signed with key.
func SignES256(key *ecdsa.PrivateKey, header, claims []byte) (string, error) {
	input := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(claims)
	sum := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// client is the HTTP client that reaches the layer: the pass's own, or
// one presenting the layer's component certificate.
func (l layer) client(f *Fixture) (*http.Client, error) {
	if l.component == "" {
		return f.Client, nil
	}
	return f.ClientAs(l.component)
}

// layer is one place that verifies user tokens on its own.
type layer struct {
	name string
	// local layers are internal listeners, reached with a component's
	// client certificate (so the certificate alone opens nothing).
	local     bool
	component string
	url       func(f *Fixture) string
	method    string
	path      string
	body      any
}

var tokenLayers = []layer{
	{name: "gateway", url: func(f *Fixture) string { return f.Target.Gateway }, method: "GET", path: "/v1/accounts"},
	{name: "ledger directly, as the gateway (gateway bypassed)", local: true, component: "gateway",
		url: func(f *Fixture) string { return f.Local.LedgerURL() }, method: "GET", path: "/v1/accounts"},
	{name: "identity directly, as the gateway (MFA enrolment)", local: true, component: "gateway",
		url: func(f *Fixture) string { return f.Local.IdentityURL() }, method: "POST", path: "/v1/mfa/totp", body: map[string]string{}},
}

// tokenChecks: "Every JWT is verified twice — once by the edge gateway
// against the issuer's JWKS, and again inside the service. Bypassing the
// gateway does not bypass the service … Signature, expiry, audience and
// issuer are checked at both layers."
func tokenChecks() []Check {
	var cs []Check
	for _, l := range tokenLayers {
		for _, fg := range forgeries {
			cs = append(cs, Check{Row: RowTokens, Name: l.name + ": " + fg.name + " → 401", Local: l.local,
				Run: func(ctx context.Context, f *Fixture) (string, error) {
					c, err := l.client(f)
					if err != nil {
						return "", err
					}
					// Bob's token: the identity layer's route, if the forged
					// token were accepted, would enrol MFA for him, nobody
					// else.
					tok, err := fg.forge(f.Bob.Token, JWTPart(f.Alice.Token, 1))
					if err != nil {
						return "", err
					}
					var h Header
					if tok != "" {
						h = Bearer(tok)
					}
					r, err := Send(ctx, c, l.method, l.url(f)+l.path, l.body, h)
					obs, err := Expect(r, err, http.StatusUnauthorized)
					if err != nil {
						return obs, err
					}
					obs += "; WWW-Authenticate: " + r.Header.Get("WWW-Authenticate")
					if l.name == "gateway" && f.Local != nil {
						// The gateway's own layer refused it: the ledger,
						// which would refuse it too, never saw it. (Its
						// span ends before its answer leaves, so a request
						// that reached it is already recorded.)
						if _, seen := f.Local.TraceID("ledger", r.Header.Get("X-Request-ID")); seen {
							return obs, errors.New("refused by the ledger, not by the gateway: the gateway's layer let it through")
						}
						obs += "; the ledger never saw it"
					}
					return obs, nil
				}})
		}
	}
	cs = append(cs, Check{Row: RowTokens, Name: "ledger directly with a valid user token → 200 (the service verifies on its own)", Local: true,
		Run: func(ctx context.Context, f *Fixture) (string, error) {
			c, err := f.ClientAs("gateway")
			if err != nil {
				return "", err
			}
			r, err := Send(ctx, c, "GET", f.Local.LedgerURL()+"/v1/accounts", nil, f.Alice.Auth())
			return Expect(r, err, http.StatusOK)
		}})
	return cs
}

// interServiceChecks: "Services authenticate to each other with OAuth2
// client credentials. A compromised internal client cannot impersonate a
// user, and a compromised user token cannot reach internal-only routes."
func interServiceChecks() []Check {
	return []Check{
		{Row: RowInterService, Name: "client credentials issue a service token (sub == client_id, token_class service)", Local: true,
			Run: func(ctx context.Context, f *Fixture) (string, error) {
				tok, err := f.Local.AuditorToken(ctx)
				if err != nil {
					return "", err
				}
				c := JWTPart(tok, 1)
				obs := fmt.Sprintf("sub=%v client_id=%v aud=%v token_class=%v", c["sub"], c["client_id"], c["aud"], c["token_class"])
				if c["token_class"] != "service" || c["sub"] == nil || c["sub"] != c["client_id"] {
					return obs, errors.New("not a service token")
				}
				return obs, nil
			}},
		{Row: RowInterService, Name: "a service token cannot act as a user (user route at the gateway and at the ledger)", Local: true,
			Run: func(ctx context.Context, f *Fixture) (string, error) {
				tok, err := f.Local.AuditorToken(ctx)
				if err != nil {
					return "", err
				}
				c, err := f.ClientAs("gateway")
				if err != nil {
					return "", err
				}
				gw, err := f.Do(ctx, "GET", f.Target.Gateway+"/v1/accounts", nil, Bearer(tok))
				if err != nil {
					return "", err
				}
				ld, err := Send(ctx, c, "GET", f.Local.LedgerURL()+"/v1/accounts", nil, Bearer(tok))
				if err != nil {
					return "", err
				}
				// The same service token re-signed for the user audience
				// with the route's scope: only its class is wrong, and the
				// ledger's token layer (not the policy behind it) must
				// refuse it for that.
				scoped, err := reclass(f, tok, map[string]any{"aud": "malai-api", "scope": "ledger:read"})
				if err != nil {
					return "", err
				}
				ls, err := Send(ctx, c, "GET", f.Local.LedgerURL()+"/v1/accounts", nil, Bearer(scoped))
				if err != nil {
					return "", err
				}
				obs := fmt.Sprintf("gateway %d, ledger %d %s; with the user audience and scope: ledger %d %s",
					gw.Status, ld.Status, JSONString(ld.Body, "type"), ls.Status, JSONString(ls.Body, "type"))
				if gw.Status != 401 && gw.Status != 403 || !tokenRefusal(ld) || !tokenRefusal(ls) {
					return obs, errors.New("service token accepted on a user route by the ledger's token layer")
				}
				return obs, nil
			}},
		{Row: RowInterService, Name: "a user token cannot reach an internal route (ledger directly; the gateway routes no /internal path)", Local: true,
			Run: func(ctx context.Context, f *Fixture) (string, error) {
				// As the route's own caller, so that the caller check is not
				// what refuses the token.
				c, err := f.ClientAs(AuditorComponent)
				if err != nil {
					return "", err
				}
				ld, err := Send(ctx, c, "GET", f.Local.LedgerURL()+"/internal/v1/audit/replay", nil, f.Alice.Auth())
				if err != nil {
					return "", err
				}
				// A user token re-signed for the internal audience with the
				// route's scope: only its class is wrong.
				scoped, err := reclass(f, f.Alice.Token, map[string]any{"aud": "malai-internal", "scope": "ledger:audit"})
				if err != nil {
					return "", err
				}
				ls, err := Send(ctx, c, "GET", f.Local.LedgerURL()+"/internal/v1/audit/replay", nil, Bearer(scoped))
				if err != nil {
					return "", err
				}
				gw, err := f.Do(ctx, "GET", f.Target.Gateway+"/internal/v1/audit/replay", nil, f.Alice.Auth())
				if err != nil {
					return "", err
				}
				obs := fmt.Sprintf("ledger %d %s; with the internal audience and scope: ledger %d %s; gateway %d",
					ld.Status, JSONString(ld.Body, "type"), ls.Status, JSONString(ls.Body, "type"), gw.Status)
				if !tokenRefusal(ld) || !tokenRefusal(ls) {
					return obs, errors.New("the ledger's token layer accepted a user token on an internal route")
				}
				if gw.Status != 404 {
					return obs, errors.New("the gateway routes an internal path")
				}
				return obs, nil
			}},
	}
}

// reclass re-signs tok's claims with edit applied (and a fresh lifetime)
// under identity's real key, as only an insider could: a token whose
// class alone is wrong for the route it is sent to.
func reclass(f *Fixture, tok string, edit map[string]any) (string, error) {
	c := JWTPart(tok, 1)
	if c == nil {
		return "", errors.New("not a compact JWT")
	}
	now := time.Now().Unix()
	c["iat"], c["nbf"], c["exp"] = now, now, now+240
	c["jti"] = fmt.Sprintf("ev-class-%d", time.Now().UnixNano())
	for k, v := range edit {
		c[k] = v
	}
	b, _ := json.Marshal(c)
	return f.Local.SignToken([]byte(`{"alg":"ES256","kid":"$KID","typ":"at+jwt"}`), b)
}

// tokenRefusal reports whether r is a refusal by the token layer (401, or
// 403 insufficient-scope, where a wrong class lands), not by the policy
// or the caller check behind it.
func tokenRefusal(r Response) bool {
	return r.Status == http.StatusUnauthorized || r.Status == http.StatusForbidden && strings.HasSuffix(JSONString(r.Body, "type"), "#insufficient-scope")
}

// authorizationChecks: "RBAC enforced at the API."
func authorizationChecks() []Check {
	return []Check{
		{Row: RowAuthorization, Name: "a customer cannot create money: a deposit is refused at the ledger (403) without the teller role", Local: true,
			Run: func(ctx context.Context, f *Fixture) (string, error) {
				c, err := f.ClientAs("gateway")
				if err != nil {
					return "", err
				}
				before, err := f.Balance(ctx, f.Alice)
				if err != nil {
					return "", err
				}
				r, err := Send(ctx, c, "POST", f.Local.LedgerURL()+"/v1/deposits", map[string]any{"account": f.Alice.Account, "amount": 1_000_000},
					f.Alice.Auth().With("Idempotency-Key", f.Key("self-deposit")))
				if err != nil {
					return "", err
				}
				after, err := f.Balance(ctx, f.Alice)
				if err != nil {
					return "", err
				}
				obs := fmt.Sprintf("HTTP %d %s; balance %d → %d", r.Status, JSONString(r.Body, "type"), before, after)
				if r.Status != http.StatusForbidden || after != before {
					return obs, errors.New("a customer deposited")
				}
				return obs, nil
			}},
		{Row: RowAuthorization, Name: "RBAC at the API: a user cannot read another user's account (404, as if it did not exist)", Run: func(ctx context.Context, f *Fixture) (string, error) {
			r, err := f.Do(ctx, "GET", f.Target.Gateway+"/v1/accounts/"+f.Alice.Account, nil, f.Bob.Auth())
			return Expect(r, err, http.StatusNotFound)
		}},
		{Row: RowAuthorization, Name: "a user cannot move money out of another user's account", Run: func(ctx context.Context, f *Fixture) (string, error) {
			before, err := f.Balance(ctx, f.Alice)
			if err != nil {
				return "", err
			}
			r, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/transfers", Transfer{From: f.Alice.Account, To: f.Bob.Account, Amount: 1},
				f.Bob.Auth().With("Idempotency-Key", f.Key("steal")))
			if err != nil {
				return "", err
			}
			bal, err := f.Balance(ctx, f.Alice)
			if err != nil {
				return "", err
			}
			obs := fmt.Sprintf("HTTP %d %s; owner's balance %d → %d", r.Status, JSONString(r.Body, "type"), before, bal)
			if r.Status < 400 || r.Status >= 500 || bal != before {
				return obs, errors.New("transfer accepted")
			}
			return obs, nil
		}},
	}
}
