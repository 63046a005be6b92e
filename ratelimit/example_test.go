package ratelimit_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"time"

	"github.com/malai-sec/malai/clientip"
	"github.com/malai-sec/malai/ratelimit"
	"github.com/malai-sec/malai/ratelimit/memstore"
)

// The reference gateway: a reputation deny list, then a per-network limit
// for everyone (IPv6 /64), behind a trusted load balancer.
func Example() {
	rep, err := ratelimit.NewReputation(ratelimit.ReputationConfig{
		// In production: DenyFiles: []string{"/etc/malai/deny.txt"},
		// reloaded with rep.Reload() on SIGHUP.
		Deny: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
	})
	if err != nil {
		panic(err)
	}
	proxies, err := clientip.New(clientip.Config{
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
	})
	if err != nil {
		panic(err)
	}
	store, err := memstore.New(memstore.Config{}) // a redisstore.Store for a multi-node gateway
	if err != nil {
		panic(err)
	}
	defer store.Close()
	lim, err := ratelimit.New(ratelimit.Config{
		Store:      store,
		Reputation: rep,
		ClientIP:   proxies,
		Policies:   []ratelimit.Policy{{Name: "ip", Limit: 2, Period: time.Hour}},
	})
	if err != nil {
		panic(err)
	}
	defer lim.Close()
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	h := lim.Handler(app)

	send := func(xff string) {
		r := httptest.NewRequest(http.MethodGet, "/accounts", nil)
		r.RemoteAddr = "10.0.0.2:44123" // the load balancer
		r.Header.Set("X-Forwarded-For", xff)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Println(strings.TrimSpace(fmt.Sprint(w.Code, " ", w.Header().Get("RateLimit"), " ", w.Header().Get("Retry-After"))))
	}
	send("2001:db8:1:1::1")
	send("1.2.3.4, 2001:db8:1:1::2") // same /64; the spoofed left hop is ignored
	send("2001:db8:1:1::3")
	send("203.0.113.9") // on the deny list
	// Output:
	// 200 "ip";r=1;t=1800
	// 200 "ip";r=0;t=3600
	// 429 "ip";r=0;t=3600 1800
	// 403
}

// A queue consumer limits work per account outside HTTP.
func ExampleLimiter_Allow() {
	store, err := memstore.New(memstore.Config{})
	if err != nil {
		panic(err)
	}
	defer store.Close()
	lim, err := ratelimit.New(ratelimit.Config{
		Store:    store,
		Policies: []ratelimit.Policy{{Name: "transfers", Limit: 10, Period: time.Minute, Burst: 2}},
	})
	if err != nil {
		panic(err)
	}
	defer lim.Close()
	for range 3 {
		res, err := lim.Allow(context.Background(), "transfers", "account-42")
		if err != nil {
			fmt.Println("store unavailable") // FailClosed: requeue the job
			continue
		}
		fmt.Println(res.Allowed, res.Remaining, res.RetryAfter.Round(time.Second))
	}
	// Output:
	// true 1 0s
	// true 0 0s
	// false 0 6s
}
