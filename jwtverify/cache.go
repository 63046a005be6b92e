package jwtverify

import (
	"sync"
	"time"
)

// tokenCache remembers verified tokens by the SHA-256 of their text. Only
// tokens that passed every check enter it, so its size is bounded by real
// traffic and by max.
type tokenCache struct {
	mu  sync.RWMutex
	m   map[[32]byte]*cacheEntry
	max int
	ttl time.Duration
}

type cacheEntry struct {
	claims *Claims
	prof   *profile
	key    *publicKey
	until  int64 // UnixNano: min(exp + leeway, verified + ttl)
}

func newTokenCache(size int, ttl time.Duration) *tokenCache {
	return &tokenCache{m: make(map[[32]byte]*cacheEntry, min(size, 1024)), max: size, ttl: ttl}
}

// get returns the claims of a remembered token still valid at now: not past
// its expiry (re-checked on every hit), its key still published, its key
// set not stale.
func (c *tokenCache) get(h *[32]byte, now time.Time) (*cacheEntry, bool) {
	c.mu.RLock()
	e := c.m[*h]
	c.mu.RUnlock()
	if e == nil {
		return nil, false
	}
	if now.UnixNano() >= e.until || e.key.removed.Load() || !e.prof.keys.usable(now) {
		c.mu.Lock()
		if c.m[*h] == e {
			delete(c.m, *h)
		}
		c.mu.Unlock()
		return nil, false
	}
	return e, true
}

func (c *tokenCache) put(h *[32]byte, e *cacheEntry, now time.Time) {
	if cap := now.Add(c.ttl).UnixNano(); cap < e.until {
		e.until = cap
	}
	n := now.UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		// Drop expired entries; if none, drop an arbitrary eighth (map
		// iteration order is randomised), so inserts stay O(1) amortised.
		for k, v := range c.m {
			if n >= v.until || v.key.removed.Load() {
				delete(c.m, k)
			}
		}
		drop := c.max / 8
		for k := range c.m {
			if len(c.m) < c.max && drop <= 0 {
				break
			}
			delete(c.m, k)
			drop--
		}
	}
	c.m[*h] = e
}
