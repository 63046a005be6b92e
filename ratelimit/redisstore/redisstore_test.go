package redisstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/malai-sec/malai/internal/servicetest"
	"github.com/malai-sec/malai/ratelimit"
	"github.com/malai-sec/malai/ratelimit/redisstore"
	"github.com/malai-sec/malai/ratelimit/storetest"
)

var _ ratelimit.Store = (*redisstore.Store)(nil)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) ratelimit.Store {
		rds := servicetest.NewRedis(t)
		st, err := redisstore.New(redisstore.Config{Client: rds.Client, Prefix: rds.Prefix, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}

// The conformance suite again, with the local denial cache off, so every
// decision in the tables is Redis's own.
func TestConformanceWithoutDenyCache(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) ratelimit.Store {
		rds := servicetest.NewRedis(t)
		st, err := redisstore.New(redisstore.Config{Client: rds.Client, Prefix: rds.Prefix, Now: now, DenyCacheSize: -1})
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}

// With Now unset the script reads Redis TIME. An hour-long interval keeps
// the test free of timing: nothing refills while it runs.
func TestServerClock(t *testing.T) {
	rds := servicetest.NewRedis(t)
	st, err := redisstore.New(redisstore.Config{Client: rds.Client, Prefix: rds.Prefix, DenyCacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l := ratelimit.Limit{Interval: time.Hour, Burst: 2}
	for i, wantAllowed := range []bool{true, true, false} {
		r, err := st.Allow(ctx, "k", l, 1)
		if err != nil {
			t.Fatal(err)
		}
		if r.Allowed != wantAllowed {
			t.Fatalf("call %d: %+v", i, r)
		}
	}
	ttl, err := rds.Client.PTTL(ctx, rds.Prefix+"k").Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 2*time.Hour-time.Minute || ttl > 2*time.Hour+time.Second {
		t.Fatalf("key TTL %v, want about 2h + 1s: keys expire a second after a full refill", ttl)
	}
}

// A denied key is answered locally: with the key deleted behind the
// store's back and Redis unreachable, the denial still stands, and it
// lifts exactly when the key would refill.
func TestDenyCacheSkipsRoundTrip(t *testing.T) {
	rds := servicetest.NewRedis(t)
	proxy := servicetest.NewProxy(t, rds.Addr)
	clock := storetest.NewClock(time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC))
	st, err := redisstore.New(redisstore.Config{Client: rds.NewClient(t, proxy.Addr()), Prefix: rds.Prefix, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l := ratelimit.Limit{Interval: time.Second, Burst: 1}
	if r, err := st.Allow(ctx, "k", l, 1); err != nil || !r.Allowed {
		t.Fatalf("first: %+v %v", r, err)
	}
	if r, err := st.Allow(ctx, "k", l, 1); err != nil || r.Allowed {
		t.Fatalf("second: %+v %v", r, err)
	}
	proxy.Down()
	clock.Advance(500 * time.Millisecond)
	r, err := st.Allow(ctx, "k", l, 1)
	if err != nil || r.Allowed || r.RetryAfter != 500*time.Millisecond {
		t.Fatalf("cached denial: %+v %v", r, err)
	}
	clock.Advance(500 * time.Millisecond)
	if _, err := st.Allow(ctx, "k", l, 1); err == nil {
		t.Fatal("after the denial lifted the store answered without Redis")
	}
}

func TestOutageIsAnError(t *testing.T) {
	rds := servicetest.NewRedis(t)
	proxy := servicetest.NewProxy(t, rds.Addr)
	st, err := redisstore.New(redisstore.Config{Client: rds.NewClient(t, proxy.Addr()), Prefix: rds.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	l := ratelimit.Limit{Interval: time.Second, Burst: 10}
	if _, err := st.Allow(context.Background(), "k", l, 1); err != nil {
		t.Fatal(err)
	}
	proxy.Down()
	if r, err := st.Allow(context.Background(), "k", l, 1); err == nil {
		t.Fatalf("Allow with Redis down = %+v, nil", r)
	}
	proxy.Up()
	if _, err := st.Allow(context.Background(), "k", l, 1); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	st.Close()
	if _, err := st.Allow(context.Background(), "k", l, 1); !errors.Is(err, redisstore.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := redisstore.New(redisstore.Config{}); err == nil {
		t.Fatal("New accepted a nil client")
	}
	rds := servicetest.NewRedis(t)
	if _, err := redisstore.New(redisstore.Config{Client: rds.Client, Timeout: -1}); err == nil {
		t.Fatal("New accepted a negative timeout")
	}
}
