package jwtverify

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/malai-sec/malai/jwtverify/jwttest"
)

// verifyWith builds a static-key verifier for one issuer profile and
// verifies tok.
func verifyWith(t *testing.T, clock *fakeClock, key *jwttest.Key, is Issuer, tok string) (*Claims, error) {
	t.Helper()
	is.Issuer = testIss
	is.Keys = jwttest.Set(t, key)
	if is.Audiences == nil {
		is.Audiences = []string{testAud}
	}
	v, err := New(Config{Issuers: []Issuer{is}, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v.Verify(context.Background(), tok)
}

func TestTypeSpellings(t *testing.T) {
	clock := newClock()
	key := jwttest.NewKey(t, "ES256", "k")
	claims := jwttest.Claims(testIss, testAud, "alice", clock.Now())
	for _, tc := range []struct {
		typ     any // nil: no typ member
		strict  bool
		oidc    bool
		explain string
	}{
		{"at+jwt", true, true, "RFC 9068"},
		{"AT+JWT", true, true, "case-insensitive (RFC 7515 §4.1.9)"},
		{"application/at+jwt", true, true, "with the media-type prefix"},
		{"Application/At+Jwt", true, true, "prefix in any case"},
		{"JWT", false, true, "what most providers send"},
		{"jwt", false, true, ""},
		{nil, false, true, "absent"},
		{"at+jwt; charset=x", false, false, "parameters are not a typ"},
		{"application/jwt", false, true, ""},
		{"JOSE", false, false, ""},
		{"secevent+jwt", false, false, "another JWT profile"},
		{"dpop+jwt", false, false, "a DPoP proof is not an access token"},
		{"", false, false, "empty"},
	} {
		h := key.Header()
		if tc.typ == nil {
			delete(h, "typ")
		} else {
			h["typ"] = tc.typ
		}
		tok := key.MintWith(t, h, claims)
		_, err := verifyWith(t, clock, key, Issuer{}, tok)
		if (err == nil) != tc.strict || (err != nil && ReasonOf(err) != ReasonType) {
			t.Errorf("strict, typ %v (%s): %v", tc.typ, tc.explain, err)
		}
		_, err = verifyWith(t, clock, key, Issuer{Profile: ProfileOIDC}, tok)
		if (err == nil) != tc.oidc || (err != nil && ReasonOf(err) != ReasonType) {
			t.Errorf("oidc, typ %v (%s): %v", tc.typ, tc.explain, err)
		}
	}
}

// What the strict parser already refuses, whatever the profile: the
// identity service's own tokens rely on these.
func TestRefusedWhateverTheProfile(t *testing.T) {
	clock := newClock()
	key := jwttest.NewKey(t, "ES256", "k")
	now := clock.Now().Unix()
	payload := func(extra string) []byte {
		return []byte(`{"iss":"` + testIss + `","aud":"` + testAud + `","sub":"alice","client_id":"web","iat":` +
			i64(now) + extra + `}`)
	}
	hdr := []byte(`{"alg":"ES256","kid":"k","typ":"at+jwt"}`)
	for _, tc := range []struct {
		name   string
		header []byte
		body   []byte
		reason Reason
	}{
		{"duplicate claim", hdr, payload(`,"exp":` + i64(now+60) + `,"sub":"admin"`), ReasonDuplicateKey},
		{"duplicate nested member", hdr, payload(`,"exp":` + i64(now+60) + `,"x":{"a":1,"a":2}`), ReasonDuplicateKey},
		{"duplicate header member", []byte(`{"alg":"ES256","kid":"k","typ":"at+jwt","alg":"none"}`), payload(`,"exp":` + i64(now+60)), ReasonDuplicateKey},
		{"unknown crit", []byte(`{"alg":"ES256","kid":"k","typ":"at+jwt","crit":["x-custom"],"x-custom":1}`), payload(`,"exp":` + i64(now+60)), ReasonUntrustedHeader},
		{"exp as a string", hdr, payload(`,"exp":"` + i64(now+60) + `"`), ReasonBadClaim},
		{"exp negative", hdr, payload(`,"exp":-1`), ReasonBadClaim},
		{"exp missing", hdr, payload(``), ReasonMissingClaim},
		{"sub not a string", hdr, []byte(`{"iss":"` + testIss + `","aud":"` + testAud + `","sub":7,"iat":` + i64(now) + `,"exp":` + i64(now+60) + `}`), ReasonBadClaim},
	} {
		for _, prof := range []Profile{ProfileRFC9068, ProfileOIDC} {
			tok := key.SignRaw(t, tc.header, tc.body)
			if _, err := verifyWith(t, clock, key, Issuer{Profile: prof}, tok); ReasonOf(err) != tc.reason {
				t.Errorf("%s under %v: %v, want %s", tc.name, prof, err, tc.reason)
			}
		}
	}
}

func TestOIDCProfile(t *testing.T) {
	clock := newClock()
	key := jwttest.NewKey(t, "RS256", "k")
	now := clock.Now()
	base := func(extra map[string]any) map[string]any {
		c := map[string]any{"iss": testIss, "aud": testAud, "sub": "user-1", "azp": "spa",
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		for k, v := range extra {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	jwt := func(c map[string]any) string {
		h := key.Header()
		h["typ"] = "JWT"
		return key.MintWith(t, h, c)
	}
	for _, tc := range []struct {
		name     string
		claims   map[string]any
		reason   Reason
		class    Class
		clientID string
	}{
		{"user, azp names the client", base(nil), "", ClassUser, "spa"},
		{"client_id wins over azp", base(map[string]any{"client_id": "web"}), "", ClassUser, "web"},
		{"Entra v1 appid", base(map[string]any{"azp": nil, "appid": "app-1"}), "", ClassUser, "app-1"},
		{"no client at all", base(map[string]any{"azp": nil}), ReasonClass, ClassAny, ""},
		{"iat optional", base(map[string]any{"iat": nil}), "", ClassUser, "spa"},
		{"no iat, exp too far", base(map[string]any{"iat": nil, "exp": now.Add(25 * time.Hour).Unix()}), ReasonLifetime, ClassAny, ""},
		{"24 h lifetime", base(map[string]any{"exp": now.Add(24 * time.Hour).Unix()}), "", ClassUser, "spa"},
		{"over 24 h", base(map[string]any{"exp": now.Add(24*time.Hour + time.Second).Unix()}), ReasonLifetime, ClassAny, ""},
		{"Auth0 machine-to-machine", base(map[string]any{"sub": "spa@clients", "gty": "client-credentials"}), "", ClassService, "spa"},
		{"Entra idtyp app", base(map[string]any{"idtyp": "app", "sub": "sp-1"}), "", ClassService, "spa"},
		{"Entra app-only shape", base(map[string]any{"tid": "t", "oid": "sp-1", "sub": "sp-1"}), "", ClassService, "spa"},
		{"Entra delegated (scp)", base(map[string]any{"tid": "t", "oid": "sp-1", "sub": "sp-1", "scp": "User.Read"}), "", ClassUser, "spa"},
		{"Entra user (oid differs)", base(map[string]any{"tid": "t", "oid": "o-1"}), "", ClassUser, "spa"},
		{"sub equals the client", base(map[string]any{"sub": "spa"}), "", ClassService, "spa"},
		{"class claim wins", base(map[string]any{"token_class": "service"}), "", ClassService, "spa"},
		{"an ID token (at_hash)", base(map[string]any{"at_hash": "x"}), ReasonIDToken, ClassAny, ""},
		{"an ID token (c_hash)", base(map[string]any{"c_hash": "x"}), ReasonIDToken, ClassAny, ""},
		{"user-chosen name is no marker", base(map[string]any{"preferred_username": "service-account-x"}), "", ClassUser, "spa"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := verifyWith(t, clock, key, Issuer{Profile: ProfileOIDC}, jwt(tc.claims))
			if ReasonOf(err) != tc.reason {
				t.Fatalf("err %v, want reason %q", err, tc.reason)
			}
			if err == nil && (c.Class() != tc.class || c.ClientID() != tc.clientID) {
				t.Fatalf("class %v client %q, want %v %q", c.Class(), c.ClientID(), tc.class, tc.clientID)
			}
		})
	}
	// The strict profile refuses the same token shapes.
	if _, err := verifyWith(t, clock, key, Issuer{}, jwt(base(nil))); ReasonOf(err) != ReasonType {
		t.Fatalf("strict profile took typ JWT: %v", err)
	}
	if _, err := verifyWith(t, clock, key, Issuer{SkipTypeCheck: true}, jwt(base(map[string]any{"iat": nil}))); ReasonOf(err) != ReasonMissingClaim {
		t.Fatalf("strict profile without iat: %v", err)
	}
	if c, err := verifyWith(t, clock, key, Issuer{SkipTypeCheck: true}, jwt(base(nil))); ReasonOf(err) != ReasonClass || c != nil {
		t.Fatalf("strict profile read azp as the client: %v", err)
	}
	if _, err := New(Config{Issuers: []Issuer{{Issuer: testIss, Keys: jwttest.Set(t, key), Audiences: []string{testAud}, Profile: 9}}}); err == nil {
		t.Fatal("unknown profile accepted")
	}
}

func TestRolesClaimAndDecode(t *testing.T) {
	clock := newClock()
	key := jwttest.NewKey(t, "ES256", "k")
	claims := func(extra map[string]any) map[string]any {
		c := jwttest.Claims(testIss, testAud, "alice", clock.Now())
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	for _, tc := range []struct {
		name  string
		path  []string
		extra map[string]any
		want  []string
		bad   bool
	}{
		{"default roles", nil, map[string]any{"roles": []string{"teller", "viewer"}}, []string{"teller", "viewer"}, false},
		{"a single string", nil, map[string]any{"roles": "teller"}, []string{"teller"}, false},
		{"absent", nil, nil, nil, false},
		{"Keycloak realm roles", []string{"realm_access", "roles"}, map[string]any{"realm_access": map[string]any{"roles": []string{"admin"}}, "roles": []string{"ignored"}}, []string{"admin"}, false},
		{"Auth0 namespaced", []string{"https://malai.example/roles"}, map[string]any{"https://malai.example/roles": []string{"teller"}}, []string{"teller"}, false},
		{"path through a non-object", []string{"realm_access", "roles"}, map[string]any{"realm_access": "admin"}, nil, true},
		{"roles of numbers", nil, map[string]any{"roles": []int{1}}, nil, true},
		{"missing step", []string{"realm_access", "roles"}, map[string]any{"resource_access": map[string]any{}}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := verifyWith(t, clock, key, Issuer{RolesClaim: tc.path}, key.Mint(t, claims(tc.extra)))
			if tc.bad {
				if ReasonOf(err) != ReasonBadClaim {
					t.Fatalf("err %v, want bad_claim", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Roles(); strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("roles %q, want %q", got, tc.want)
			}
			for _, r := range tc.want {
				if !c.HasRole(r) {
					t.Fatalf("HasRole(%q) false", r)
				}
			}
		})
	}
	c, err := verifyWith(t, clock, key, Issuer{}, key.Mint(t, claims(map[string]any{"tid": "acme", "groups": []string{"g1", "g2"}, "n": 7})))
	if err != nil {
		t.Fatal(err)
	}
	var ext struct {
		Tenant string   `json:"tid"`
		Groups []string `json:"groups"`
		N      int      `json:"n"`
		Sub    string   `json:"sub"`
	}
	if err := c.Decode(&ext); err != nil || ext.Tenant != "acme" || len(ext.Groups) != 2 || ext.N != 7 || ext.Sub != "alice" {
		t.Fatalf("Decode: %+v %v", ext, err)
	}
	var wrong struct {
		N string `json:"n"`
	}
	if err := c.Decode(&wrong); err == nil {
		t.Fatal("Decode into a mismatched type succeeded")
	}
	if err := (&Claims{}).Decode(&ext); err == nil {
		t.Fatal("Decode of empty claims succeeded")
	}
	if _, err := New(Config{Issuers: []Issuer{{Issuer: testIss, Keys: jwttest.Set(t, key), Audiences: []string{testAud}, RolesClaim: []string{""}}}}); err == nil {
		t.Fatal("empty RolesClaim member accepted")
	}
}

func i64(n int64) string { return strconv.FormatInt(n, 10) }
