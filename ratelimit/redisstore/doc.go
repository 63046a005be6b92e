// Package redisstore is the Redis ratelimit store: one GCRA timestamp per
// key, decided by a short Lua script in one round trip.
//
// # Guarantees
//
//   - The same integer-microsecond GCRA as the memory store: the script only
//     reads the stored timestamp, compares and writes, and replies with one
//     integer; Go computes the reported Remaining/RetryAfter/ResetAfter
//     from it with the same code the memory store uses, and checks that the
//     script's verdict agrees.
//   - One clock: time comes from Redis TIME inside the script, so hosts with
//     skewed clocks agree (unless [Config.Now] is set, for tests).
//   - One round trip per decision (EVALSHA, falling back to EVAL once after
//     a server restart), one key per call, so it works with Redis Cluster
//     through [redis.UniversalClient].
//   - Keys expire (PX) one second after they have fully refilled, so a
//     caller's clock ([Config.Now]) that runs a little apart from real time
//     never loses state early; no sweeping.
//   - A key Redis has denied is remembered locally until it would be
//     admitted again, and further requests on it are denied without a
//     round trip. This is exact, not a heuristic: a denied request changes
//     nothing in GCRA and another node can only push the key's timestamp
//     later, never earlier.
//
// # Usage
//
//	rdb := redis.NewUniversalClient(&redis.UniversalOptions{
//		Addrs:                 []string{"10.0.0.5:6379"},
//		ContextTimeoutEnabled: true, // lets Config.Timeout bound each call
//	})
//	st, err := redisstore.New(redisstore.Config{Client: rdb, Prefix: "gw:rl:"})
//	...
//	lim, err := ratelimit.New(ratelimit.Config{Store: st, ...})
//
// # Security caveats
//
// go-redis bounds socket reads by its ReadTimeout (3 s by default) and
// ignores context deadlines unless the client has ContextTimeoutEnabled:
// set it, or a hung Redis holds requests for seconds before the outage
// policy applies. The store never closes the caller's client.
package redisstore
