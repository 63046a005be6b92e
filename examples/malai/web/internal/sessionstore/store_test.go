package sessionstore

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/malai-sec/malai/internal/fakeclock"
	"github.com/malai-sec/malai/internal/servicetest"
)

// run is the conformance suite every Store passes. expire makes a record
// stored with ttl outlive it (moving a fake clock, or waiting for Redis).
func run(t *testing.T, newStore func(t *testing.T) Store, expire func(t *testing.T, s Store, key string, ttl time.Duration)) {
	ctx := context.Background()
	t.Run("missing", func(t *testing.T) {
		s := newStore(t)
		v, ok, err := s.Get(ctx, "nope")
		if v != nil || ok || err != nil {
			t.Fatalf("Get(missing) = %q, %v, %v", v, ok, err)
		}
		if err := s.Delete(ctx, "nope"); err != nil {
			t.Fatalf("Delete(missing) = %v", err)
		}
	})
	t.Run("set get delete", func(t *testing.T) {
		s := newStore(t)
		if err := s.Set(ctx, "k", []byte("v1"), time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := s.Set(ctx, "k", []byte("v2"), time.Hour); err != nil {
			t.Fatal(err)
		}
		v, ok, err := s.Get(ctx, "k")
		if string(v) != "v2" || !ok || err != nil {
			t.Fatalf("Get = %q, %v, %v; want v2", v, ok, err)
		}
		if err := s.Delete(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.Get(ctx, "k"); ok {
			t.Fatal("record present after Delete")
		}
	})
	t.Run("expiry", func(t *testing.T) {
		s := newStore(t)
		expire(t, s, "e", 200*time.Millisecond)
		if _, ok, err := s.Get(ctx, "e"); ok || err != nil {
			t.Fatalf("expired record: ok=%v err=%v", ok, err)
		}
	})
	t.Run("lock is exclusive", func(t *testing.T) {
		s := newStore(t)
		var inside, max atomic.Int32
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				unlock, err := s.Lock(ctx, "L", 5*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				n := inside.Add(1)
				if n > max.Load() {
					max.Store(n)
				}
				// Hold the lease across a store round trip.
				_ = s.Set(ctx, "L-data", []byte("x"), time.Minute)
				inside.Add(-1)
				unlock()
			}()
		}
		wg.Wait()
		if max.Load() != 1 {
			t.Fatalf("%d holders at once", max.Load())
		}
	})
	t.Run("lock waits then gives up with ErrLocked", func(t *testing.T) {
		s := newStore(t)
		unlock, err := s.Lock(ctx, "W", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if _, err := s.Lock(short, "W", time.Second); !errors.Is(err, ErrLocked) {
			t.Fatalf("second Lock = %v, want ErrLocked", err)
		}
		// Another key is independent.
		u2, err := s.Lock(ctx, "W2", time.Second)
		if err != nil {
			t.Fatalf("other key: %v", err)
		}
		u2()
	})
	t.Run("unlock twice is harmless", func(t *testing.T) {
		s := newStore(t)
		unlock, err := s.Lock(ctx, "U", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		unlock()
		unlock()
		u2, err := s.Lock(ctx, "U", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		u2()
	})
}

func TestBolt(t *testing.T) {
	clocks := map[Store]*fakeclock.Clock{}
	var mu sync.Mutex
	run(t, func(t *testing.T) Store {
		c := fakeclock.New(time.Unix(1_800_000_000, 0))
		s, err := OpenBolt(filepath.Join(t.TempDir(), "s.db"), c.Now, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		mu.Lock()
		clocks[s] = c
		mu.Unlock()
		return s
	}, func(t *testing.T, s Store, key string, ttl time.Duration) {
		if err := s.Set(context.Background(), key, []byte("v"), ttl); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		c := clocks[s]
		mu.Unlock()
		c.Advance(ttl)
	})
}

func TestBoltSurvivesRestartAndSweeps(t *testing.T) {
	ctx := context.Background()
	c := fakeclock.New(time.Unix(1_800_000_000, 0))
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := OpenBolt(path, c.Now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, "keep", []byte("a"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, "old", []byte("b"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	s, err = OpenBolt(path, c.Now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, ok, err := s.Get(ctx, "keep"); string(v) != "a" || !ok || err != nil {
		t.Fatalf("after restart Get = %q, %v, %v", v, ok, err)
	}
	c.Advance(2 * time.Minute)
	n, err := s.Sweep()
	if n != 1 || err != nil {
		t.Fatalf("Sweep = %d, %v; want 1 expired record removed", n, err)
	}
	if _, ok, _ := s.Get(ctx, "keep"); !ok {
		t.Fatal("sweep removed a live record")
	}
}

func TestBoltRefusesSecondOpener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := OpenBolt(path, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// bbolt's file lock: a second process (here, a second handle) cannot
	// open the same file, so in-process leases are sound.
	done := make(chan error, 1)
	go func() {
		s2, err := OpenBolt(path, nil, 0)
		if err == nil {
			s2.Close()
		}
		done <- err
	}()
	if err := <-done; err == nil {
		t.Fatal("a second handle opened the same file")
	}
}

func TestRedis(t *testing.T) {
	r := servicetest.NewRedis(t)
	run(t, func(t *testing.T) Store {
		s, err := NewRedis(r.Client, r.Prefix+servicetest.Unique()+":")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, func(t *testing.T, s Store, key string, ttl time.Duration) {
		if err := s.Set(context.Background(), key, []byte("v"), ttl); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if _, ok, _ := s.Get(context.Background(), key); !ok {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal("Redis kept the record past its ttl")
	})
}

func TestRedisLeaseExpiresWhenHolderDies(t *testing.T) {
	r := servicetest.NewRedis(t)
	s, err := NewRedis(r.Client, r.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// A holder that never unlocks (a crashed replica).
	if _, err := s.Lock(ctx, "dead", 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	unlock, err := s.Lock(wctx, "dead", time.Second)
	if err != nil {
		t.Fatalf("lease never expired: %v", err)
	}
	unlock()
}

func TestRedisStaleUnlockKeepsSuccessorsLease(t *testing.T) {
	r := servicetest.NewRedis(t)
	s, _ := NewRedis(r.Client, r.Prefix)
	ctx := context.Background()
	stale, err := s.Lock(ctx, "k", 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	next, err := s.Lock(wctx, "k", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer next()
	stale() // the first holder wakes up late
	short, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if _, err := s.Lock(short, "k", time.Second); !errors.Is(err, ErrLocked) {
		t.Fatalf("a stale unlock released the successor's lease: %v", err)
	}
}
