package rbac

import (
	"strings"
	"sync"
)

// maxCachedField bounds each string of a cache key. A decision whose
// subject, domain, object or action is longer is computed but not cached,
// so an oversized method or tenant cannot pin megabytes per entry.
const maxCachedField = 256

// key identifies one decision. The object is a route pattern, never a
// raw path, so the key space is subjects × domains × routes × methods.
type key struct {
	sub, dom, obj, act string
}

func (k key) cacheable() bool {
	return len(k.sub) <= maxCachedField && len(k.dom) <= maxCachedField &&
		len(k.obj) <= maxCachedField && len(k.act) <= maxCachedField
}

// clone copies the key's strings so that an entry never keeps a request's
// buffers (a decoded token, a request line) alive.
func (k key) clone() key {
	return key{strings.Clone(k.sub), strings.Clone(k.dom), strings.Clone(k.obj), strings.Clone(k.act)}
}

// entry is one cached decision and the policy line that decided it.
type entry struct {
	allowed bool
	policy  string
}

// decisionCache is a bounded map of decisions in two generations: new
// entries go to cur; when cur holds half the capacity it becomes prev and
// a fresh cur starts, dropping the old prev. A hit in prev is copied to
// cur, so entries in use survive rotation and the cache approximates LRU
// while holding at most capacity entries, with one read lock per hit.
//
// A decisionCache belongs to one policy generation: reloading the policy
// replaces the whole cache (see Middleware.state), it is never cleared in
// place, so a decision computed under the old policy cannot land in the
// cache of the new one.
type decisionCache struct {
	mu   sync.RWMutex
	half int
	cur  map[key]entry
	prev map[key]entry
}

func newDecisionCache(capacity int) *decisionCache {
	half := max(capacity/2, 1)
	return &decisionCache{half: half, cur: make(map[key]entry)}
}

func (c *decisionCache) get(k key) (entry, bool) {
	c.mu.RLock()
	e, ok := c.cur[k]
	if ok {
		c.mu.RUnlock()
		return e, true
	}
	e, ok = c.prev[k]
	c.mu.RUnlock()
	if ok {
		c.promote(k, e)
	}
	return e, ok
}

// promote moves a prev hit into cur. The key already holds cloned strings.
func (c *decisionCache) promote(k key, e entry) {
	c.mu.Lock()
	if _, ok := c.cur[k]; !ok {
		c.insertLocked(k, e)
	}
	c.mu.Unlock()
}

func (c *decisionCache) put(k key, e entry) {
	if !k.cacheable() {
		return
	}
	k = k.clone()
	c.mu.Lock()
	c.insertLocked(k, e)
	c.mu.Unlock()
}

func (c *decisionCache) insertLocked(k key, e entry) {
	if len(c.cur) >= c.half {
		// Rotate, reusing the dropped generation's map: no allocation
		// once both generations exist.
		old := c.prev
		c.prev = c.cur
		if old == nil {
			old = make(map[key]entry, c.half)
		} else {
			clear(old)
		}
		c.cur = old
	}
	c.cur[k] = e
}

// len returns the number of entries held, for tests.
func (c *decisionCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n := len(c.cur)
	for k := range c.prev {
		if _, ok := c.cur[k]; !ok {
			n++
		}
	}
	return n
}
