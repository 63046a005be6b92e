// Package memstore is the in-process ratelimit store, and the default one.
//
// # Guarantees
//
//   - The same GCRA arithmetic as every other ratelimit store (integer
//     microseconds), so a single-node deployment decides exactly as a Redis
//     one fed the same clock.
//   - A hard cap on keys ([Config.MaxKeys]): the store never holds more.
//     When a shard is full, a new key evicts the sampled key closest to a
//     full refill (whose state matters least), so a flood of distinct keys
//     costs memory the operator chose and nothing more.
//   - A sweep drops keys that have fully refilled: their state equals a
//     fresh key's, so dropping them changes no decision.
//   - The default clock is monotonic (wall time at [New] plus time.Since),
//     so a wall-clock step neither refills nor freezes keys.
//   - [Store.Allow] allocates nothing. Each key costs a 64-bit hash and a
//     64-bit timestamp in a map (see BENCHMARKS.md for bytes per key).
//
// # Usage
//
//	st, err := memstore.New(memstore.Config{MaxKeys: 1 << 20})
//	if err != nil { ... }
//	defer st.Close()
//	lim, err := ratelimit.New(ratelimit.Config{Store: st, ...})
//
// # Security caveats
//
// Keys are stored as 64-bit hashes under a per-process random seed: two
// keys collide with probability about n²/2⁶⁵ (3·10⁻⁸ for a million keys)
// and an attacker cannot aim for a collision. Under a flood of distinct
// keys larger than MaxKeys, evicted keys restart with a full burst; size
// MaxKeys for the keys you expect plus headroom, and put per-IP prefix
// limits (IPv6 /64) before per-anything-else limits.
package memstore
