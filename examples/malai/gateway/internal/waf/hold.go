package waf

import (
	"context"
	"net/netip"
	"sync"
	"time"
)

// refusalHold delays refusals (429 over the inspection-time budget, 503
// for want of a slot), so that a client which retries at once, never
// backing off, gets one answer per connection every RefusalDelay instead
// of thousands a second: each answer costs the gateway a little CPU, and
// tens of thousands of them a second are enough to slow every other
// client down. A held refusal costs a goroutine and a timer, no CPU. The
// held refusals are bounded per client and in all; past either bound a
// refusal is answered at once.
type refusalHold struct {
	delay          time.Duration
	perClient, max int

	mu    sync.Mutex
	held  map[netip.Prefix]int
	total int
}

func newRefusalHold(delay time.Duration, perClient, max int) *refusalHold {
	if delay <= 0 {
		return nil
	}
	return &refusalHold{delay: delay, perClient: perClient, max: max, held: map[netip.Prefix]int{}}
}

// hold waits until the refusal of a request that arrived at since is
// RefusalDelay old, unless the bounds are reached. It reports false when
// the client went away meanwhile: nothing is then to be written.
func (h *refusalHold) hold(ctx context.Context, key netip.Prefix, since time.Time) bool {
	if h == nil {
		return true
	}
	wait := h.delay - time.Since(since)
	if wait <= 0 {
		return true
	}
	h.mu.Lock()
	if h.held[key] >= h.perClient || h.total >= h.max {
		h.mu.Unlock()
		return true
	}
	h.held[key]++
	h.total++
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		if h.held[key]--; h.held[key] == 0 {
			delete(h.held, key)
		}
		h.total--
		h.mu.Unlock()
	}()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// count reports how many refusals are held for key, and in all (tests).
func (h *refusalHold) count(key netip.Prefix) (int, int) {
	if h == nil {
		return 0, 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held[key], h.total
}
