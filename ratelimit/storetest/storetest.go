package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/malai-sec/malai/ratelimit"
)

// Clock is a fake clock safe for concurrent use. Stores under test must
// read time only through the function [Run] hands them.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock set to t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the current fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// NewStore builds a fresh, empty store for one subtest whose clock is now.
// The store is closed by the suite.
type NewStore func(t *testing.T, now func() time.Time) ratelimit.Store

// step is one call in a decision table.
type step struct {
	advance time.Duration // move the clock first
	key     string
	n       int // cost, 1 when zero
	want    ratelimit.Result
}

type table struct {
	name  string
	limit ratelimit.Limit
	steps []step
}

func allow(rem int, reset time.Duration) ratelimit.Result {
	return ratelimit.Result{Allowed: true, Remaining: rem, ResetAfter: reset}
}

func deny(rem int, retry, reset time.Duration) ratelimit.Result {
	return ratelimit.Result{Remaining: rem, RetryAfter: retry, ResetAfter: reset}
}

// Tables are the exact decisions every store must reproduce. Exported
// through [Run] only; kept as data so a reader sees the semantics.
func tables() []table {
	sec := time.Second
	third := 333333 * time.Microsecond // 1 s / 3, rounded down to a µs
	return []table{
		{name: "burst then deny", limit: ratelimit.Limit{Interval: sec, Burst: 3}, steps: []step{
			{key: "a", want: allow(2, 1*sec)},
			{key: "a", want: allow(1, 2*sec)},
			{key: "a", want: allow(0, 3*sec)},
			{key: "a", want: deny(0, sec, 3*sec)},
			{key: "a", want: deny(0, sec, 3*sec)},
		}},
		{name: "refill one interval at a time", limit: ratelimit.Limit{Interval: sec, Burst: 2}, steps: []step{
			{key: "a", want: allow(1, sec)},
			{key: "a", want: allow(0, 2*sec)},
			{key: "a", want: deny(0, sec, 2*sec)},
			{advance: 999 * time.Millisecond, key: "a", want: deny(0, time.Millisecond, 1001*time.Millisecond)},
			{advance: time.Millisecond, key: "a", want: allow(0, 2*sec)},
			{advance: 2 * sec, key: "a", want: allow(1, sec)},
			{key: "a", want: allow(0, 2*sec)},
		}},
		{name: "denied requests are not counted", limit: ratelimit.Limit{Interval: sec, Burst: 1}, steps: []step{
			{key: "a", want: allow(0, sec)},
			{key: "a", want: deny(0, sec, sec)},
			{advance: sec / 2, key: "a", want: deny(0, sec/2, sec/2)},
			{key: "a", want: deny(0, sec/2, sec/2)},
			{advance: sec / 2, key: "a", want: allow(0, sec)},
		}},
		{name: "idle key refills to burst and no further", limit: ratelimit.Limit{Interval: sec, Burst: 2}, steps: []step{
			{key: "a", want: allow(1, sec)},
			{advance: time.Hour, key: "a", want: allow(1, sec)},
			{key: "a", want: allow(0, 2*sec)},
			{key: "a", want: deny(0, sec, 2*sec)},
		}},
		{name: "keys are independent", limit: ratelimit.Limit{Interval: sec, Burst: 1}, steps: []step{
			{key: "a", want: allow(0, sec)},
			{key: "a", want: deny(0, sec, sec)},
			{key: "b", want: allow(0, sec)},
			{key: "ip:2001:db8::/64", want: allow(0, sec)},
			{key: "b", want: deny(0, sec, sec)},
		}},
		{name: "cost above one", limit: ratelimit.Limit{Interval: sec, Burst: 5}, steps: []step{
			{key: "a", n: 3, want: allow(2, 3*sec)},
			{key: "a", n: 3, want: deny(2, sec, 3*sec)},
			{key: "a", n: 2, want: allow(0, 5*sec)},
			{advance: 2 * sec, key: "a", n: 2, want: allow(0, 5*sec)},
		}},
		{name: "interval rounded to microseconds", limit: ratelimit.Limit{Interval: third, Burst: 3}, steps: []step{
			{key: "a", want: allow(2, third)},
			{key: "a", want: allow(1, 2*third)},
			{key: "a", want: allow(0, 3*third)},
			{key: "a", want: deny(0, third, 3*third)},
			{advance: third, key: "a", want: allow(0, 3*third)},
		}},
		{name: "sub-second limits", limit: ratelimit.Limit{Interval: time.Millisecond, Burst: 1000}, steps: []step{
			{key: "a", n: 1000, want: allow(0, sec)},
			{key: "a", want: deny(0, time.Millisecond, sec)},
			{advance: 10 * time.Millisecond, key: "a", n: 10, want: allow(0, sec)},
		}},
	}
}

// Run runs the conformance suite against stores built by newStore.
func Run(t *testing.T, newStore NewStore) {
	start := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	for _, tc := range tables() {
		t.Run(tc.name, func(t *testing.T) {
			clock := NewClock(start)
			st := newStore(t, clock.Now)
			defer st.Close()
			ctx := context.Background()
			for i, s := range tc.steps {
				clock.Advance(s.advance)
				n := s.n
				if n == 0 {
					n = 1
				}
				got, err := st.Allow(ctx, s.key, tc.limit, n)
				if err != nil {
					t.Fatalf("step %d: Allow: %v", i, err)
				}
				if diff := cmp.Diff(s.want, got); diff != "" {
					t.Fatalf("step %d (key %q, n %d, +%v): decision mismatch (-want +got):\n%s", i, s.key, n, s.advance, diff)
				}
			}
		})
	}

	t.Run("far future clock stays exact", func(t *testing.T) {
		clock := NewClock(time.Date(2199, 1, 1, 0, 0, 0, 1000, time.UTC))
		st := newStore(t, clock.Now)
		defer st.Close()
		l := ratelimit.Limit{Interval: time.Microsecond, Burst: 2}
		for i, want := range []ratelimit.Result{
			allow(1, time.Microsecond), allow(0, 2*time.Microsecond), deny(0, time.Microsecond, 2*time.Microsecond),
		} {
			got, err := st.Allow(context.Background(), "k", l, 1)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("call %d (-want +got):\n%s", i, diff)
			}
		}
	})

	t.Run("invalid limits are errors", func(t *testing.T) {
		clock := NewClock(start)
		st := newStore(t, clock.Now)
		defer st.Close()
		for name, c := range map[string]struct {
			l ratelimit.Limit
			n int
		}{
			"zero interval":    {ratelimit.Limit{Burst: 1}, 1},
			"nanosecond":       {ratelimit.Limit{Interval: time.Nanosecond, Burst: 1}, 1},
			"zero burst":       {ratelimit.Limit{Interval: time.Second}, 1},
			"zero cost":        {ratelimit.Limit{Interval: time.Second, Burst: 1}, 0},
			"cost above burst": {ratelimit.Limit{Interval: time.Second, Burst: 1}, 2},
		} {
			if _, err := st.Allow(context.Background(), "k", c.l, c.n); !errors.Is(err, ratelimit.ErrInvalidLimit) {
				t.Errorf("%s: err = %v, want ErrInvalidLimit", name, err)
			}
		}
	})

	t.Run("concurrent callers never exceed burst", func(t *testing.T) {
		clock := NewClock(start)
		st := newStore(t, clock.Now)
		defer st.Close()
		const burst, callers, each = 50, 8, 25
		l := ratelimit.Limit{Interval: time.Hour, Burst: burst}
		var allowed atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, callers)
		for g := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					r, err := st.Allow(context.Background(), "shared", l, 1)
					if err != nil {
						errs <- fmt.Errorf("caller %d: %w", g, err)
						return
					}
					if r.Allowed {
						allowed.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if got := allowed.Load(); got != burst {
			t.Fatalf("%d callers × %d calls admitted %d, want exactly the burst %d", callers, each, got, burst)
		}
	})
}
