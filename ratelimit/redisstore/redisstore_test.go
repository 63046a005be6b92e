package redisstore_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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

// commandCounter counts the commands a client sends, by name.
type commandCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.mu.Lock()
		c.n[cmd.Name()]++
		c.mu.Unlock()
		return next(ctx, cmd)
	}
}
func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (c *commandCounter) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n
	c.n = map[string]int{}
	return n
}

func countingClient(t *testing.T, rds *servicetest.Redis) (*redis.Client, *commandCounter) {
	c := rds.NewClient(t, rds.Addr)
	cc := &commandCounter{n: map[string]int{}}
	c.AddHook(cc)
	return c, cc
}

// TestIdleKeysTakeOnePlainSet: on the server's clock, a key the server
// has expired (its bucket full) is decided by one SET NX and no script; a
// busy key by the script alone; a refused key locally; and a second host
// that does not know the key falls back from SET NX to the script.
func TestIdleKeysTakeOnePlainSet(t *testing.T) {
	ctx := context.Background()
	rds := servicetest.NewRedis(t)
	c, cc := countingClient(t, rds)
	st, err := redisstore.New(redisstore.Config{Client: c, Prefix: rds.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	l := ratelimit.Limit{Interval: time.Hour, Burst: 3}
	step := func(name string, wantAllowed bool, want map[string]int) {
		t.Helper()
		r, err := st.Allow(ctx, "k", l, 1)
		if err != nil || r.Allowed != wantAllowed {
			t.Fatalf("%s: %+v, %v; want allowed=%v", name, r, err, wantAllowed)
		}
		got := cc.take()
		for k := range got {
			if k != "set" && k != "evalsha" && k != "eval" {
				delete(got, k) // connection set-up, the clock sample
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%s: commands %v, want %v", name, got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("%s: commands %v, want %v", name, got, want)
			}
		}
	}
	step("idle key", true, map[string]int{"set": 1})
	step("busy key", true, map[string]int{"evalsha": 1})
	step("last of the burst", true, map[string]int{"evalsha": 1})
	step("refused by the script", false, map[string]int{"evalsha": 1})
	step("refused again, locally", false, map[string]int{})

	c2, cc2 := countingClient(t, rds)
	other, err := redisstore.New(redisstore.Config{Client: c2, Prefix: rds.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := other.Allow(ctx, "k", l, 1); err != nil || r.Allowed {
		t.Fatalf("another host on a spent key: %+v, %v", r, err)
	}
	got := cc2.take()
	if got["set"] != 1 || got["evalsha"] != 1 {
		t.Fatalf("another host's commands %v, want a failed SET NX then the script", got)
	}
}

// TestServerClockNeverAdmitsMoreThanTheRate: two stores (two hosts) share
// keys on the server's clock, taking the SET NX path whenever a key has
// expired and the script otherwise; across the run no key is admitted more
// than its burst plus one per interval elapsed.
func TestServerClockNeverAdmitsMoreThanTheRate(t *testing.T) {
	ctx := context.Background()
	rds := servicetest.NewRedis(t)
	var stores []*redisstore.Store
	var counters []*commandCounter
	for range 2 {
		c, cc := countingClient(t, rds)
		// a generous timeout: the shared machine may stall a call
		st, err := redisstore.New(redisstore.Config{Client: c, Prefix: rds.Prefix, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		stores, counters = append(stores, st), append(counters, cc)
	}
	l := ratelimit.Limit{Interval: 20 * time.Millisecond, Burst: 2}
	const keys, callsPerWorker, runFor = 3, 20000, 600 * time.Millisecond
	var allowed [keys]atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := stores[w%2]
			for i := 0; i < callsPerWorker && time.Since(start) < runFor; i++ {
				k := (w + i) % keys
				r, err := st.Allow(ctx, "k"+strconv.Itoa(k), l, 1)
				if err != nil {
					t.Error(err)
					return
				}
				if r.Allowed {
					allowed[k].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	bound := int64(l.Burst) + int64(elapsed/l.Interval) + 1
	for k := range allowed {
		if got := allowed[k].Load(); got > bound || got == 0 {
			t.Errorf("key %d admitted %d times in %v; GCRA allows at most %d", k, got, elapsed, bound)
		}
	}
	sets, scripts := 0, 0
	for _, cc := range counters {
		n := cc.take()
		sets, scripts = sets+n["set"], scripts+n["evalsha"]+n["eval"]
	}
	t.Logf("admitted %d, %d, %d in %v (bound %d); %d SET NX, %d scripts", allowed[0].Load(), allowed[1].Load(), allowed[2].Load(), elapsed, bound, sets, scripts)
}
