package jwtverify

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/malai-sec/malai/jwtverify/jwttest"
)

func TestConfigValidation(t *testing.T) {
	key := jwttest.NewKey(t, "ES256", "k1")
	set := jwttest.Set(t, key)
	ok := Issuer{Issuer: testIss, Keys: set, Audiences: []string{testAud}}
	mod := func(f func(*Issuer)) Config {
		is := ok
		f(&is)
		return Config{Issuers: []Issuer{is}}
	}
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"zero", Config{}},
		{"no issuer name", mod(func(i *Issuer) { i.Issuer = "" })},
		{"no keys", mod(func(i *Issuer) { i.Keys = nil })},
		{"both sources", mod(func(i *Issuer) { i.JWKSURL = "https://id.test/jwks" })},
		{"http JWKS off loopback", mod(func(i *Issuer) { i.Keys = nil; i.JWKSURL = "http://id.test/jwks" })},
		{"relative JWKS", mod(func(i *Issuer) { i.Keys = nil; i.JWKSURL = "/jwks" })},
		{"HS256", mod(func(i *Issuer) { i.Algorithms = []string{"HS256"} })},
		{"none", mod(func(i *Issuer) { i.Algorithms = []string{"none"} })},
		{"no audience", mod(func(i *Issuer) { i.Audiences = nil })},
		{"empty audience", mod(func(i *Issuer) { i.Audiences = []string{""} })},
		{"leeway too large", mod(func(i *Issuer) { i.Leeway = time.Hour })},
		{"negative lifetime", mod(func(i *Issuer) { i.MaxLifetime = -1 })},
		{"min above max refresh", mod(func(i *Issuer) { i.MinRefresh = 2 * time.Hour })},
		{"staleness below min refresh", mod(func(i *Issuer) { i.MaxStaleness = time.Second })},
		{"empty static set", mod(func(i *Issuer) { i.Keys = jwttest.Set(t) })},
		{"duplicate issuer", Config{Issuers: []Issuer{ok, ok}}},
		{"bad realm", Config{Issuers: []Issuer{ok}, Realm: `a"b`}},
		{"bad cookie", Config{Issuers: []Issuer{ok}, CookieName: "a b"}},
		{"negative cache", Config{Issuers: []Issuer{ok}, CacheSize: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); !errors.Is(err, ErrConfig) {
				t.Fatalf("err %v, want ErrConfig", err)
			}
		})
	}
	// Defaults go to a copy.
	cfg := Config{Issuers: []Issuer{ok}}
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if cfg.Issuers[0].Leeway != 0 || cfg.MaxTokenSize != 0 {
		t.Fatal("New wrote defaults into the caller's Config")
	}
	select {
	case <-v.Ready():
	default:
		t.Fatal("static keys must be ready at once")
	}
}

func TestClaimsAccessors(t *testing.T) {
	clock := newClock()
	key := jwttest.NewKey(t, "EdDSA", "k1")
	v := newStatic(t, clock, nil, key)
	c := jwttest.Claims(testIss, testAud, "alice", clock.Now())
	c["aud"] = []string{"other", testAud}
	c["scope"] = "b a  b"
	c["scp"] = []string{"c", "a"}
	c["roles"] = "admin"
	c["custom"] = map[string]any{"x": 1}
	got, err := v.Verify(context.Background(), key.Mint(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"a", "b", "c"}, got.Scopes()); d != "" {
		t.Errorf("scopes (-want +got):\n%s", d)
	}
	if !got.HasScope("c") || got.HasScope("d") || !got.HasRole("admin") {
		t.Error("HasScope/HasRole")
	}
	if got.Subject() != "alice" || got.ClientID() != "web" || got.JTI() != "jti-alice" || got.Class() != ClassUser ||
		got.Issuer() != testIss || got.KeyID() != "k1" || got.Algorithm() != "EdDSA" || got.Type() != "at+jwt" {
		t.Errorf("accessors: %v", got.LogValue())
	}
	if !got.ExpiresAt().Equal(clock.Now().Add(5*time.Minute)) || !got.IssuedAt().Equal(clock.Now()) || !got.NotBefore().IsZero() {
		t.Error("times")
	}
	if raw, ok := got.Claim("custom"); !ok || string(raw) != `{"x":1}` {
		t.Errorf("Claim(custom) = %s %v", raw, ok)
	}
	// Accessors hand out copies.
	got.Scopes()[0] = "zzz"
	got.Audience()[0] = "zzz"
	if !slices.Equal(got.Scopes(), []string{"a", "b", "c"}) || got.Audience()[0] != "other" {
		t.Error("accessor exposed internal slice")
	}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("verified", "claims", got)
	if !strings.Contains(logged.String(), "claims.sub=alice") || strings.Contains(logged.String(), "eyJ") {
		t.Errorf("log line %q: want sub and no token text", logged.String())
	}
}

func TestClassRules(t *testing.T) {
	clock := newClock()
	key := jwttest.NewKey(t, "ES256", "k1")
	now := clock.Now()
	base := func(edit func(map[string]any)) string {
		c := jwttest.Claims(testIss, testAud, "alice", now)
		delete(c, "token_class")
		edit(c)
		return key.Mint(t, c)
	}
	v := newStatic(t, clock, nil, key)
	custom := newStatic(t, clock, func(c *Config) {
		c.Issuers[0].Classify = func(c *Claims) Class {
			if raw, ok := c.Claim("grant"); ok && string(raw) == `"client_credentials"` {
				return ClassService
			}
			return ClassUser
		}
	}, key)
	strict := newStatic(t, clock, func(c *Config) { c.Issuers[0].RequireClassClaim = true }, key)
	for _, tc := range []struct {
		name   string
		v      *Verifier
		tok    string
		want   Class
		reason Reason
	}{
		{"required claim absent, sub == client_id", strict, base(func(c map[string]any) { c["client_id"] = "alice" }), 0, ReasonClass},
		{"required claim absent, sub != client_id", strict, base(func(c map[string]any) {}), 0, ReasonClass},
		{"required claim present", strict, base(func(c map[string]any) { c["client_id"] = "alice"; c["token_class"] = "user" }), ClassUser, ""},
		{"required claim, service", strict, base(func(c map[string]any) { c["client_id"] = "alice"; c["token_class"] = "service" }), ClassService, ""},
		{"required claim empty", strict, base(func(c map[string]any) { c["token_class"] = "" }), 0, ReasonClass},
		{"sub == client_id is service", v, base(func(c map[string]any) { c["client_id"] = "alice" }), ClassService, ""},
		{"sub != client_id is user", v, base(func(c map[string]any) {}), ClassUser, ""},
		{"no client_id no class", v, base(func(c map[string]any) { delete(c, "client_id") }), 0, ReasonClass},
		{"claim wins over sub==client_id", v, base(func(c map[string]any) { c["client_id"] = "alice"; c["token_class"] = "user" }), ClassUser, ""},
		{"class claim not a string", v, base(func(c map[string]any) { c["token_class"] = 1 }), 0, ReasonClass},
		{"custom rule", custom, base(func(c map[string]any) { c["grant"] = "client_credentials" }), ClassService, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.v.Verify(context.Background(), tc.tok)
			if ReasonOf(err) != tc.reason {
				t.Fatalf("err %v, want %q", err, tc.reason)
			}
			if err == nil && c.Class() != tc.want {
				t.Fatalf("class %v, want %v", c.Class(), tc.want)
			}
		})
	}
}

func TestProfiles(t *testing.T) {
	clock := newClock()
	now := clock.Now()
	k1 := jwttest.NewKey(t, "ES256", "k1")
	k2 := jwttest.NewKey(t, "RS256", "k2")
	v, err := New(Config{Now: clock.Now, Issuers: []Issuer{
		{Issuer: "https://a.test", Keys: jwttest.Set(t, k1), Audiences: []string{"x", "y"}, Algorithms: []string{"ES256"}},
		{Issuer: "https://b.test", Keys: jwttest.Set(t, k2), AllAudiences: []string{"x", "y"}, SkipTypeCheck: true, MaxLifetime: 10 * time.Minute},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	mint := func(k *jwttest.Key, iss string, aud any, typ string, life time.Duration) string {
		c := jwttest.Claims(iss, "", "alice", now)
		c["aud"] = aud
		c["exp"] = now.Add(life).Unix()
		h := k.Header()
		if typ == "" {
			delete(h, "typ")
		} else {
			h["typ"] = typ
		}
		return k.MintWith(t, h, c)
	}
	for _, tc := range []struct {
		name   string
		tok    string
		reason Reason
	}{
		{"a: any-of audience", mint(k1, "https://a.test", "y", "at+jwt", time.Minute), ""},
		{"a: typ with application/ prefix", mint(k1, "https://a.test", "x", "application/AT+JWT", time.Minute), ""},
		{"a: key of b", mint(k2, "https://a.test", "x", "at+jwt", time.Minute), ReasonAlgorithm},
		{"b: all-of audience", mint(k2, "https://b.test", []string{"y", "x"}, "", time.Minute), ""},
		{"b: one audience missing", mint(k2, "https://b.test", "x", "", time.Minute), ReasonAudience},
		{"b: own lifetime", mint(k2, "https://b.test", []string{"x", "y"}, "JWT", 20*time.Minute), ReasonLifetime},
		{"b: token of a's key", mint(k1, "https://b.test", []string{"x", "y"}, "", time.Minute), ReasonUnknownKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := v.Verify(context.Background(), tc.tok); ReasonOf(err) != tc.reason {
				t.Fatalf("err %v, want %q", err, tc.reason)
			}
		})
	}
}

func TestLeeway(t *testing.T) {
	clock := newClock()
	key := jwttest.NewKey(t, "ES256", "k1")
	v := newStatic(t, clock, nil, key)
	strict := newStatic(t, clock, func(c *Config) { c.Issuers[0].NoLeeway = true }, key)
	now := clock.Now()
	c := jwttest.Claims(testIss, testAud, "a", now)
	c["exp"] = now.Add(-10 * time.Second).Unix()
	c["iat"] = now.Add(-time.Minute).Unix()
	c["nbf"] = now.Add(10 * time.Second).Unix()
	tok := key.Mint(t, c)
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("within leeway: %v", err)
	}
	if _, err := strict.Verify(context.Background(), tok); ReasonOf(err) != ReasonExpired {
		t.Fatalf("NoLeeway: %v", err)
	}
}

func TestCache(t *testing.T) {
	clock := newClock()
	key := jwttest.NewKey(t, "ES256", "k1")
	rec := &recorder{}
	v := newStatic(t, clock, func(c *Config) { c.CacheSize = 4; c.CacheTTL = time.Minute; c.Observe = rec.observe }, key)
	ctx := context.Background()
	tok := key.Mint(t, jwttest.Claims(testIss, testAud, "alice", clock.Now())) // exp now+5m
	for i := range 3 {
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
		if rec.last().Cached != (i > 0) {
			t.Fatalf("verification %d cached=%v", i, rec.last().Cached)
		}
	}
	// The TTL cap ends the entry before exp.
	clock.Advance(time.Minute)
	if _, err := v.Verify(ctx, tok); err != nil || rec.last().Cached {
		t.Fatalf("after TTL: err %v cached %v", err, rec.last().Cached)
	}
	// exp is re-checked on hits: the entry cannot outlive the token.
	short := jwttest.Claims(testIss, testAud, "bob", clock.Now())
	short["exp"] = clock.Now().Add(20 * time.Second).Unix()
	stok := key.Mint(t, short)
	if _, err := v.Verify(ctx, stok); err != nil {
		t.Fatal(err)
	}
	clock.Advance(20*time.Second + DefaultLeeway - time.Second)
	if _, err := v.Verify(ctx, stok); err != nil || !rec.last().Cached {
		t.Fatalf("before exp: err %v cached %v", err, rec.last().Cached)
	}
	clock.Advance(time.Second)
	if _, err := v.Verify(ctx, stok); ReasonOf(err) != ReasonExpired {
		t.Fatalf("cached token past exp: %v", err)
	}
	// Bounded: many tokens never grow it past its size.
	for i := range 20 {
		c := jwttest.Claims(testIss, testAud, "u"+string(rune('a'+i)), clock.Now())
		if _, err := v.Verify(ctx, key.Mint(t, c)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(v.cache.m); n > 4 {
		t.Fatalf("cache holds %d entries, max 4", n)
	}
	// Route requirements apply to cached verifications too.
	h := routes(v)
	if w := get(h, "/user", "Bearer "+key.Mint(t, jwttest.ServiceClaims(testIss, testAud, "w", clock.Now()))); w.Code != 403 {
		t.Fatal(w.Code)
	}
	svc := key.Mint(t, jwttest.ServiceClaims(testIss, testAud, "w2", clock.Now()))
	for range 2 {
		if w := get(h, "/user", "Bearer "+svc); w.Code != 403 {
			t.Fatalf("cached service token on user route: %d", w.Code)
		}
	}
}

func TestTokenSources(t *testing.T) {
	clock := newClock()
	key := jwttest.NewKey(t, "ES256", "k1")
	tok := key.Mint(t, jwttest.Claims(testIss, testAud, "alice", clock.Now()))
	plain := routes(newStatic(t, clock, func(c *Config) { c.Realm = "malai" }, key))
	loose := routes(newStatic(t, clock, func(c *Config) { c.CookieName = "at"; c.AllowQuery = true }, key))
	req := func(h http.Handler, edit func(*http.Request)) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/any", nil)
		edit(r)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for _, tc := range []struct {
		name      string
		h         http.Handler
		edit      func(*http.Request)
		status    int
		challenge string
	}{
		{"header", plain, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }, 200, ""},
		{"scheme case-insensitive", plain, func(r *http.Request) { r.Header.Set("Authorization", "bearer "+tok) }, 200, ""},
		{"realm in bare challenge", plain, func(r *http.Request) {}, 401, `Bearer realm="malai"`},
		{"realm with error", plain, func(r *http.Request) { r.Header.Set("Authorization", "Bearer abc") }, 401, `Bearer realm="malai", error="invalid_token"`},
		{"cookie ignored by default", plain, func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "at", Value: tok}) }, 401, `Bearer realm="malai"`},
		{"query ignored by default", plain, func(r *http.Request) { r.URL.RawQuery = "access_token=" + tok }, 401, `Bearer realm="malai"`},
		{"token with space", plain, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok+" x") }, 401, `Bearer realm="malai", error="invalid_token"`},
		{"cookie when enabled", loose, func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "at", Value: tok}) }, 200, ""},
		{"query when enabled", loose, func(r *http.Request) { r.URL.RawQuery = "access_token=" + tok }, 200, ""},
		{"header and cookie", loose, func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer "+tok)
			r.AddCookie(&http.Cookie{Name: "at", Value: tok})
		}, 400, `Bearer error="invalid_request"`},
		{"two cookies", loose, func(r *http.Request) {
			r.AddCookie(&http.Cookie{Name: "at", Value: tok})
			r.AddCookie(&http.Cookie{Name: "at", Value: tok})
		}, 400, `Bearer error="invalid_request"`},
		{"basic header and cookie", loose, func(r *http.Request) {
			r.Header.Set("Authorization", "Basic YTpi")
			r.AddCookie(&http.Cookie{Name: "at", Value: tok})
		}, 200, ""},
		{"two query tokens", loose, func(r *http.Request) { r.URL.RawQuery = "access_token=" + tok + "&access_token=" + tok }, 400, `Bearer error="invalid_request"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := req(tc.h, tc.edit)
			if w.Code != tc.status || w.Header().Get("WWW-Authenticate") != tc.challenge {
				t.Fatalf("got %d %q, want %d %q", w.Code, w.Header().Get("WWW-Authenticate"), tc.status, tc.challenge)
			}
		})
	}
}

func TestErrorHandlerAndRequireAlone(t *testing.T) {
	clock := newClock()
	key := jwttest.NewKey(t, "ES256", "k1")
	var got error
	v := newStatic(t, clock, func(c *Config) {
		c.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
			got = err
			w.WriteHeader(499)
		}
	}, key)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, found := FromContext(r.Context()); !found {
			t.Error("no claims in context")
		}
	})
	// Require alone authenticates.
	h := v.RequireUser("read")(ok)
	w := get(h, "/")
	if w.Code != 499 || !errors.Is(got, ErrNoToken) || w.Header().Get("WWW-Authenticate") != "Bearer" {
		t.Fatalf("no token: %d %v %q", w.Code, got, w.Header().Get("WWW-Authenticate"))
	}
	c := jwttest.Claims(testIss, testAud, "alice", clock.Now())
	w = get(h, "/", "Bearer "+key.Mint(t, c))
	if !errors.Is(got, ErrInsufficientScope) || ReasonOf(got) != ReasonScope ||
		w.Header().Get("WWW-Authenticate") != `Bearer error="insufficient_scope", scope="read"` {
		t.Fatalf("missing scope: %v %q", got, w.Header().Get("WWW-Authenticate"))
	}
	c["scope"] = "read"
	if w := get(h, "/", "Bearer "+key.Mint(t, c)); w.Code != 200 {
		t.Fatalf("with scope: %d", w.Code)
	}
	// Claims from another Verifier are not trusted by this one.
	attacker := jwttest.NewKey(t, "ES256", "k1")
	other := newStatic(t, clock, nil, attacker)
	forgedCtx := other.Handler(h)
	if w := get(forgedCtx, "/", "Bearer "+attacker.Mint(t, c)); w.Code != 499 || ReasonOf(got) != ReasonSignature {
		t.Fatalf("other verifier's context: %d %v", w.Code, got)
	}
	// Requirement.Check for non-HTTP callers.
	cl, err := v.Verify(context.Background(), key.Mint(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if err := (Requirement{Class: ClassService}).Check(cl); !errors.Is(err, ErrInsufficientScope) {
		t.Fatalf("Check: %v", err)
	}
	if err := (Requirement{Audiences: []string{"elsewhere"}}).Check(cl); ReasonOf(err) != ReasonRouteAudience {
		t.Fatalf("route audience: %v", err)
	}
	if err := (Requirement{Class: ClassUser, Scopes: []string{"read"}, Audiences: []string{testAud}}).Check(cl); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

func TestDefaultErrorBody(t *testing.T) {
	clock := newClock()
	v := newStatic(t, clock, nil, jwttest.NewKey(t, "ES256", "k1"))
	w := get(routes(v), "/any", "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
	body := w.Body.String()
	if w.Code != 401 || !strings.Contains(body, `"type":"https://github.com/malai-sec/malai/blob/main/docs/problems.md#invalid-token"`) {
		t.Fatalf("%d %s", w.Code, body)
	}
	for _, leak := range []string{"eyJ", "c2ln", "jwtverify", "unknown"} {
		if strings.Contains(body, leak) {
			t.Errorf("body leaks %q: %s", leak, body)
		}
	}
}

func TestVerifyRefusesNonAlphabet(t *testing.T) {
	clock := newClock()
	key := jwttest.NewKey(t, "ES256", "k1")
	v := newStatic(t, clock, nil, key)
	tok := key.Mint(t, jwttest.Claims(testIss, testAud, "alice", clock.Now()))
	for _, bad := range []string{tok[:10] + "\n" + tok[10:], tok[:10] + "\r" + tok[10:], " " + tok, tok + "="} {
		if _, err := v.Verify(context.Background(), bad); ReasonOf(err) != ReasonMalformed {
			t.Errorf("%q: %v", bad[:12], err)
		}
	}
	if _, err := v.Verify(context.Background(), ""); !errors.Is(err, ErrNoToken) {
		t.Errorf("empty: %v", err)
	}
}
