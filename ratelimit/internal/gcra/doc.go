// Package gcra holds the one rate-limit algorithm every ratelimit store
// runs: the Generic Cell Rate Algorithm (GCRA, ITU-T I.371), a token bucket
// written as one timestamp per key.
//
// All arithmetic is on integer microseconds. Microseconds since the Unix
// epoch stay below 2^53, so the Redis store's Lua script (whose numbers are
// IEEE doubles) computes exactly what Go computes here: the memory and Redis
// stores decide identically for the same clock readings.
package gcra
