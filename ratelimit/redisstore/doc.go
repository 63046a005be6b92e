// Package redisstore is the Redis ratelimit store: one GCRA timestamp per
// key, decided in one round trip: a plain SET NX for a key whose bucket is
// full, a short Lua script for a busy one, none for a key known to be over
// its limit.
//
// # Guarantees
//
//   - The same integer-microsecond GCRA as the memory store: the script only
//     reads the stored timestamp, compares and writes, and replies with one
//     integer; Go computes the reported Remaining/RetryAfter/ResetAfter
//     from it with the same code the memory store uses, and checks that the
//     script's verdict agrees.
//   - One clock: the Redis server's. The store reads TIME once, then every
//     second in the background, and carries it between readings on the
//     local monotonic clock, with an error bound of half the reading's
//     round trip plus 100 ppm of drift; hosts with skewed clocks agree.
//     With a [redis.ClusterClient] every node's own TIME is read inside
//     the script instead (nodes' clocks may differ); with [Config.Now] the
//     caller's clock is used (tests).
//   - On the server's clock a key expires (PX) a few milliseconds after its
//     bucket has fully refilled: the slack is twice the clock's error
//     bound plus a millisecond, at least 5 ms, so a key the server has
//     expired is one whose timestamp has passed on every host. Such a key
//     is decided by one SET NX PX, with no script: the request is admitted
//     and the new timestamp written, or, if another host wrote the key
//     first, the SET fails and the script decides. A key the store knows
//     to be busy goes straight to the script, which reads the timestamp,
//     and writes only when it admits. With the caller's clock or a cluster
//     client keys live one second past their refill and the script
//     decides every request; no sweeping in any mode.
//   - One round trip per decision (SET NX, or EVALSHA falling back to EVAL
//     once after a server restart), one key per call, so it works with
//     Redis Cluster through [redis.UniversalClient].
//   - A key Redis has denied is remembered locally until it would be
//     admitted again, and further requests on it are denied without a
//     round trip. This is exact, not a heuristic: a denied request changes
//     nothing in GCRA and another node can only push the key's timestamp
//     later, never earlier. The same bounded cache ([Config.DenyCacheSize]
//     entries) remembers admitted keys' timestamps, to tell busy keys from
//     idle ones; with it disabled every decision tries SET NX first.
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
// The plain SET NX path trusts the clock's error bound: a Redis server
// whose clock is stepped (not slewed) makes keys expire early or late
// until the next reading a second later, as a TIME read inside a script
// would. The error bound covers the reading's round trip, so a machine
// too loaded to answer TIME quickly widens the slack instead of admitting
// early.
//
// go-redis bounds socket reads by its ReadTimeout (3 s by default) and
// ignores context deadlines unless the client has ContextTimeoutEnabled:
// set it, or a hung Redis holds requests for seconds before the outage
// policy applies. The store never closes the caller's client.
package redisstore
