package ratelimitbench

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/malai-sec/malai/ratelimit"
	"github.com/malai-sec/malai/ratelimit/memstore"
)

// keyedRate is what users of x/time/rate write for per-key limits: a map
// of limiters under a mutex, created on first use.
type keyedRate struct {
	mu    sync.Mutex
	m     map[string]*rate.Limiter
	limit rate.Limit
	burst int
}

func newKeyedRate(perSecond float64, burst int) *keyedRate {
	return &keyedRate{m: map[string]*rate.Limiter{}, limit: rate.Limit(perSecond), burst: burst}
}

func (k *keyedRate) Allow(key string) bool {
	k.mu.Lock()
	l, ok := k.m[key]
	if !ok {
		l = rate.NewLimiter(k.limit, k.burst)
		k.m[key] = l
	}
	k.mu.Unlock()
	return l.Allow()
}

// Sub-benchmarks: impl=malai is ratelimit/memstore, impl=peer is a map of
// golang.org/x/time/rate limiters.
const nKeys = 10_000

func keys() []string {
	ks := make([]string, nKeys)
	for i := range ks {
		ks[i] = "ip:2001:db8:" + strconv.FormatInt(int64(i), 16) + "::/64"
	}
	return ks
}

// 1000 requests per second per key, burst 100: every key stays allowed
// and busy, the common case.
var memLimit = ratelimit.Limit{Interval: time.Millisecond, Burst: 100}

func BenchmarkMemoryDecision(b *testing.B) {
	ks := keys()
	ctx := context.Background()
	b.Run("impl=malai", func(b *testing.B) {
		st, err := memstore.New(memstore.Config{SweepInterval: -1})
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		for _, k := range ks {
			st.Allow(ctx, k, memLimit, 1)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := st.Allow(ctx, ks[i%nKeys], memLimit, 1); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("impl=peer", func(b *testing.B) {
		kr := newKeyedRate(1000, 100)
		for _, k := range ks {
			kr.Allow(k)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			kr.Allow(ks[i%nKeys])
			i++
		}
	})
}

func BenchmarkMemoryDecisionParallel(b *testing.B) {
	ks := keys()
	ctx := context.Background()
	b.Run("impl=malai", func(b *testing.B) {
		st, _ := memstore.New(memstore.Config{SweepInterval: -1})
		defer st.Close()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				st.Allow(ctx, ks[i%nKeys], memLimit, 1)
				i += 7
			}
		})
	})
	b.Run("impl=peer", func(b *testing.B) {
		kr := newKeyedRate(1000, 100)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				kr.Allow(ks[i%nKeys])
				i += 7
			}
		})
	})
}

// BenchmarkMemoryBytesPerKey inserts b.N distinct keys, built per request
// the way a handler builds them, and reports the live heap they cost.
func BenchmarkMemoryBytesPerKey(b *testing.B) {
	measure := func(b *testing.B, insert func(key string)) {
		b.ReportAllocs()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		buf := make([]byte, 0, 48)
		for i := 0; b.Loop(); i++ {
			buf = strconv.AppendInt(append(buf[:0], "ip:2001:db8:"...), int64(i), 16)
			insert(string(append(buf, "::/64"...)))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(b.N), "bytes/key")
	}
	ctx := context.Background()
	long := ratelimit.Limit{Interval: time.Hour, Burst: 100}
	b.Run("impl=malai", func(b *testing.B) {
		st, _ := memstore.New(memstore.Config{SweepInterval: -1, MaxKeys: 1 << 26})
		defer st.Close()
		measure(b, func(k string) { st.Allow(ctx, k, long, 1) })
		runtime.KeepAlive(st)
	})
	b.Run("impl=peer", func(b *testing.B) {
		kr := newKeyedRate(1.0/3600, 100)
		measure(b, func(k string) { kr.Allow(k) })
		runtime.KeepAlive(kr)
	})
}
