package ratelimit

import (
	"context"

	"github.com/malai-sec/malai/ratelimit/internal/gcra"
)

// Limit is one GCRA limit as a store sees it: one request per Interval on
// average, up to Burst at once. [Policy] compiles to a Limit.
type Limit = gcra.Limit

// Result is one store decision.
//
//   - Allowed: the request is admitted (and counted).
//   - Remaining: requests of cost 1 that would still be admitted now.
//   - RetryAfter: when denied, how long until this request would fit.
//   - ResetAfter: how long until the key is back to a full Burst.
type Result = gcra.Result

// Store keeps one GCRA timestamp per key and decides atomically. Every
// implementation runs the same integer-microsecond arithmetic, so the
// memory store ([github.com/malai-sec/malai/ratelimit/memstore]) and the
// Redis store ([github.com/malai-sec/malai/ratelimit/redisstore]) decide
// identically for the same clock readings; both pass
// [github.com/malai-sec/malai/ratelimit/storetest.Run].
//
// Implementations are safe for concurrent use.
type Store interface {
	// Allow decides a request of cost n (1 <= n <= limit.Burst) for key.
	// A denied request changes nothing. An error means no decision was
	// made (store unreachable, invalid limit); the Limiter then applies
	// the policy's [Outage] rule.
	Allow(ctx context.Context, key string, limit Limit, n int) (Result, error)
	// Close releases the store's resources.
	Close() error
}

// ErrInvalidLimit is returned by stores for a limit or cost they cannot
// decide exactly (Interval under 1 µs, Burst or cost under 1, cost above
// Burst, a bucket spanning more than 100 years).
var ErrInvalidLimit = gcra.ErrInvalidLimit
