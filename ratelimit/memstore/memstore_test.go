package memstore_test

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/malai-sec/malai/ratelimit"
	"github.com/malai-sec/malai/ratelimit/memstore"
	"github.com/malai-sec/malai/ratelimit/storetest"
)

var _ ratelimit.Store = (*memstore.Store)(nil)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) ratelimit.Store {
		st, err := memstore.New(memstore.Config{Now: now, SweepInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}

func TestKeyCapWithMillionKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("1M keys: skipped in -short mode")
	}
	clock := storetest.NewClock(time.Unix(1_800_000_000, 0))
	const maxKeys = 100_000
	st, err := memstore.New(memstore.Config{MaxKeys: maxKeys, SweepInterval: -1, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l := ratelimit.Limit{Interval: time.Second, Burst: 10}
	buf := make([]byte, 0, 32)
	for i := range 1_000_000 {
		buf = strconv.AppendInt(append(buf[:0], "ip:"...), int64(i), 10)
		r, err := st.Allow(context.Background(), string(buf), l, 1)
		if err != nil || !r.Allowed {
			t.Fatalf("key %d: %+v, %v", i, r, err)
		}
		if i%100_000 == 0 {
			if n := st.Len(); n > maxKeys {
				t.Fatalf("after %d keys the store holds %d > cap %d", i+1, n, maxKeys)
			}
		}
	}
	if n := st.Len(); n > maxKeys || n < maxKeys*9/10 {
		t.Fatalf("store holds %d keys, want at most %d and close to it", n, maxKeys)
	}
}

func TestEvictionPrefersRefilledKeys(t *testing.T) {
	clock := storetest.NewClock(time.Unix(1_800_000_000, 0))
	st, err := memstore.New(memstore.Config{MaxKeys: 1, SweepInterval: -1, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	l := ratelimit.Limit{Interval: time.Second, Burst: 1}
	if r, _ := st.Allow(ctx, "a", l, 1); !r.Allowed {
		t.Fatal("first request denied")
	}
	if r, _ := st.Allow(ctx, "b", l, 1); !r.Allowed {
		t.Fatal("new key denied in a full store: eviction must make room")
	}
	if n := st.Len(); n != 1 {
		t.Fatalf("Len = %d, want 1", n)
	}
	if r, _ := st.Allow(ctx, "b", l, 1); r.Allowed {
		t.Fatal("the newest key lost its state")
	}
}

func TestSweepDropsOnlyRefilledKeys(t *testing.T) {
	clock := storetest.NewClock(time.Unix(1_800_000_000, 0))
	st, err := memstore.New(memstore.Config{SweepInterval: -1, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	short := ratelimit.Limit{Interval: time.Second, Burst: 1}
	long := ratelimit.Limit{Interval: time.Hour, Burst: 1}
	for i := range 100 {
		st.Allow(ctx, "short"+strconv.Itoa(i), short, 1)
	}
	st.Allow(ctx, "long", long, 1)
	if n := st.Sweep(); n != 0 {
		t.Fatalf("Sweep dropped %d keys before any refill", n)
	}
	clock.Advance(time.Second)
	if n := st.Sweep(); n != 100 {
		t.Fatalf("Sweep dropped %d keys, want the 100 refilled ones", n)
	}
	if r, _ := st.Allow(ctx, "long", long, 1); r.Allowed {
		t.Fatal("Sweep dropped a key that had not refilled")
	}
}

func TestBackgroundSweepAndClose(t *testing.T) {
	// The sweep goroutine runs on real ticks; the clock is already far
	// ahead, so the first tick drops the key. Polling Len on a channel-free
	// loop would sleep, so wait on the ticker's own effect with a deadline.
	clock := storetest.NewClock(time.Unix(1_800_000_000, 0))
	st, err := memstore.New(memstore.Config{SweepInterval: time.Millisecond, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	st.Allow(context.Background(), "k", ratelimit.Limit{Interval: time.Second, Burst: 1}, 1)
	clock.Advance(time.Hour)
	deadline := time.Now().Add(5 * time.Second)
	for st.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("background sweep never dropped the refilled key")
		}
		runtimeYield()
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if _, err := st.Allow(context.Background(), "k", ratelimit.Limit{Interval: time.Second, Burst: 1}, 1); !errors.Is(err, memstore.ErrClosed) {
		t.Fatalf("Allow after Close = %v, want ErrClosed", err)
	}
}

func TestNewRejectsNegativeCap(t *testing.T) {
	if _, err := memstore.New(memstore.Config{MaxKeys: -1}); err == nil {
		t.Fatal("New accepted MaxKeys -1")
	}
}

func BenchmarkAllow(b *testing.B) {
	st, _ := memstore.New(memstore.Config{SweepInterval: -1})
	defer st.Close()
	keys := make([]string, 4096)
	for i := range keys {
		keys[i] = "ip:10.0." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256)
	}
	l := ratelimit.Limit{Interval: time.Millisecond, Burst: 100}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		st.Allow(ctx, keys[i&4095], l, 1)
		i++
	}
}

func runtimeYield() { runtime.Gosched() }

func TestAllowDoesNotAllocate(t *testing.T) {
	st, err := memstore.New(memstore.Config{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	l := ratelimit.Limit{Interval: time.Millisecond, Burst: 10}
	st.Allow(ctx, "k", l, 1)
	if n := testing.AllocsPerRun(1000, func() { st.Allow(ctx, "k", l, 1) }); n != 0 {
		t.Fatalf("Allow allocates %v times per call", n)
	}
}
