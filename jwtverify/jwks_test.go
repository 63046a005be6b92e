package jwtverify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/malai-sec/malai/jwtverify/jwttest"
)

type remoteFixture struct {
	v       *Verifier
	srv     *jwttest.Server
	clock   *fakeClock
	refresh chan RefreshEvent
	rec     *recorder
}

func newRemote(t *testing.T, mod func(*Config), keys ...*jwttest.Key) *remoteFixture {
	t.Helper()
	f := &remoteFixture{srv: jwttest.NewServer(t, keys...), clock: newClock(),
		refresh: make(chan RefreshEvent, 64), rec: &recorder{}}
	cfg := Config{
		Issuers:   []Issuer{{Issuer: testIss, JWKSURL: f.srv.URL, FetchTimeout: testFetchTimeout, Audiences: []string{testAud}}},
		Now:       f.clock.Now,
		OnRefresh: func(e RefreshEvent) { f.refresh <- e },
		Observe:   f.rec.observe,
	}
	if mod != nil {
		mod(&cfg)
	}
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	f.v = v
	select {
	case <-v.Ready():
	case <-time.After(testWait):
		t.Fatal("verifier never became ready")
	}
	f.nextRefresh(t) // the start fetch
	return f
}

// nextRefresh waits for the next fetch attempt to finish.
func (f *remoteFixture) nextRefresh(t *testing.T) RefreshEvent {
	t.Helper()
	select {
	case e := <-f.refresh:
		return e
	case <-time.After(testWait):
		t.Fatal("no key-set fetch happened")
		return RefreshEvent{}
	}
}

func (f *remoteFixture) mint(t *testing.T, k *jwttest.Key) string {
	return k.Mint(t, jwttest.Claims(testIss, testAud, "alice", f.clock.Now()))
}

func TestRotationNewKIDAcceptedAfterOneRefresh(t *testing.T) {
	k1 := jwttest.NewKey(t, "ES256", "k1")
	k2 := jwttest.NewKey(t, "EdDSA", "k2")
	f := newRemote(t, nil, k1)
	ctx := context.Background()
	if _, err := f.v.Verify(ctx, f.mint(t, k1)); err != nil {
		t.Fatal(err)
	}
	// The issuer publishes k2 and starts signing with it at once.
	f.srv.SetKeys(t, k1, k2)
	if _, err := f.v.Verify(ctx, f.mint(t, k2)); err != nil {
		t.Fatalf("first token with the new kid refused: %v", err)
	}
	if e := f.nextRefresh(t); e.Err != nil || e.Trigger != "unknown_kid" || e.Added != 1 || e.Keys != 2 {
		t.Fatalf("refresh event %+v", e)
	}
	if _, err := f.v.Verify(ctx, f.mint(t, k1)); err != nil {
		t.Fatalf("old key refused after rotation: %v", err)
	}
	if got := f.srv.Hits(); got != 2 {
		t.Fatalf("%d fetches, want 2 (start + one refresh)", got)
	}
	for _, e := range f.rec.events {
		if !e.Accepted {
			t.Fatalf("a request failed during rotation: %+v", e)
		}
	}
}

func TestJWKSDownKeepsOldKeysUntilStaleness(t *testing.T) {
	k1 := jwttest.NewKey(t, "ES256", "k1")
	f := newRemote(t, nil, k1)
	ctx := context.Background()
	f.srv.SetStatus(http.StatusInternalServerError)

	// Past the refresh interval: the scheduled fetch fails, k1 still works.
	f.clock.Advance(DefaultRefresh + time.Second)
	if _, err := f.v.Verify(ctx, f.mint(t, k1)); err != nil {
		t.Fatalf("refused while JWKS down but keys fresh: %v", err)
	}
	if e := f.nextRefresh(t); e.Err == nil || e.Keys != 1 || e.Age != DefaultRefresh+time.Second {
		t.Fatalf("refresh event %+v, want a failure keeping 1 key", e)
	}
	// Just inside the staleness limit: still accepted.
	f.clock.Advance(DefaultMaxStaleness - DefaultRefresh - 2*time.Second)
	if _, err := f.v.Verify(ctx, f.mint(t, k1)); err != nil {
		t.Fatalf("refused inside the staleness limit: %v", err)
	}
	f.nextRefresh(t)
	// Past it: refused as unavailable, not as a bad token.
	f.clock.Advance(2 * time.Second)
	_, err := f.v.Verify(ctx, f.mint(t, k1))
	if ReasonOf(err) != ReasonKeysUnavailable {
		t.Fatalf("err %v, want keys_unavailable past staleness", err)
	}
	w := get(routes(f.v), "/any", "Bearer "+f.mint(t, k1))
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("HTTP status %d, want 503", w.Code)
	}
	// The server recovers: after the cooldown the next request fetches
	// and passes.
	f.srv.SetStatus(http.StatusOK)
	f.clock.Advance(DefaultCooldown)
	if _, err := f.v.Verify(ctx, f.mint(t, k1)); err != nil {
		t.Fatalf("refused after recovery: %v", err)
	}
}

func TestUnknownKIDFloodFetchesOncePerCooldown(t *testing.T) {
	k1 := jwttest.NewKey(t, "ES256", "k1")
	f := newRemote(t, nil, k1)
	flood := func(round int) {
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h := k1.Header()
				h["kid"] = fmt.Sprintf("rand-%d-%d", round, i)
				tok := k1.MintWith(t, h, jwttest.Claims(testIss, testAud, "mallory", f.clock.Now()))
				if _, err := f.v.Verify(context.Background(), tok); ReasonOf(err) != ReasonUnknownKey {
					t.Errorf("err %v, want unknown_key", err)
				}
			}()
		}
		wg.Wait()
	}
	flood(0)
	if got := f.srv.Hits(); got != 2 {
		t.Fatalf("%d fetches after first flood, want 2 (start + one)", got)
	}
	f.clock.Advance(DefaultCooldown / 2)
	flood(1)
	if got := f.srv.Hits(); got != 2 {
		t.Fatalf("%d fetches within the cooldown, want 2", got)
	}
	f.clock.Advance(DefaultCooldown / 2)
	flood(2)
	if got := f.srv.Hits(); got != 3 {
		t.Fatalf("%d fetches after the cooldown, want 3", got)
	}
	// Known keys kept working throughout.
	if _, err := f.v.Verify(context.Background(), f.mint(t, k1)); err != nil {
		t.Fatal(err)
	}
}

func TestRemovedKeyFlushesCache(t *testing.T) {
	k1 := jwttest.NewKey(t, "ES256", "k1")
	k2 := jwttest.NewKey(t, "ES256", "k2")
	f := newRemote(t, func(c *Config) { c.CacheSize = 100 }, k1, k2)
	ctx := context.Background()
	tok1, tok2 := f.mint(t, k1), f.mint(t, k2)
	for _, tok := range []string{tok1, tok2, tok1, tok2} {
		if _, err := f.v.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if e := f.rec.last(); !e.Cached {
		t.Fatalf("second verification not cached: %+v", e)
	}
	f.srv.SetKeys(t, k2) // k1 revoked
	f.clock.Advance(DefaultRefresh)
	if _, err := f.v.Verify(ctx, tok2); err != nil { // triggers the refresh
		t.Fatal(err)
	}
	if e := f.nextRefresh(t); e.Removed != 1 || e.Keys != 1 {
		t.Fatalf("refresh %+v, want one key removed", e)
	}
	if _, err := f.v.Verify(ctx, tok1); ReasonOf(err) != ReasonUnknownKey {
		t.Fatalf("token of removed key: %v, want unknown_key", err)
	}
	if _, err := f.v.Verify(ctx, tok2); err != nil || !f.rec.last().Cached {
		t.Fatalf("kept key lost its cache entry: %v %+v", err, f.rec.last())
	}
}

func TestCacheControlWithinBounds(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   time.Duration
	}{
		{"", DefaultRefresh},
		{"public, max-age=120", 2 * time.Minute},
		{"max-age=5", DefaultMinRefresh},
		{"max-age=86400", min(DefaultMaxRefresh, DefaultMaxStaleness/2)},
		{"no-store", DefaultMinRefresh},
	} {
		t.Run(tc.header, func(t *testing.T) {
			k1 := jwttest.NewKey(t, "EdDSA", "k1")
			srv := jwttest.NewServer(t, k1)
			srv.SetCacheControl(tc.header)
			clock := newClock()
			refresh := make(chan RefreshEvent, 8)
			v, err := New(Config{Issuers: []Issuer{{Issuer: testIss, JWKSURL: srv.URL, FetchTimeout: testFetchTimeout, Audiences: []string{testAud}}},
				Now: clock.Now, OnRefresh: func(e RefreshEvent) { refresh <- e }})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			recv(t, refresh)
			clock.Advance(tc.want - time.Second)
			tok := k1.Mint(t, jwttest.Claims(testIss, testAud, "a", clock.Now()))
			if _, err := v.Verify(context.Background(), tok); err != nil {
				t.Fatal(err)
			}
			if srv.Hits() != 1 {
				t.Fatalf("fetched before %v", tc.want)
			}
			clock.Advance(time.Second)
			if _, err := v.Verify(context.Background(), tok); err != nil {
				t.Fatal(err)
			}
			if e := recv(t, refresh); e.Trigger != "schedule" || srv.Hits() != 2 {
				t.Fatalf("no scheduled fetch at %v: %+v", tc.want, e)
			}
		})
	}
}

func TestJWKSDocuments(t *testing.T) {
	kid := jwttest.NewKey(t, "ES256", "k1")
	nokid := jwttest.NewKey(t, "ES256", "")
	nokid2 := jwttest.NewKey(t, "ES256", "")
	now := newClock().Now()
	claims := jwttest.Claims(testIss, testAud, "a", now)
	cases := []struct {
		name   string
		doc    string
		tok    string
		reason Reason // "" = accepted; keys_unavailable = document refused
	}{
		{"single key without kid", jwks(t, nokid), nokid.Mint(t, claims), ""},
		{"token without kid, one key fits", jwks(t, kid), kid.MintWith(t, map[string]any{"alg": "ES256", "typ": "at+jwt"}, claims), ""},
		{"two keys without kid", jwks(t, nokid, nokid2), nokid.Mint(t, claims), ReasonAmbiguousKey},
		{"use=enc skipped", strings.Replace(jwks(t, kid), `"use":"sig"`, `"use":"enc"`, 1), kid.Mint(t, claims), ReasonKeysUnavailable},
		{"duplicate member", strings.Replace(jwks(t, kid), `"kty":"EC"`, `"kty":"EC","kty":"EC"`, 1), kid.Mint(t, claims), ReasonKeysUnavailable},
		{"private key skipped", privateJWKS(t, kid), kid.Mint(t, claims), ReasonKeysUnavailable},
		{"symmetric key skipped", `{"keys":[{"kty":"oct","kid":"k1","k":"c2VjcmV0"}]}`, kid.Mint(t, claims), ReasonKeysUnavailable},
		{"too large", `{"keys":[],"pad":"` + strings.Repeat("x", DefaultMaxJWKSSize) + `"}`, kid.Mint(t, claims), ReasonKeysUnavailable},
		{"not JSON", `<html>`, kid.Mint(t, claims), ReasonKeysUnavailable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := jwttest.NewServer(t)
			srv.SetDocument([]byte(tc.doc))
			refresh := make(chan RefreshEvent, 8)
			v, err := New(Config{Issuers: []Issuer{{Issuer: testIss, JWKSURL: srv.URL, FetchTimeout: testFetchTimeout, Audiences: []string{testAud}}},
				Now: func() time.Time { return now }, OnRefresh: func(e RefreshEvent) { refresh <- e }})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			e := recv(t, refresh)
			if (e.Err == nil) != (tc.reason != ReasonKeysUnavailable) {
				t.Fatalf("fetch result %v", e.Err)
			}
			_, err = v.Verify(context.Background(), tc.tok)
			if ReasonOf(err) != tc.reason {
				t.Fatalf("err %v, want reason %q", err, tc.reason)
			}
		})
	}
}

func jwks(t *testing.T, keys ...*jwttest.Key) string {
	return string(jwttest.Set(t, keys...))
}

func TestCloseStopsFetching(t *testing.T) {
	k1 := jwttest.NewKey(t, "ES256", "k1")
	f := newRemote(t, nil, k1)
	if err := f.v.Close(); err != nil {
		t.Fatal(err)
	}
	_ = f.v.Close() // idempotent
	hits := f.srv.Hits()
	f.clock.Advance(DefaultRefresh + DefaultCooldown)
	// Known keys still verify; unknown kids and due refreshes fetch nothing.
	if _, err := f.v.Verify(context.Background(), f.mint(t, k1)); err != nil {
		t.Fatal(err)
	}
	h := k1.Header()
	h["kid"] = "new"
	if _, err := f.v.Verify(context.Background(), k1.MintWith(t, h, jwttest.Claims(testIss, testAud, "a", f.clock.Now()))); ReasonOf(err) != ReasonUnknownKey {
		t.Fatalf("unknown kid after Close: %v", err)
	}
	if f.srv.Hits() != hits {
		t.Fatal("a closed Verifier fetched")
	}
}

func TestUnknownKIDWaitHonoursContext(t *testing.T) {
	k1 := jwttest.NewKey(t, "ES256", "k1")
	doc := jwks(t, k1)
	var slow atomic.Bool
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slow.Load() {
			<-release
			return
		}
		_, _ = w.Write([]byte(doc))
	}))
	defer srv.Close()
	defer close(release) // before srv.Close, which waits for handlers
	clock := newClock()
	v, err := New(Config{Issuers: []Issuer{{Issuer: testIss, JWKSURL: srv.URL, FetchTimeout: testFetchTimeout, Audiences: []string{testAud}}}, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	waitReady(t, v)
	slow.Store(true)

	ctx, cancel := context.WithCancel(context.Background())
	h := k1.Header()
	h["kid"] = "rotating"
	tok := k1.MintWith(t, h, jwttest.Claims(testIss, testAud, "a", clock.Now()))
	done := make(chan error)
	go func() { _, err := v.Verify(ctx, tok); done <- err }()
	cancel()
	if err := <-done; ReasonOf(err) != ReasonContextCancelled {
		t.Fatalf("err %v, want context_cancelled", err)
	}
	// A known key is never held up by the fetch in flight.
	if _, err := v.Verify(context.Background(), k1.Mint(t, jwttest.Claims(testIss, testAud, "a", clock.Now()))); err != nil {
		t.Fatal(err)
	}
}

func TestReadyWaitsForFirstKeySet(t *testing.T) {
	k1 := jwttest.NewKey(t, "ES256", "k1")
	srv := jwttest.NewServer(t, k1)
	srv.SetStatus(http.StatusBadGateway)
	clock := newClock()
	refresh := make(chan RefreshEvent, 8)
	v, err := New(Config{Issuers: []Issuer{{Issuer: testIss, JWKSURL: srv.URL, FetchTimeout: testFetchTimeout, Audiences: []string{testAud}}},
		Now: clock.Now, OnRefresh: func(e RefreshEvent) { refresh <- e }})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if e := recv(t, refresh); e.Err == nil || e.Trigger != "start" || e.Keys != 0 {
		t.Fatalf("start fetch %+v", e)
	}
	select {
	case <-v.Ready():
		t.Fatal("ready without keys")
	default:
	}
	tok := k1.Mint(t, jwttest.Claims(testIss, testAud, "a", clock.Now()))
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrKeysUnavailable) {
		t.Fatalf("before keys: %v", err)
	}
	if e := recv(t, refresh); e.Trigger != "no_keys" || e.Err == nil {
		t.Fatalf("fetch for a token without keys: %+v", e)
	}
	srv.SetStatus(http.StatusOK)
	clock.Advance(DefaultCooldown)
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("after the server recovered: %v", err)
	}
	select {
	case <-v.Ready():
	case <-time.After(testWait):
		t.Fatal("never ready")
	}
}

// TestIssuersAreIndependent: two JWKS issuers; a flood of unknown kids
// against one never fetches the other's key set, and the other's tokens
// still verify while the first one's JWKS is down.
func TestIssuersAreIndependent(t *testing.T) {
	ka, kb := jwttest.NewKey(t, "ES256", "a1"), jwttest.NewKey(t, "EdDSA", "b1")
	sa, sb := jwttest.NewServer(t, ka), jwttest.NewServer(t, kb)
	clock := newClock()
	v, err := New(Config{Now: clock.Now, Issuers: []Issuer{
		{Issuer: "https://a.test", JWKSURL: sa.URL, FetchTimeout: testFetchTimeout, Audiences: []string{testAud}},
		{Issuer: "https://b.test", JWKSURL: sb.URL, FetchTimeout: testFetchTimeout, Audiences: []string{testAud}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	waitReady(t, v)
	sa.SetStatus(http.StatusInternalServerError)
	for i := range 20 {
		h := ka.Header()
		h["kid"] = fmt.Sprint("x", i)
		tok := ka.MintWith(t, h, jwttest.Claims("https://a.test", testAud, "m", clock.Now()))
		if _, err := v.Verify(context.Background(), tok); ReasonOf(err) != ReasonUnknownKey {
			t.Fatalf("unknown kid at a: %v", err)
		}
	}
	if sa.Hits() != 2 || sb.Hits() != 1 {
		t.Fatalf("fetches a=%d b=%d, want 2 and 1", sa.Hits(), sb.Hits())
	}
	if _, err := v.Verify(context.Background(), kb.Mint(t, jwttest.Claims("https://b.test", testAud, "u", clock.Now()))); err != nil {
		t.Fatalf("issuer b: %v", err)
	}
	// A token from a, signed with b's key under b's kid, is refused: keys
	// never cross issuers.
	h := kb.Header()
	if _, err := v.Verify(context.Background(), kb.MintWith(t, h, jwttest.Claims("https://a.test", testAud, "u", clock.Now()))); ReasonOf(err) != ReasonUnknownKey {
		t.Fatalf("b's key for a's issuer: %v", err)
	}
}

// While the keys are unavailable the answer is 503 with Retry-After, and
// a custom ErrorHandler gets the header already set.
func TestUnavailableKeepsRetryAfterUnderCustomHandler(t *testing.T) {
	k1 := jwttest.NewKey(t, "ES256", "k1")
	srv := jwttest.NewServer(t, k1)
	srv.SetStatus(http.StatusServiceUnavailable)
	clock := newClock()
	var got error
	v, err := New(Config{Issuers: []Issuer{{Issuer: testIss, JWKSURL: srv.URL, FetchTimeout: testFetchTimeout, Audiences: []string{testAud}}},
		Now: clock.Now, ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) { got = err; w.WriteHeader(599) }})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	tok := k1.Mint(t, jwttest.Claims(testIss, testAud, "a", clock.Now()))
	w := get(v.Handler(http.NotFoundHandler()), "/", "Bearer "+tok)
	if w.Code != 599 || !errors.Is(got, ErrUnavailable) || w.Header().Get("Retry-After") == "" {
		t.Fatalf("status %d err %v Retry-After %q", w.Code, got, w.Header().Get("Retry-After"))
	}
	rec := httptest.NewRecorder()
	DefaultErrorHandler(rec, httptest.NewRequest("GET", "/", nil), got)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "5" {
		t.Fatalf("DefaultErrorHandler alone: %d %q", rec.Code, rec.Header().Get("Retry-After"))
	}
}
