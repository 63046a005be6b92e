package gcra

import (
	"errors"
	"testing"
	"time"
)

func TestCompileRejects(t *testing.T) {
	for name, c := range map[string]struct {
		l Limit
		n int
	}{
		"sub-microsecond interval": {Limit{Interval: 999 * time.Nanosecond, Burst: 1}, 1},
		"zero burst":               {Limit{Interval: time.Second, Burst: 0}, 1},
		"zero cost":                {Limit{Interval: time.Second, Burst: 1}, 0},
		"cost above burst":         {Limit{Interval: time.Second, Burst: 2}, 3},
		"bucket too large":         {Limit{Interval: 24 * time.Hour, Burst: 1 << 20}, 1},
	} {
		if _, err := Compile(c.l, c.n); !errors.Is(err, ErrInvalidLimit) {
			t.Errorf("%s: Compile = %v, want ErrInvalidLimit", name, err)
		}
	}
}

func TestDecideBurstThenRefill(t *testing.T) {
	p, err := Compile(Limit{Interval: time.Second, Burst: 3}, 1)
	if err != nil {
		t.Fatal(err)
	}
	const s = int64(time.Second / time.Microsecond)
	now := 1_700_000_000 * s
	var tat int64
	for i, wantRemaining := range []int{2, 1, 0} {
		var r Result
		tat, r = Decide(tat, now, p)
		if !r.Allowed || r.Remaining != wantRemaining {
			t.Fatalf("request %d: %+v", i, r)
		}
	}
	_, r := Decide(tat, now, p)
	if r.Allowed || r.RetryAfter != time.Second || r.ResetAfter != 3*time.Second || r.Remaining != 0 {
		t.Fatalf("4th request: %+v", r)
	}
	// One interval later exactly one request fits again.
	_, r = Decide(tat, now+s, p)
	if !r.Allowed || r.Remaining != 0 {
		t.Fatalf("after 1s: %+v", r)
	}
}
