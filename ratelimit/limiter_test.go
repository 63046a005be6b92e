package ratelimit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/malai-sec/malai/clientip"
	"github.com/malai-sec/malai/ratelimit"
	"github.com/malai-sec/malai/ratelimit/memstore"
	"github.com/malai-sec/malai/ratelimit/storetest"
	"github.com/malai-sec/malai/route"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

// countingStore counts calls, to prove some answers need no store call.
type countingStore struct {
	ratelimit.Store
	calls atomic.Int64
}

func (c *countingStore) Allow(ctx context.Context, key string, l ratelimit.Limit, n int) (ratelimit.Result, error) {
	c.calls.Add(1)
	return c.Store.Allow(ctx, key, l, n)
}

func newMem(t *testing.T, clock *storetest.Clock) *countingStore {
	t.Helper()
	st, err := memstore.New(memstore.Config{Now: clock.Now, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &countingStore{Store: st}
}

func newLimiter(t *testing.T, cfg ratelimit.Config) *ratelimit.Limiter {
	t.Helper()
	l, err := ratelimit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if a, ok := clientip.FromContext(r.Context()); ok {
		w.Header().Set("X-Client", a.String())
	}
	w.WriteHeader(http.StatusNoContent)
})

func do(h http.Handler, remote string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/x", nil)
	r.RemoteAddr = remote
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

type problemBody struct {
	Type       string `json:"type"`
	Title      string `json:"title"`
	Status     int    `json:"status"`
	Detail     string `json:"detail"`
	Policy     string `json:"policy"`
	RetryAfter int    `json:"retry_after"`
}

func decodeProblem(t *testing.T, w *httptest.ResponseRecorder) problemBody {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, body %q", ct, w.Body)
	}
	var p problemBody
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHandlerBurstRefillAndHeaders(t *testing.T) {
	clock := storetest.NewClock(t0)
	lim := newLimiter(t, ratelimit.Config{
		Store:         newMem(t, clock),
		Policies:      []ratelimit.Policy{{Name: "ip", Limit: 2, Period: 10 * time.Second}},
		LegacyHeaders: true,
	})
	h := lim.Handler(okHandler)
	type want struct {
		status                            int
		rateLimit, retryAfter, xRemaining string
	}
	steps := []struct {
		advance time.Duration
		want    want
	}{
		{0, want{204, `"ip";r=1;t=5`, "", "1"}},
		{0, want{204, `"ip";r=0;t=10`, "", "0"}},
		{0, want{429, `"ip";r=0;t=10`, "5", "0"}},
		{4 * time.Second, want{429, `"ip";r=0;t=6`, "1", "0"}},
		{time.Second, want{204, `"ip";r=0;t=10`, "", "0"}},
		{time.Minute, want{204, `"ip";r=1;t=5`, "", "1"}},
	}
	for i, s := range steps {
		clock.Advance(s.advance)
		w := do(h, "198.51.100.7:1234")
		got := want{w.Code, w.Header().Get("RateLimit"), w.Header().Get("Retry-After"), w.Header().Get("X-RateLimit-Remaining")}
		if diff := cmp.Diff(s.want, got, cmp.AllowUnexported(want{})); diff != "" {
			t.Fatalf("step %d (-want +got):\n%s", i, diff)
		}
		if p := w.Header().Get("RateLimit-Policy"); p != `"ip";q=2;w=10` {
			t.Fatalf("step %d: RateLimit-Policy %q", i, p)
		}
		if w.Code == 429 {
			p := decodeProblem(t, w)
			if p.Status != 429 || !strings.HasSuffix(p.Type, "#rate-limited") || p.Policy != "ip" || p.RetryAfter < 1 {
				t.Fatalf("step %d: problem %+v", i, p)
			}
		}
	}
}

func TestIPv6Bucketing(t *testing.T) {
	clock := storetest.NewClock(t0)
	lim := newLimiter(t, ratelimit.Config{
		Store: newMem(t, clock),
		Policies: []ratelimit.Policy{
			{Name: "ip64", Limit: 1, Period: time.Hour},
			{Name: "ip48", Limit: 2, Period: time.Hour, IPv6Prefix: 48, IPv4Prefix: 24},
		},
	})
	h := lim.Handler(okHandler)
	for i, c := range []struct {
		remote string
		want   int
	}{
		{"[2001:db8:1:1::1]:1", 204},
		{"[2001:db8:1:1:ffff:ffff:ffff:ffff]:1", 429}, // same /64: rotating addresses gains nothing
		{"[2001:db8:1:2::1]:1", 204},                  // new /64, same /48: second of two
		{"[2001:db8:1:3::1]:1", 429},                  // new /64 but the /48 tier is spent
		{"[2001:db8:2::1]:1", 204},                    // another /48
		{"192.0.2.1:1", 204},
		{"[::ffff:192.0.2.1]:1", 429}, // mapped form is the same host
		{"192.0.2.2:1", 204},          // new /32, same /24 (second of two)
		{"192.0.2.3:1", 429},
	} {
		if w := do(h, c.remote); w.Code != c.want {
			t.Fatalf("request %d from %s: %d, want %d", i, c.remote, w.Code, c.want)
		}
	}
}

func TestClientAddressFromTrustedProxiesOnly(t *testing.T) {
	clock := storetest.NewClock(t0)
	lim := newLimiter(t, ratelimit.Config{
		Store:          newMem(t, clock),
		Policies:       []ratelimit.Policy{{Name: "ip", Limit: 1, Period: time.Hour}},
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
	})
	h := lim.Handler(okHandler)
	// An untrusted client cannot escape its limit by inventing XFF values.
	if w := do(h, "203.0.113.5:1", "X-Forwarded-For", "1.1.1.1"); w.Code != 204 || w.Header().Get("X-Client") != "203.0.113.5" {
		t.Fatalf("first: %d %q", w.Code, w.Header().Get("X-Client"))
	}
	if w := do(h, "203.0.113.5:1", "X-Forwarded-For", "2.2.2.2"); w.Code != 429 {
		t.Fatalf("spoofed XFF escaped the limit: %d", w.Code)
	}
	// Behind the trusted proxy each client has its own key.
	if w := do(h, "10.0.0.1:1", "X-Forwarded-For", "9.9.9.9, 198.51.100.1"); w.Code != 204 || w.Header().Get("X-Client") != "198.51.100.1" {
		t.Fatalf("proxied client: %d %q", w.Code, w.Header().Get("X-Client"))
	}
	if w := do(h, "10.0.0.2:1", "X-Forwarded-For", "8.8.8.8, 198.51.100.1"); w.Code != 429 {
		t.Fatalf("client-chosen XFF prefix escaped the limit: %d", w.Code)
	}
	// Garbage vouched for by a trusted proxy is a 400, never a guess.
	w := do(h, "10.0.0.1:1", "X-Forwarded-For", "garbage")
	if w.Code != 400 {
		t.Fatalf("garbage XFF: %d", w.Code)
	}
	if p := decodeProblem(t, w); !strings.HasSuffix(p.Type, "#client-address-invalid") || strings.Contains(w.Body.String(), "garbage") {
		t.Fatalf("garbage XFF problem: %s", w.Body)
	}
	if s := lim.Stats(); s.BadClientAddr != 1 || s.Limited != 2 || s.Allowed != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestSharedResolverAndContextAddress(t *testing.T) {
	clock := storetest.NewClock(t0)
	res, err := clientip.New(clientip.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Header: "X-Real-IP"})
	if err != nil {
		t.Fatal(err)
	}
	lim := newLimiter(t, ratelimit.Config{Store: newMem(t, clock), ClientIP: res,
		Policies: []ratelimit.Policy{{Name: "ip", Limit: 1, Period: time.Hour}}})
	h := lim.Handler(okHandler)
	if w := do(h, "10.1.1.1:1", "X-Real-IP", "2001:db8::5"); w.Header().Get("X-Client") != "2001:db8::5" {
		t.Fatalf("resolver not used: %q", w.Header().Get("X-Client"))
	}
	// A function-valued Resolver works too.
	old := newLimiter(t, ratelimit.Config{Store: newMem(t, clock), Resolver: res.Resolve,
		Policies: []ratelimit.Policy{{Name: "ip", Limit: 1, Period: time.Hour}}})
	if w := do(old.Handler(okHandler), "10.1.1.1:1", "X-Real-IP", "2001:db8::6"); w.Header().Get("X-Client") != "2001:db8::6" {
		t.Fatalf("Resolver not used: %q", w.Header().Get("X-Client"))
	}
	// An address already resolved upstream is reused.
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r = r.WithContext(clientip.NewContext(r.Context(), netip.MustParseAddr("192.0.2.44")))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Header().Get("X-Client") != "192.0.2.44" {
		t.Fatalf("context address ignored: %q", w.Header().Get("X-Client"))
	}
}

type principalKey struct{}

func TestPrincipalAndRoutePolicies(t *testing.T) {
	clock := storetest.NewClock(t0)
	lim := newLimiter(t, ratelimit.Config{
		Store: newMem(t, clock),
		Policies: []ratelimit.Policy{
			{Name: "ip", Limit: 100, Period: time.Hour},
			{Name: "user", Limit: 2, Period: time.Hour, Key: func(r *http.Request, _ netip.Addr) (string, bool) {
				sub, ok := r.Context().Value(principalKey{}).(string)
				return sub, ok
			}},
			{Name: "route", Limit: 3, Period: time.Hour, Key: ratelimit.ByRoute},
		},
	})
	mux := http.NewServeMux()
	mux.Handle("GET /transfers", lim.Handler(okHandler))
	req := func(sub, remote string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/transfers", nil)
		r.RemoteAddr = remote
		if sub != "" {
			r = r.WithContext(context.WithValue(r.Context(), principalKey{}, sub))
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		return w
	}
	w := req("alice", "192.0.2.1:1")
	if w.Code != 204 {
		t.Fatal(w.Code)
	}
	if got, want := w.Header().Get("RateLimit-Policy"), `"ip";q=100;w=3600, "user";q=2;w=3600, "route";q=3;w=3600`; got != want {
		t.Fatalf("RateLimit-Policy %q, want %q", got, want)
	}
	if got, want := w.Header().Get("RateLimit"), `"ip";r=99;t=36, "user";r=1;t=1800, "route";r=2;t=1200`; got != want {
		t.Fatalf("RateLimit %q, want %q", got, want)
	}
	if w := req("alice", "192.0.2.2:1"); w.Code != 204 {
		t.Fatal("alice's second request", w.Code)
	}
	// Alice is out of quota from any address.
	if w := req("alice", "192.0.2.3:1"); w.Code != 429 || decodeProblem(t, w).Policy != "user" {
		t.Fatalf("alice's third request: %d %s", w.Code, w.Body)
	}
	// An anonymous request skips the user policy; the route policy is
	// spent by alice's two admitted requests and this one.
	w = req("", "192.0.2.4:1")
	if w.Code != 204 || strings.Contains(w.Header().Get("RateLimit-Policy"), "user") {
		t.Fatalf("anonymous: %d %q", w.Code, w.Header().Get("RateLimit-Policy"))
	}
	if w := req("bob", "192.0.2.5:1"); w.Code != 429 || decodeProblem(t, w).Policy != "route" {
		t.Fatalf("route limit: %d %s", w.Code, w.Body)
	}
}

func TestReputation(t *testing.T) {
	clock := storetest.NewClock(t0)
	st := newMem(t, clock)
	rep, err := ratelimit.NewReputation(ratelimit.ReputationConfig{
		Deny:  []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:bad::/48")},
		Allow: []netip.Prefix{netip.MustParsePrefix("203.0.113.128/25")},
	})
	if err != nil {
		t.Fatal(err)
	}
	lim := newLimiter(t, ratelimit.Config{Store: st, Reputation: rep,
		Policies: []ratelimit.Policy{{Name: "ip", Limit: 1, Period: time.Hour}}})
	h := lim.Handler(okHandler)
	for _, remote := range []string{"203.0.113.7:1", "[::ffff:203.0.113.7]:1", "[2001:db8:bad:1::1]:1"} {
		w := do(h, remote)
		if w.Code != 403 || !strings.HasSuffix(decodeProblem(t, w).Type, "#ip-denied") {
			t.Fatalf("%s: %d %s", remote, w.Code, w.Body)
		}
	}
	if n := st.calls.Load(); n != 0 {
		t.Fatalf("denied addresses cost %d store calls, want 0", n)
	}
	// The allow-listed /25 inside the denied /24 is exempt from limits.
	for range 3 {
		if w := do(h, "203.0.113.200:1"); w.Code != 204 {
			t.Fatalf("allow-listed: %d", w.Code)
		}
	}
	if n := st.calls.Load(); n != 0 {
		t.Fatalf("exempt addresses cost %d store calls", n)
	}
	if w := do(h, "198.51.100.1:1"); w.Code != 204 {
		t.Fatalf("unlisted: %d", w.Code)
	}
	if s := lim.Stats(); s.Denied != 3 || s.Exempt != 3 || s.Allowed != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestAllowOutsideHTTP(t *testing.T) {
	clock := storetest.NewClock(t0)
	lim := newLimiter(t, ratelimit.Config{Store: newMem(t, clock),
		Policies: []ratelimit.Policy{{Name: "signin", Limit: 5, Period: time.Minute, Burst: 2}}})
	ctx := context.Background()
	key := ratelimit.IPKey(netip.MustParseAddr("2001:db8:7:7::1"), 32, 64)
	if key != "2001:db8:7:7::/64" {
		t.Fatalf("IPKey = %q", key)
	}
	var got []bool
	for range 3 {
		r, err := lim.Allow(ctx, "signin", key)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.Allowed)
	}
	if diff := cmp.Diff([]bool{true, true, false}, got); diff != "" {
		t.Fatal(diff)
	}
	clock.Advance(12 * time.Second) // one interval (60 s / 5)
	if r, _ := lim.Allow(ctx, "signin", key); !r.Allowed {
		t.Fatal("not refilled after one interval")
	}
	if _, err := lim.Allow(ctx, "nope", key); !errors.Is(err, ratelimit.ErrUnknownPolicy) {
		t.Fatalf("unknown policy: %v", err)
	}
}

func TestLongKeysAreHashed(t *testing.T) {
	clock := storetest.NewClock(t0)
	var seen []string
	rec := recordingStore{Store: newMem(t, clock), keys: &seen}
	lim := newLimiter(t, ratelimit.Config{Store: rec, Policies: []ratelimit.Policy{{Name: "k", Limit: 1, Period: time.Hour}}})
	long := strings.Repeat("a", 10_000)
	lim.Allow(context.Background(), "k", long)
	if len(seen) != 1 || len(seen[0]) > 100 || strings.Contains(seen[0], "aaaa") {
		t.Fatalf("store saw key %.80q", seen)
	}
	if r, _ := lim.Allow(context.Background(), "k", long); r.Allowed {
		t.Fatal("hashed key lost its state")
	}
}

type recordingStore struct {
	ratelimit.Store
	keys *[]string
}

func (s recordingStore) Allow(ctx context.Context, key string, l ratelimit.Limit, n int) (ratelimit.Result, error) {
	*s.keys = append(*s.keys, key)
	return s.Store.Allow(ctx, key, l, n)
}

func TestCustomErrorHandler(t *testing.T) {
	clock := storetest.NewClock(t0)
	var got error
	lim := newLimiter(t, ratelimit.Config{Store: newMem(t, clock),
		Policies: []ratelimit.Policy{{Name: "ip", Limit: 1, Period: time.Minute}},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			got = err
			w.WriteHeader(http.StatusTeapot)
		}})
	h := lim.Handler(okHandler)
	do(h, "192.0.2.1:1")
	w := do(h, "192.0.2.1:1")
	var le *ratelimit.LimitedError
	if w.Code != http.StatusTeapot || !errors.As(got, &le) || le.Policy != "ip" || le.RetryAfter != time.Minute || !errors.Is(got, ratelimit.ErrLimited) {
		t.Fatalf("ErrorHandler got %v, response %d", got, w.Code)
	}
	if w.Header().Get("Retry-After") != "60" || w.Header().Get("RateLimit") == "" {
		t.Fatalf("headers not set before ErrorHandler: %v", w.Header())
	}
}

func TestNewValidates(t *testing.T) {
	ok := ratelimit.Policy{Name: "p", Limit: 1, Period: time.Second}
	with := func(f func(p *ratelimit.Policy)) ratelimit.Config {
		p := ok
		f(&p)
		return ratelimit.Config{Policies: []ratelimit.Policy{p}}
	}
	for name, cfg := range map[string]ratelimit.Config{
		"empty name":       with(func(p *ratelimit.Policy) { p.Name = "" }),
		"name with quote":  with(func(p *ratelimit.Policy) { p.Name = `a"b` }),
		"zero limit":       with(func(p *ratelimit.Policy) { p.Limit = 0 }),
		"negative burst":   with(func(p *ratelimit.Policy) { p.Burst = -1 }),
		"zero period":      with(func(p *ratelimit.Policy) { p.Period = 0 }),
		"sub-µs interval":  with(func(p *ratelimit.Policy) { p.Limit = 2_000_000 }),
		"bad v6 prefix":    with(func(p *ratelimit.Policy) { p.IPv6Prefix = 129 }),
		"bad v4 prefix":    with(func(p *ratelimit.Policy) { p.IPv4Prefix = -1 }),
		"unknown outage":   with(func(p *ratelimit.Policy) { p.OnOutage = 9 }),
		"bad local limit":  with(func(p *ratelimit.Policy) { p.OnOutage, p.LocalLimit = ratelimit.FailLocal, -1 }),
		"duplicate name":   {Policies: []ratelimit.Policy{ok, ok}},
		"bad proxy prefix": {TrustedProxies: []netip.Prefix{{}}},
		"bad header":       {ClientIPHeader: "a b"},
	} {
		t.Run(name, func(t *testing.T) {
			l, err := ratelimit.New(cfg)
			if err == nil {
				l.Close()
				t.Fatal("New accepted a bad config")
			}
			if !errors.Is(err, ratelimit.ErrInvalidConfig) {
				t.Fatalf("%v does not match ErrInvalidConfig", err)
			}
		})
	}
	// The caller's Config is not modified.
	cfg := ratelimit.Config{Policies: []ratelimit.Policy{ok}}
	l := newLimiter(t, cfg)
	_ = l
	if cfg.Policies[0].Burst != 0 || cfg.Policies[0].IPv6Prefix != 0 || cfg.Store != nil {
		t.Fatalf("New wrote defaults into the caller's config: %+v", cfg)
	}
}

func TestZeroConfigIsStrictDefault(t *testing.T) {
	lim := newLimiter(t, ratelimit.Config{})
	h := lim.Handler(okHandler)
	w := do(h, "192.0.2.9:1", "X-Forwarded-For", "1.2.3.4")
	if w.Code != 204 || w.Header().Get("X-Client") != "192.0.2.9" {
		t.Fatalf("zero config trusted XFF: %d %q", w.Code, w.Header().Get("X-Client"))
	}
	if got := w.Header().Get("RateLimit-Policy"); got != `"ip";q=100;w=60` {
		t.Fatalf("default policy %q", got)
	}
}

// A caller that gives up is not a store outage: no hook, no 503 counted.
func TestCancelledRequestIsNotAnOutage(t *testing.T) {
	called := false
	lim := newLimiter(t, ratelimit.Config{
		Store:        cancelAwareStore{},
		OnStoreError: func(context.Context, string, ratelimit.Outage, error) { called = true },
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := lim.Allow(ctx, "ip", "k"); !errors.Is(err, context.Canceled) || errors.Is(err, ratelimit.ErrStoreUnavailable) {
		t.Fatalf("Allow with a cancelled context: %v", err)
	}
	if called || lim.Stats().StoreErrors != 0 {
		t.Fatalf("cancellation counted as an outage: hook %v, stats %+v", called, lim.Stats())
	}
}

type cancelAwareStore struct{}

func (cancelAwareStore) Allow(ctx context.Context, _ string, _ ratelimit.Limit, _ int) (ratelimit.Result, error) {
	if err := ctx.Err(); err != nil {
		return ratelimit.Result{}, err
	}
	return ratelimit.Result{Allowed: true}, nil
}
func (cancelAwareStore) Close() error { return nil }

func TestAllowNChargesTheCost(t *testing.T) {
	clock := time.Unix(1_700_000_000, 0)
	l, err := ratelimit.New(ratelimit.Config{Policies: []ratelimit.Policy{{Name: "ip", Limit: 10, Period: time.Minute}}, Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	r, err := l.AllowN(ctx, "ip", "k", 4)
	if err != nil || !r.Allowed || r.Remaining != 6 {
		t.Fatalf("cost 4: %+v, %v; want allowed with 6 left", r, err)
	}
	if r, err = l.AllowN(ctx, "ip", "k", 7); err != nil || r.Allowed || r.Remaining != 6 {
		t.Fatalf("cost 7 with 6 left: %+v, %v; want denied, nothing charged", r, err)
	}
	if r, err = l.AllowN(ctx, "ip", "k", 6); err != nil || !r.Allowed || r.Remaining != 0 {
		t.Fatalf("cost 6: %+v, %v", r, err)
	}
	if r, err = l.Allow(ctx, "ip", "k"); err != nil || r.Allowed {
		t.Fatalf("after the budget is spent: %+v, %v; want denied", r, err)
	}
	for _, n := range []int{0, 11} {
		if _, err := l.AllowN(ctx, "ip", "k", n); err == nil {
			t.Fatalf("cost %d accepted", n)
		}
	}
	if _, err := l.AllowN(ctx, "nope", "k", 1); !errors.Is(err, ratelimit.ErrUnknownPolicy) {
		t.Fatalf("unknown policy: %v", err)
	}
}

// Two limiters stacked (a per-IP one at the edge, a per-principal one
// behind authentication): the client sees both policies, on success and
// on the inner refusal, and the legacy fields name the tightest.
func TestStackedLimitersMergeHeaders(t *testing.T) {
	clock := storetest.NewClock(t0)
	outer := newLimiter(t, ratelimit.Config{Store: newMem(t, clock), LegacyHeaders: true,
		Policies: []ratelimit.Policy{{Name: "ip", Limit: 10, Period: time.Minute}}})
	inner := newLimiter(t, ratelimit.Config{Store: newMem(t, clock), LegacyHeaders: true,
		Policies: []ratelimit.Policy{{Name: "user", Limit: 2, Period: time.Minute,
			Key: func(*http.Request, netip.Addr) (string, bool) { return "alice", true }}}})
	h := outer.Handler(inner.Handler(okHandler))
	w := do(h, "198.51.100.7:1")
	if got := w.Header().Values("RateLimit-Policy"); len(got) != 1 || got[0] != `"ip";q=10;w=60, "user";q=2;w=60` {
		t.Fatalf("RateLimit-Policy %q", got)
	}
	if got := w.Header().Get("RateLimit"); got != `"ip";r=9;t=6, "user";r=1;t=30` {
		t.Fatalf("RateLimit %q", got)
	}
	if got := w.Header().Get("X-RateLimit-Remaining"); got != "1" {
		t.Fatalf("legacy remaining %q, want the tighter policy's 1", got)
	}
	do(h, "198.51.100.7:1")
	w = do(h, "198.51.100.7:1")
	if w.Code != 429 || w.Header().Get("RateLimit") != `"ip";r=7;t=18, "user";r=0;t=60` || w.Header().Get("Retry-After") == "" {
		t.Fatalf("inner refusal: %d RateLimit %q Retry-After %q", w.Code, w.Header().Get("RateLimit"), w.Header().Get("Retry-After"))
	}
}

func TestSkipExemptsRequests(t *testing.T) {
	clock := storetest.NewClock(t0)
	store := newMem(t, clock)
	lim := newLimiter(t, ratelimit.Config{Store: store,
		Policies: []ratelimit.Policy{{Name: "ip", Limit: 1, Period: time.Hour}},
		Skip:     func(r *http.Request) bool { return r.URL.Path == "/healthz" }})
	h := lim.Handler(okHandler)
	probe := func(path string) int {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	for range 5 {
		if c := probe("/healthz"); c != 204 {
			t.Fatalf("health check limited: %d", c)
		}
	}
	if store.calls.Load() != 0 {
		t.Fatalf("skipped requests reached the store %d times", store.calls.Load())
	}
	if probe("/x") != 204 || probe("/x") != 429 || probe("/healthz/") != 429 {
		t.Fatal("the skip predicate leaked to other paths")
	}
}

// A zero Store is per process and says so; store failures are logged
// (without the key) even with no OnStoreError hook.
func TestDefaultStoreAndFailuresAreLogged(t *testing.T) {
	var logs strings.Builder
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	l := newLimiter(t, ratelimit.Config{Logger: logger})
	if !strings.Contains(logs.String(), "counting in this process only") {
		t.Fatalf("no warning for the per-process store: %s", logs.String())
	}
	_ = l
	logs.Reset()
	failing := newLimiter(t, ratelimit.Config{Logger: logger, Store: failingStore{},
		Policies: []ratelimit.Policy{{Name: "ip", Limit: 1, Period: time.Second, OnOutage: ratelimit.FailOpen}}})
	h := failing.Handler(okHandler)
	for range 3 {
		if w := do(h, "198.51.100.7:1", "X-Secret-Key", "k"); w.Code != 204 {
			t.Fatalf("fail-open answered %d", w.Code)
		}
	}
	out := logs.String()
	if strings.Count(out, "ratelimit: store failed") != 1 || !strings.Contains(out, `"outage":"fail-open"`) || strings.Contains(out, "198.51.100.7") {
		t.Fatalf("store failure log (once per second, no key): %s", out)
	}
	if failing.Stats().StoreErrors != 3 {
		t.Fatalf("store errors %d", failing.Stats().StoreErrors)
	}
}

type failingStore struct{}

func (failingStore) Allow(context.Context, string, ratelimit.Limit, int) (ratelimit.Result, error) {
	return ratelimit.Result{}, errors.New("dial tcp 10.0.0.5:6379: connection refused")
}
func (failingStore) Close() error { return nil }

// ByRoute keys by the pattern resolved before routing too, and never by
// the raw path of an unrouted request.
func TestByRouteUsesRouteHook(t *testing.T) {
	clock := storetest.NewClock(t0)
	lim := newLimiter(t, ratelimit.Config{Store: newMem(t, clock),
		Policies: []ratelimit.Policy{{Name: "route", Limit: 1, Period: time.Hour, Key: ratelimit.ByRoute}}})
	mux := http.NewServeMux()
	mux.Handle("GET /accounts/{id}", okHandler)
	h := route.Handler(route.ServeMux(mux))(lim.Handler(mux))
	get := func(path string) int {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		return w.Code
	}
	if get("/accounts/1") != 204 || get("/accounts/2") != 429 {
		t.Fatal("one route, two keys")
	}
	for i := range 5 {
		if c := get(fmt.Sprintf("/random/%d", i)); c != 404 {
			t.Fatalf("an unrouted path was limited by path: %d", c)
		}
	}
}
