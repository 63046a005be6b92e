package waf

import (
	"net/netip"
	"sync"
	"time"
)

// budget is each client's allowance of inspection time for heavy
// requests: a leaky bucket that holds up to burst of inspection time and
// drains at rate seconds per second. A client whose bucket is full gets
// no new heavy inspection until it has drained below full; light requests
// never pay. The admission caps how many inspections one client runs at
// once, the budget how much CPU they take over time: without it a client
// that keeps its one slot busy holds one core for as long as it likes.
//
// An entry exists only while its bucket is not empty, at most
// (burst + one inspection) / rate, and only after an inspection that held
// a slot, so the map is bounded by the pool's throughput.
type budget struct {
	rate  float64 // inspection seconds per second
	burst time.Duration
	now   func() time.Time

	mu        sync.Mutex
	used      map[netip.Prefix]*spent
	lastSweep time.Time
}

type spent struct {
	d  time.Duration // inspection time in the bucket as of at
	at time.Time
}

func newBudget(rate, burst time.Duration, now func() time.Time) *budget {
	if rate <= 0 {
		return nil
	}
	return &budget{rate: rate.Seconds(), burst: burst, now: now, used: map[netip.Prefix]*spent{}}
}

// level drains s to now and returns what is left (b.mu held).
func (b *budget) level(s *spent, now time.Time) time.Duration {
	if el := now.Sub(s.at); el > 0 {
		s.d -= time.Duration(float64(el) * b.rate)
		s.at = now
	}
	return max(s.d, 0)
}

// allow reports whether client key may start a heavy inspection, and if
// not, how long until it may.
func (b *budget) allow(key netip.Prefix) (bool, time.Duration) {
	if b == nil {
		return true, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.used[key]
	if s == nil {
		return true, 0
	}
	d := b.level(s, b.now())
	if d < b.burst {
		return true, 0
	}
	return false, time.Duration(float64(d-b.burst)/b.rate) + time.Millisecond
}

// charge adds one heavy inspection's time to key's bucket.
func (b *budget) charge(key netip.Prefix, took time.Duration) {
	if b == nil || took <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	s := b.used[key]
	if s == nil {
		s = &spent{at: now}
		b.used[key] = s
	}
	s.d = b.level(s, now) + took
	if now.Sub(b.lastSweep) > 10*time.Second {
		b.lastSweep = now
		for k, s := range b.used {
			if b.level(s, now) == 0 {
				delete(b.used, k)
			}
		}
	}
}
