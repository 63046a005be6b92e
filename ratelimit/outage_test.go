package ratelimit_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malai-sec/malai/internal/servicetest"
	"github.com/malai-sec/malai/ratelimit"
	"github.com/malai-sec/malai/ratelimit/redisstore"
	"github.com/malai-sec/malai/ratelimit/storetest"
)

// Each outage rule against a real Redis that becomes unreachable mid-run
// (a proxy in front of the shared server goes down) and comes back.
func TestRedisOutagePolicies(t *testing.T) {
	for _, tc := range []struct {
		rule ratelimit.Outage
		// codes during the outage for 4 requests from one address
		during []int
	}{
		{ratelimit.FailClosed, []int{503, 503, 503, 503}},
		{ratelimit.FailOpen, []int{204, 204, 204, 204}},
		// Local fallback at LocalLimit 2 (burst scaled to 2).
		{ratelimit.FailLocal, []int{204, 204, 429, 429}},
	} {
		t.Run(tc.rule.String(), func(t *testing.T) {
			rds := servicetest.NewRedis(t)
			proxy := servicetest.NewProxy(t, rds.Addr)
			client := rds.NewClient(t, proxy.Addr())
			clock := storetest.NewClock(t0)
			st, err := redisstore.New(redisstore.Config{Client: client, Prefix: rds.Prefix, Now: clock.Now, Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var hooked []string
			lim := newLimiter(t, ratelimit.Config{
				Store: st,
				Now:   clock.Now,
				Policies: []ratelimit.Policy{{Name: "ip", Limit: 10, Period: time.Minute,
					OnOutage: tc.rule, LocalLimit: 2}},
				OnStoreError: func(_ context.Context, policy string, applied ratelimit.Outage, err error) {
					mu.Lock()
					hooked = append(hooked, policy+"/"+applied.String())
					mu.Unlock()
				},
			})
			h := lim.Handler(okHandler)
			for i := range 3 {
				if w := do(h, "192.0.2.1:1"); w.Code != 204 {
					t.Fatalf("before outage, request %d: %d", i, w.Code)
				}
			}
			proxy.Down()
			for i, want := range tc.during {
				w := do(h, "192.0.2.1:1")
				if w.Code != want {
					t.Fatalf("during outage, request %d: %d, want %d (%s)", i, w.Code, want, w.Body)
				}
				switch want {
				case 503:
					p := decodeProblem(t, w)
					if !strings.HasSuffix(p.Type, "#service-unavailable") || w.Header().Get("Retry-After") == "" {
						t.Fatalf("503 problem %+v, Retry-After %q", p, w.Header().Get("Retry-After"))
					}
					if strings.Contains(w.Body.String(), "127.0.0.1") || strings.Contains(w.Body.String(), "redis") {
						t.Fatalf("503 leaks internals: %s", w.Body)
					}
				case 204:
					if tc.rule == ratelimit.FailOpen && w.Header().Get("RateLimit") != "" {
						t.Fatalf("fail-open invented a RateLimit header %q", w.Header().Get("RateLimit"))
					}
				}
			}
			mu.Lock()
			if len(hooked) != len(tc.during) || hooked[0] != "ip/"+tc.rule.String() {
				t.Fatalf("OnStoreError calls %q", hooked)
			}
			mu.Unlock()
			s := lim.Stats()
			if s.StoreErrors != uint64(len(tc.during)) {
				t.Fatalf("stats %+v", s)
			}
			switch tc.rule {
			case ratelimit.FailClosed:
				if s.FailedClosed != 4 {
					t.Fatalf("stats %+v", s)
				}
			case ratelimit.FailOpen:
				if s.FailedOpen != 4 {
					t.Fatalf("stats %+v", s)
				}
			case ratelimit.FailLocal:
				if s.FailedLocal != 4 || s.Limited != 2 {
					t.Fatalf("stats %+v", s)
				}
			}
			// Recovery: Redis still holds the 3 requests of before.
			proxy.Up()
			w := do(h, "192.0.2.1:1")
			if w.Code != 204 || w.Header().Get("RateLimit") != `"ip";r=6;t=24` {
				t.Fatalf("after recovery: %d %q", w.Code, w.Header().Get("RateLimit"))
			}
		})
	}
}

// Non-HTTP callers get the same rules.
func TestAllowDuringOutage(t *testing.T) {
	rds := servicetest.NewRedis(t)
	proxy := servicetest.NewProxy(t, rds.Addr)
	st, err := redisstore.New(redisstore.Config{Client: rds.NewClient(t, proxy.Addr()), Prefix: rds.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	lim := newLimiter(t, ratelimit.Config{Store: st, Policies: []ratelimit.Policy{
		{Name: "closed", Limit: 10, Period: time.Minute},
		{Name: "open", Limit: 10, Period: time.Minute, OnOutage: ratelimit.FailOpen},
	}})
	proxy.Down()
	ctx := context.Background()
	if _, err := lim.Allow(ctx, "closed", "k"); !isUnavailable(err) {
		t.Fatalf("closed: %v", err)
	}
	if r, err := lim.Allow(ctx, "open", "k"); err != nil || !r.Allowed || r.Remaining != -1 {
		t.Fatalf("open: %+v %v", r, err)
	}
}

func isUnavailable(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "ratelimit: store unavailable") &&
		errors.Is(err, ratelimit.ErrStoreUnavailable)
}
