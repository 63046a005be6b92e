package waf

import (
	"context"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/malai-sec/malai/clientip"
)

// The light bounds: a request without a body whose shape stays within all
// of them costs the rule set a few milliseconds at most (each cookie costs
// ~0.7 ms, each header ~50 µs), what a browser sends for a page and each
// of its assets. Anything else is heavy.
const (
	lightMaxHeaders     = 32
	lightMaxHeaderBytes = 8 << 10
	lightMaxCookies     = 16
	lightMaxURL         = 1024
)

// heavy reports whether the request's inspection is expensive: it has a
// body, or its shape exceeds the light bounds.
func heavy(r *http.Request, body []byte) bool {
	if len(body) > 0 || len(r.RequestURI) > lightMaxURL || len(r.URL.RawQuery) > lightMaxURL {
		return true
	}
	n, size, cookies := 0, 0, 0
	for k, vs := range r.Header {
		n += len(vs)
		for _, v := range vs {
			size += len(k) + len(v)
			if k == "Cookie" {
				cookies += strings.Count(v, ";") + 1
			}
		}
	}
	return n > lightMaxHeaders || size > lightMaxHeaderBytes || cookies > lightMaxCookies
}

// clientKey groups a request's client: its address, or its /64 for IPv6
// (one subscriber's allocation, as the per-IP limit counts it).
func clientKey(r *http.Request) netip.Prefix {
	addr, _ := clientip.FromContext(r.Context())
	if !addr.IsValid() {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			addr = ap.Addr()
		}
	}
	addr = addr.Unmap()
	bits := 32
	if addr.Is6() {
		bits = 64
	}
	p, _ := addr.Prefix(bits)
	return p
}

// admission is the inspection pool: at most max inspections run at once.
// A client may hold any free slot with light requests, but at most
// perClientHeavy with heavy ones. Requests that cannot start wait in a
// bounded queue (maxWaiting in all, perClientWaiting per client, of which
// at most perClientHeavyWaiting heavy: a double click or a browser's retry
// of a form waits its turn, a flood beyond that is refused at once); when a
// slot frees it goes to the eligible waiter whose client holds the fewest
// slots, among equals the client served least recently, then the oldest
// waiter: clients take turns, so one that floods the pool waits behind
// every other client and never ahead of one.
type admission struct {
	max, perClientHeavy, maxWaiting, perClientWaiting, perClientHeavyWaiting int

	mu      sync.Mutex
	running int
	started uint64 // slots handed out, the clients' turn order
	clients map[netip.Prefix]*clientLoad
	queue   []*waiter // arrival order
}

type clientLoad struct {
	running, heavy, waiting, heavyWaiting int
	last                                  uint64 // a.started when it last got a slot; 0: never
}

type waiter struct {
	c       *clientLoad
	key     netip.Prefix
	heavy   bool
	ready   chan struct{}
	granted bool
}

func newAdmission(cfg Config) *admission {
	return &admission{max: cfg.MaxConcurrent, perClientHeavy: cfg.PerClient, maxWaiting: cfg.MaxWaiting,
		perClientWaiting: cfg.PerClientWaiting, perClientHeavyWaiting: cfg.PerClientHeavyWaiting,
		clients: map[netip.Prefix]*clientLoad{}}
}

// acquire takes a slot for a request of client key, waiting at most
// maxWait. It returns the release function, or ErrBusy (no slot in time,
// or the queue or the client's share of it full), or the context's error.
func (a *admission) acquire(ctx context.Context, key netip.Prefix, heavy bool, maxWait time.Duration) (func(), error) {
	a.mu.Lock()
	c := a.clients[key]
	if c == nil {
		c = &clientLoad{}
		a.clients[key] = c
	}
	// dispatch runs on every release, so while a slot is free no waiter
	// is eligible for it: a newcomer that is eligible jumps no one.
	if a.running < a.max && a.eligible(c, heavy) {
		a.start(c, heavy)
		a.mu.Unlock()
		return a.releaser(key, c, heavy), nil
	}
	if len(a.queue) >= a.maxWaiting || c.waiting >= a.perClientWaiting || maxWait <= 0 ||
		heavy && c.heavyWaiting >= a.perClientHeavyWaiting {
		a.forget(key, c)
		a.mu.Unlock()
		return nil, ErrBusy
	}
	w := &waiter{c: c, key: key, heavy: heavy, ready: make(chan struct{})}
	a.queue = append(a.queue, w)
	c.enqueue(heavy, 1)
	a.mu.Unlock()

	t := time.NewTimer(maxWait)
	defer t.Stop()
	var err error
	select {
	case <-w.ready:
		return a.releaser(key, c, heavy), nil
	case <-t.C:
		err = ErrBusy
	case <-ctx.Done():
		err = ctx.Err()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if w.granted {
		// Granted as the time ran out: give the slot to the next one.
		a.stop(key, c, heavy)
		return nil, err
	}
	a.queue = slices.DeleteFunc(a.queue, func(x *waiter) bool { return x == w })
	c.enqueue(heavy, -1)
	a.forget(key, c)
	return nil, err
}

// enqueue counts n more (or, negative, fewer) waiting requests of c.
func (c *clientLoad) enqueue(heavy bool, n int) {
	c.waiting += n
	if heavy {
		c.heavyWaiting += n
	}
}

func (a *admission) eligible(c *clientLoad, heavy bool) bool {
	return !heavy || c.heavy < a.perClientHeavy
}

func (a *admission) start(c *clientLoad, heavy bool) {
	a.running++
	a.started++
	c.last = a.started
	c.running++
	if heavy {
		c.heavy++
	}
}

// stop frees a slot (a.mu held) and hands it on.
func (a *admission) stop(key netip.Prefix, c *clientLoad, heavy bool) {
	a.running--
	c.running--
	if heavy {
		c.heavy--
	}
	a.forget(key, c)
	a.dispatch()
}

func (a *admission) releaser(key netip.Prefix, c *clientLoad, heavy bool) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			a.stop(key, c, heavy)
			a.mu.Unlock()
		})
	}
}

// forget drops an idle client's entry (a.mu held).
func (a *admission) forget(key netip.Prefix, c *clientLoad) {
	if c.running == 0 && c.waiting == 0 {
		delete(a.clients, key)
	}
}

// dispatch starts waiters while slots are free (a.mu held): each time the
// eligible waiter whose client holds the fewest slots, then whose client
// was served least recently, then the oldest.
func (a *admission) dispatch() {
	for a.running < a.max {
		best := -1
		for i, w := range a.queue {
			if !a.eligible(w.c, w.heavy) {
				continue
			}
			if best < 0 || before(w.c, a.queue[best].c) {
				best = i
			}
		}
		if best < 0 {
			return
		}
		w := a.queue[best]
		a.queue = slices.Delete(a.queue, best, best+1)
		w.c.enqueue(w.heavy, -1)
		a.start(w.c, w.heavy)
		w.granted = true
		close(w.ready)
	}
}

// before reports whether client c's turn comes before client d's.
func before(c, d *clientLoad) bool {
	if c.running != d.running {
		return c.running < d.running
	}
	return c.last < d.last
}
