package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/idempotency"
	"github.com/malai-sec/malai/jwtverify/devissuer"
)

const (
	issuerURL = "https://malai-consumer.eu.auth0.com/"
	audience  = "https://api.consumer.example"
)

// redisClient connects to MALAI_TEST_REDIS_URL, or skips (fails under
// MALAI_REQUIRE_SERVICES=1), and removes the test's keys afterwards.
func redisClient(t *testing.T) (*redis.Client, string) {
	t.Helper()
	url := os.Getenv("MALAI_TEST_REDIS_URL")
	if url == "" {
		if os.Getenv("MALAI_REQUIRE_SERVICES") == "1" {
			t.Fatal("MALAI_TEST_REDIS_URL is not set")
		}
		t.Skip("set MALAI_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/0) to run the consumer scenario")
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("Redis at %s: %v", opts.Addr, err)
	}
	prefix := "consumer-test:" + strings.ReplaceAll(time.Now().Format("150405.000000000"), ".", "") + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		iter := c.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
		c.Close()
	})
	return c, prefix
}

type client struct {
	t   *testing.T
	h   http.Handler
	tok string
}

func (c client) do(method, path, key, body string) *httptest.ResponseRecorder {
	c.t.Helper()
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.RemoteAddr = "10.0.0.2:4000" // the load balancer
	r.Header.Set("X-Forwarded-For", "198.51.100.7")
	if c.tok != "" {
		r.Header.Set("Authorization", "Bearer "+c.tok)
	}
	if key != "" {
		r.Header.Set(idempotency.HeaderKey, key)
	}
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	w := httptest.NewRecorder()
	c.h.ServeHTTP(w, r)
	return w
}

// The scenario a team adopting Malai would try first, end to end against
// a real Redis: chi with Use, Group and With; Auth0-shaped tokens from a
// local issuer; bare Idempotency-Key values; two stacked limiters; the
// audit log replayed and verified.
func TestConsumerScenario(t *testing.T) {
	rdb, prefix := redisClient(t)
	idp, err := devissuer.New(devissuer.Config{Issuer: issuerURL, Shape: devissuer.Auth0})
	if err != nil {
		t.Fatal(err)
	}
	jwks := httptest.NewServer(idp)
	defer jwks.Close()
	svc, err := New(Options{
		Issuer: issuerURL, JWKSURL: jwks.URL, Audience: audience,
		Redis: rdb, Prefix: prefix, AuditDir: t.TempDir(),
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		PerIP:          100, PerUser: 6,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	mint := func(tok devissuer.Token) string {
		s, err := idp.Mint(tok)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	alice := client{t, svc.Handler, mint(devissuer.Token{Subject: "alice", ClientID: "spa", Audience: []string{audience},
		Scopes: []string{"accounts:read", "transfers:write"}})}
	anon := client{t, svc.Handler, ""}

	// Health checks skip the limits and need no token.
	for range 3 {
		if w := anon.do("GET", "/healthz", "", ""); w.Code != 200 || w.Header().Get("RateLimit") != "" {
			t.Fatalf("healthz: %d %q", w.Code, w.Header().Get("RateLimit"))
		}
	}
	// No token: 401 with the RFC 6750 challenge, as problem+json.
	if w := anon.do("GET", "/accounts/alice", "", ""); w.Code != 401 || w.Header().Get("WWW-Authenticate") != "Bearer" ||
		w.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("anonymous: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}

	// A transfer with a bare key, as an SDK sends it; the retry replays.
	key := "8e03978e-40d5-43e8-bc93-6894a57f9324"
	first := alice.do("POST", "/transfers", key, `{"to":"bob","amount":30}`)
	if first.Code != http.StatusCreated {
		t.Fatalf("transfer: %d %s", first.Code, first.Body)
	}
	// Both limiters' fields reach the client, merged.
	if got := first.Header().Get("RateLimit-Policy"); got != `"ip";q=100;w=60, "user";q=6;w=60` {
		t.Fatalf("RateLimit-Policy %q", got)
	}
	retry := alice.do("POST", "/transfers", key, `{"to":"bob","amount":30}`)
	if retry.Code != http.StatusCreated || retry.Header().Get(idempotency.HeaderReplayed) != "true" || retry.Body.String() != first.Body.String() {
		t.Fatalf("retry: %d replayed=%q", retry.Code, retry.Header().Get(idempotency.HeaderReplayed))
	}
	if w := alice.do("POST", "/transfers", key, `{"to":"bob","amount":31}`); w.Code != http.StatusUnprocessableEntity {
		t.Fatalf("same key, other payload: %d", w.Code)
	}
	if w := alice.do("POST", "/transfers", "", `{"to":"bob","amount":1}`); w.Code != http.StatusBadRequest {
		t.Fatalf("no key: %d", w.Code)
	}
	var acct struct{ Balance int64 }
	w := alice.do("GET", "/accounts/alice", "", "")
	if err := json.Unmarshal(w.Body.Bytes(), &acct); err != nil || acct.Balance != 970 {
		t.Fatalf("balance after one transfer and a replay: %d %s", w.Code, w.Body)
	}
	// A machine-to-machine token is a service token: refused on user routes.
	m2m := client{t, svc.Handler, mint(devissuer.Token{ClientID: "batch", Service: true, Audience: []string{audience},
		Scopes: []string{"transfers:write"}})}
	if w := m2m.do("POST", "/transfers", "k2", `{"to":"bob","amount":1}`); w.Code != http.StatusForbidden {
		t.Fatalf("service token on a user route: %d", w.Code)
	}
	// The per-user limit (6/min) runs out; the 429 carries both fields.
	var last *httptest.ResponseRecorder
	for range 6 {
		last = alice.do("GET", "/accounts/alice", "", "")
	}
	if last.Code != http.StatusTooManyRequests || last.Header().Get("Retry-After") == "" ||
		!strings.Contains(last.Header().Get("RateLimit"), `"ip";r=`) || !strings.Contains(last.Header().Get("RateLimit"), `"user";r=0`) {
		t.Fatalf("per-user limit: %d RateLimit %q", last.Code, last.Header().Get("RateLimit"))
	}

	// The audit log holds the one transfer; replay equals state; the
	// export verifies offline under the checkpoint key.
	ctx := context.Background()
	if _, err := svc.Audit.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	balances, err := svc.Replay(ctx)
	if err != nil || balances["alice"] != 970 || balances["bob"] != 30 {
		t.Fatalf("replay %v %v", balances, err)
	}
	exp, err := auditlog.LoadExport(ctx, svc.Store, svc.Origin, svc.Ring)
	if err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	if _, err := exp.WriteTo(&file); err != nil {
		t.Fatal(err)
	}
	back, err := auditlog.ReadExport(&file)
	if err != nil {
		t.Fatal(err)
	}
	rep := auditlog.Verify(ctx, back, auditlog.VerifyConfig{Origin: svc.Origin, Verifiers: []note.Verifier{svc.Verifier}})
	if !rep.OK() || rep.Rows != 1 {
		t.Fatalf("audit verification: %+v", rep)
	}
}
