// Package ratelimit limits requests per client network, per principal, per
// route or per any key, in memory or in Redis, behind an IP reputation
// list, with standard RateLimit headers and a chosen answer to a store
// outage.
//
// # Guarantees
//
//   - The client address comes from a [clientip.Resolver]
//     ([Config.ClientIP], shared with headers and correlation) that trusts
//     forwarding headers only from its proxies, walking them right to
//     left; a spoofed X-Forwarded-For from anyone else is ignored and
//     malformed input is a 400, never a guess. IPv4-mapped addresses count
//     as IPv4. The address is left in the request context
//     ([clientip.FromContext]) for the layers inside.
//   - Addresses are bucketed by prefix: IPv4 /32 and IPv6 /64 by default
//     ([Policy.IPv4Prefix], [Policy.IPv6Prefix]), so rotating through the
//     addresses of one /64 gains nothing. Several policies apply in order
//     (tiers such as /64 + /48, a per-principal limit, a per-route limit).
//   - One algorithm everywhere: GCRA in integer microseconds. A key may
//     send Burst requests at once and regains one every Period/Limit; a
//     denied request is not counted. The memory and Redis stores pass one
//     conformance suite ([github.com/malai-sec/malai/ratelimit/storetest])
//     with identical decisions, and the Redis store runs on the Redis
//     server's clock so skewed hosts agree.
//   - Reputation deny lists ([Reputation], a prefix trie loaded from files
//     and reloadable) refuse with 403 before any store call; allow-listed
//     networks skip the limits. The Redis store refuses keys it knows to be
//     over their limit without a round trip.
//   - Responses: 429 application/problem+json with Retry-After (delta
//     seconds) and the IETF RateLimit-Policy and RateLimit fields on every
//     limited route, set before [Config.ErrorHandler] runs so a custom
//     handler keeps them; stacked limiters merge their fields;
//     X-RateLimit-* when [Config.LegacyHeaders] is set. [Config.Skip]
//     exempts health checks.
//   - Store failure: each policy fails closed (503, the default), open, or
//     to a local in-memory limit ([Outage]); [Config.OnStoreError],
//     [Limiter.Stats] and a rate-limited warning on [Config.Logger] report
//     it.
//
// # Usage
//
// The gateway of the reference system: reputation, then a per-IP limit for
// everyone, then (after JWT verification) a per-principal limit.
//
//	rep, err := ratelimit.NewReputation(ratelimit.ReputationConfig{
//		DenyFiles: []string{"/etc/malai/deny.txt"},
//	})
//	proxies, err := clientip.New(clientip.Config{
//		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
//	})
//	ipLimit, err := ratelimit.New(ratelimit.Config{
//		Store:      redisStore, // redisstore.New(...): shared by every replica
//		Reputation: rep,
//		ClientIP:   proxies,
//		Skip:       func(r *http.Request) bool { return r.URL.Path == "/healthz" },
//		Policies: []ratelimit.Policy{
//			{Name: "ip", Limit: 600, Period: time.Minute, Burst: 100},
//			{Name: "net48", Limit: 6000, Period: time.Minute, IPv6Prefix: 48, IPv4Prefix: 24},
//		},
//	})
//	userLimit, err := ratelimit.New(ratelimit.Config{
//		Store: redisStore,
//		Policies: []ratelimit.Policy{{Name: "user", Limit: 120, Period: time.Minute,
//			Key: func(r *http.Request, _ netip.Addr) (string, bool) {
//				c, ok := jwtverify.FromContext(r.Context()) // the caller's verified subject
//				if !ok {
//					return "", false
//				}
//				return c.Subject(), true
//			}}},
//	})
//	handler := ipLimit.Handler(verifier.Handler(userLimit.Handler(app)))
//	// On SIGHUP: rep.Reload()
//
// Outside HTTP, [Limiter.Allow] applies a named policy to a key, e.g.
// sign-in attempts per network with [IPKey].
//
// # Security caveats
//
//   - A zero [Config.Store] is an in-process memory store: each replica
//     counts alone, so N replicas allow N times the limit. New logs a
//     warning when it falls back to it; set a shared store in production.
//   - List only proxies you run in the resolver's TrustedProxies, and name
//     the header your nearest proxy writes; see package clientip.
//   - Policies count in order: a request refused by the second policy has
//     been counted by the first. Put the cheapest, broadest policy first.
//   - FailOpen turns a Redis outage into no limit at all; FailLocal into a
//     per-node limit (set LocalLimit to your share of Limit).
//   - The memory store caps its keys; beyond the cap it forgets the keys
//     closest to a full refill first (see memstore).
//   - With go-redis, set ContextTimeoutEnabled (and consider MaxRetries -1)
//     on the client so an unreachable Redis costs milliseconds, not the
//     client's multi-second read timeout and retries.
package ratelimit
