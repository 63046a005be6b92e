// Package storetest is the conformance suite every ratelimit
// [ratelimit.Store] passes. Each implementation's tests call [Run] with a
// constructor, so the memory and Redis stores are held to the same exact
// decisions.
//
// # What it checks
//
//   - Decision tables under a fake clock, compared field by field: the
//     burst, refill one interval at a time, denied requests not counted,
//     idle keys refilling to Burst and no further, independent keys, costs
//     above one, intervals that are not whole seconds, sub-second limits.
//   - Exactness far in the future (year 2199: microseconds near 2^53).
//   - Invalid limits rejected with [ratelimit.ErrInvalidLimit].
//   - Concurrent callers on one key never admitted beyond the burst.
//
// # Usage
//
//	storetest.Run(t, func(t *testing.T, now func() time.Time) ratelimit.Store {
//		return newMyStore(t, now) // your store, reading time only through now
//	})
//
// The store must read time only through now; the suite closes it.
package storetest
