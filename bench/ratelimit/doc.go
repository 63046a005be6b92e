// Package ratelimitbench compares Malai's ratelimit stores with their
// peers in the same run: the memory store against a per-key map of
// golang.org/x/time/rate limiters, the Redis store against
// go-redis/redis_rate/v10. The Redis benchmarks start their own throwaway
// redis-server on a free loopback port, so INFO commandstats counts only
// their own calls.
package ratelimitbench
