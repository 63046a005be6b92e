package rbac

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"unsafe"
)

func TestDecisionCacheBounded(t *testing.T) {
	for _, capacity := range []int{2, 3, 10, 100} {
		t.Run(fmt.Sprint(capacity), func(t *testing.T) {
			c := newDecisionCache(capacity)
			for i := range capacity * 10 {
				c.put(key{sub: fmt.Sprint("user:", i), obj: "/x", act: "GET"}, entry{allowed: i%2 == 0})
				if n := c.len(); n > capacity {
					t.Fatalf("after %d puts the cache holds %d > %d entries", i+1, n, capacity)
				}
			}
			// The most recent entry is always there, with its value.
			last := capacity*10 - 1
			e, ok := c.get(key{sub: fmt.Sprint("user:", last), obj: "/x", act: "GET"})
			if !ok || e.allowed != (last%2 == 0) {
				t.Fatalf("latest entry: %+v %v", e, ok)
			}
		})
	}
}

// TestDecisionCacheKeepsHotEntries: an entry read in every generation
// survives any number of rotations.
func TestDecisionCacheKeepsHotEntries(t *testing.T) {
	c := newDecisionCache(8)
	hot := key{sub: "user:hot", obj: "/x", act: "GET"}
	c.put(hot, entry{allowed: true, policy: "role:a, /x, GET"})
	for i := range 100 {
		c.put(key{sub: fmt.Sprint("user:", i), obj: "/x", act: "GET"}, entry{})
		e, ok := c.get(hot)
		if !ok || !e.allowed || e.policy != "role:a, /x, GET" {
			t.Fatalf("hot entry lost after %d puts: %+v %v", i+1, e, ok)
		}
	}
	// A cold entry is evicted after two rotations.
	cold := key{sub: "user:cold", obj: "/x", act: "GET"}
	c.put(cold, entry{allowed: true})
	for i := range 8 {
		c.put(key{sub: fmt.Sprint("user:filler", i), obj: "/x", act: "GET"}, entry{})
	}
	if _, ok := c.get(cold); ok {
		t.Fatal("cold entry survived two generations")
	}
}

func TestDecisionCacheSkipsOversizedKeys(t *testing.T) {
	c := newDecisionCache(10)
	long := strings.Repeat("A", maxCachedField+1)
	for _, k := range []key{
		{sub: long, obj: "/x", act: "GET"},
		{sub: "u", dom: long, obj: "/x", act: "GET"},
		{sub: "u", obj: long, act: "GET"},
		{sub: "u", obj: "/x", act: long},
	} {
		c.put(k, entry{allowed: true})
		if _, ok := c.get(k); ok {
			t.Fatalf("key with a %d-byte field was cached", maxCachedField+1)
		}
	}
	edge := key{sub: strings.Repeat("u", maxCachedField), obj: "/x", act: "GET"}
	c.put(edge, entry{allowed: true})
	if _, ok := c.get(edge); !ok {
		t.Fatalf("key with a %d-byte field was not cached", maxCachedField)
	}
}

// TestDecisionCacheClonesKeys: a cached key must not share memory with
// the request's strings.
func TestDecisionCacheClonesKeys(t *testing.T) {
	buf := []byte("user:alice|/x|GET")
	s := string(buf)
	k := key{sub: s[:10], obj: s[11:13], act: s[14:]}
	c := newDecisionCache(4)
	c.put(k, entry{allowed: true})
	for stored := range c.cur {
		if stored.sub != "user:alice" || stored.act != "GET" {
			t.Fatalf("stored key %+v", stored)
		}
		if unsafe.StringData(stored.sub) == unsafe.StringData(s) || unsafe.StringData(stored.act) == unsafe.StringData(s[14:]) {
			t.Fatal("cached subject shares the request's backing array")
		}
	}
}

func TestDecisionCacheConcurrent(t *testing.T) {
	c := newDecisionCache(16)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				k := key{sub: fmt.Sprint("user:", (i*7+g)%40), obj: "/x", act: "GET"}
				want := (i*7+g)%40%3 == 0
				if e, ok := c.get(k); ok && e.allowed != want {
					t.Errorf("key %v: cached %v, want %v", k, e.allowed, want)
					return
				}
				c.put(k, entry{allowed: want})
			}
		})
	}
	wg.Wait()
	if n := c.len(); n > 16 {
		t.Fatalf("cache holds %d > 16 entries", n)
	}
}

// TestDecisionCacheNoKeyCollision: keys are compared field by field, so
// no choice of separators in a subject can alias another request's key
// (Casbin's own cache joins the values with "$$").
func TestDecisionCacheNoKeyCollision(t *testing.T) {
	c := newDecisionCache(10)
	c.put(key{sub: "user:a$$/audit", obj: "GET", act: "x"}, entry{allowed: true})
	for _, k := range []key{
		{sub: "user:a", obj: "/audit$$GET", act: "x"},
		{sub: "user:a$$/audit$$GET", act: "x"},
		{sub: "user:a$$", dom: "/audit", obj: "GET", act: "x"},
	} {
		if _, ok := c.get(k); ok {
			t.Fatalf("key %+v hit another key's entry", k)
		}
	}
}
