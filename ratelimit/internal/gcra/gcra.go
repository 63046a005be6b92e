package gcra

import (
	"errors"
	"time"
)

// Limit is one GCRA limit: requests are admitted one per Interval on
// average, and a key that has been idle long enough may send Burst at once.
type Limit struct {
	// Interval is the emission interval: Period / Limit of a policy,
	// rounded down to a whole microsecond. At least 1 µs.
	Interval time.Duration
	// Burst is the bucket size: how many requests a fully refilled key
	// may send at once. At least 1.
	Burst int
}

// ErrInvalidLimit is returned for an Interval under 1 µs, a Burst under 1,
// a cost under 1 or a cost above Burst, or a bucket (Interval × Burst) too
// large to compute exactly (over 100 years).
var ErrInvalidLimit = errors.New("ratelimit: invalid limit")

// maxSpan bounds Interval*Burst*cost so that a TAT (now + span) stays far
// below 2^53 µs and nothing overflows.
const maxSpan = int64(100 * 365 * 24 * time.Hour / time.Microsecond)

// Params are a Limit in the integer microseconds the stores compute with.
type Params struct {
	Interval  int64 // emission interval T, µs
	Tolerance int64 // T × Burst, µs: how far ahead of now a TAT may be
	Cost      int64 // T × n, µs: what one decision of n requests adds
}

// Compile checks l and n and returns the integer parameters.
func Compile(l Limit, n int) (Params, error) {
	t := int64(l.Interval / time.Microsecond)
	if t < 1 || l.Burst < 1 || n < 1 || n > l.Burst {
		return Params{}, ErrInvalidLimit
	}
	if int64(l.Burst) > maxSpan/t {
		return Params{}, ErrInvalidLimit
	}
	return Params{Interval: t, Tolerance: t * int64(l.Burst), Cost: t * int64(n)}, nil
}

// Result is one decision.
type Result struct {
	// Allowed reports whether the request is admitted.
	Allowed bool
	// Remaining is how many more requests (of cost 1) would be admitted
	// right now, after this decision.
	Remaining int
	// RetryAfter is, when denied, how long until this request would be
	// admitted. Zero when allowed.
	RetryAfter time.Duration
	// ResetAfter is how long until the key is back to a full Burst.
	ResetAfter time.Duration
}

// Decide runs GCRA at now (µs) for a key whose stored theoretical arrival
// time is tat (µs; 0 or anything <= now for a fresh or refilled key). It
// returns the TAT to store when the request is allowed; a denied request
// changes nothing.
//
// The rule: the new TAT is max(tat, now) + Cost; the request is allowed
// when the new TAT is at most now + Tolerance. Remaining counts the whole
// intervals left between the resulting TAT and now + Tolerance.
func Decide(tat, now int64, p Params) (newTAT int64, r Result) {
	if tat < now {
		tat = now
	}
	next := tat + p.Cost
	if over := next - now - p.Tolerance; over > 0 {
		return tat, Result{
			Allowed:    false,
			Remaining:  int((p.Tolerance - (tat - now)) / p.Interval),
			RetryAfter: time.Duration(over) * time.Microsecond,
			ResetAfter: time.Duration(tat-now) * time.Microsecond,
		}
	}
	return next, Result{
		Allowed:    true,
		Remaining:  int((p.Tolerance - (next - now)) / p.Interval),
		ResetAfter: time.Duration(next-now) * time.Microsecond,
	}
}
