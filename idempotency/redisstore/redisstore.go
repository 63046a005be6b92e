// Package redisstore is the shared [idempotency.Store] on Redis 7 or
// later (standalone, Sentinel or Cluster through redis.UniversalClient).
//
// # Round trips
//
// A claim, and a replay, is one round trip: SET key value NX PX ttl GET
// either stores the new in-flight record or returns the record already
// there. Completing, extending and releasing are one round trip each: a
// short Lua script that compares the stored record's fence (version,
// state, fencing token and owner: its first [idempotency.FenceLen] bytes)
// before it writes, so a holder whose lease was taken over cannot
// overwrite its successor. Only a takeover of a dead record (expired lease
// or retention) costs a second round trip: a compare-and-set script on the
// exact bytes read.
//
// # Expiry
//
// Liveness is decided from the timestamps inside the record against the
// caller's clock ([idempotency.Record.Live]); Redis's own expiry (PX) is a
// backstop set to the record's remaining retention plus Config.Backstop,
// so a record is never dropped by Redis while it may still be needed, and
// a test clock can move days ahead of the server's.
//
// Keys are Config.Prefix plus the hashed record key; an Idempotency-Key
// never appears in Redis in clear. The store does not close the client.
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/malai-sec/malai/idempotency"
)

// Defaults.
const (
	DefaultPrefix   = "malai:idempotency:"
	DefaultBackstop = time.Hour
)

// Config configures a [Store].
type Config struct {
	// Client is the caller's Redis client. Required.
	Client redis.UniversalClient
	// Prefix starts every key. Default [DefaultPrefix].
	Prefix string
	// Backstop is added to a record's remaining retention to form the
	// Redis expiry. Default [DefaultBackstop].
	Backstop time.Duration
}

// Store keeps idempotency records in Redis. Build it with [New]; it is
// safe for concurrent use.
type Store struct {
	c        redis.UniversalClient
	prefix   string
	backstop time.Duration
}

var _ idempotency.Store = (*Store)(nil)

// New validates cfg and returns a store.
func New(cfg Config) (*Store, error) {
	if cfg.Client == nil {
		return nil, errors.New("redisstore: Config.Client is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Backstop == 0 {
		cfg.Backstop = DefaultBackstop
	}
	if cfg.Backstop < 0 {
		return nil, fmt.Errorf("redisstore: negative Backstop %v", cfg.Backstop)
	}
	return &Store{c: cfg.Client, prefix: cfg.Prefix, backstop: cfg.Backstop}, nil
}

// takeover replaces a dead record read by the client (ARGV[1], exact bytes)
// with a new claim (ARGV[2]). It returns 1 on success, else the current
// value (nil when the key is gone).
var takeover = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return cur
`)

// fenced writes ARGV[2] (or deletes the key when ARGV[2] is empty) only if
// the stored record starts with the claim's fence ARGV[1].
var fenced = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur or string.sub(cur, 1, #ARGV[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
`)

func (s *Store) ttl(rec *idempotency.Record, now time.Time) int64 {
	d := max(rec.ExpiresAt.Sub(now), 0) + s.backstop
	return max(d.Milliseconds(), 1)
}

const maxAttempts = 4

// Claim implements [idempotency.Store].
func (s *Store) Claim(ctx context.Context, key string, rec idempotency.Record, now time.Time) (idempotency.Record, bool, error) {
	k := s.prefix + key
	val, err := rec.MarshalBinary()
	if err != nil {
		return idempotency.Record{}, false, err
	}
	px := s.ttl(&rec, now)
	cur, err := s.c.Do(ctx, "SET", k, val, "PX", px, "NX", "GET").Text()
	for range maxAttempts {
		if errors.Is(err, redis.Nil) {
			return rec, true, nil
		}
		if err != nil {
			return idempotency.Record{}, false, fmt.Errorf("redisstore: claim: %w", err)
		}
		var old idempotency.Record
		if err := old.UnmarshalBinary([]byte(cur)); err != nil {
			return idempotency.Record{}, false, fmt.Errorf("redisstore: claim: %w", err)
		}
		if old.Live(now) {
			return old, false, nil
		}
		rec.Token = old.Token + 1
		if val, err = rec.MarshalBinary(); err != nil {
			return idempotency.Record{}, false, err
		}
		res, err2 := takeover.Run(ctx, s.c, []string{k}, cur, val, px).Result()
		switch v := res.(type) {
		case int64:
			if err2 == nil && v == 1 {
				return rec, true, nil
			}
		case string:
			cur, err = v, nil
			continue
		}
		if errors.Is(err2, redis.Nil) {
			// Gone between the two calls: claim afresh.
			rec.Token = 1
			if val, err = rec.MarshalBinary(); err != nil {
				return idempotency.Record{}, false, err
			}
			cur, err = s.c.Do(ctx, "SET", k, val, "PX", px, "NX", "GET").Text()
			continue
		}
		if err2 == nil {
			err2 = fmt.Errorf("unexpected reply %T", res)
		}
		return idempotency.Record{}, false, fmt.Errorf("redisstore: takeover: %w", err2)
	}
	return idempotency.Record{}, false, errors.New("redisstore: claim: key contended, gave up")
}

func (s *Store) fenced(ctx context.Context, op, key string, rec *idempotency.Record, val []byte, px int64) error {
	claim := *rec
	claim.State = idempotency.StateInFlight
	n, err := fenced.Run(ctx, s.c, []string{s.prefix + key}, claim.Fence(), val, px).Int64()
	if err != nil {
		return fmt.Errorf("redisstore: %s: %w", op, err)
	}
	if n != 1 {
		return idempotency.ErrLeaseLost
	}
	return nil
}

// Extend implements [idempotency.Store].
func (s *Store) Extend(ctx context.Context, key string, rec idempotency.Record, now time.Time) error {
	rec.Result = idempotency.Result{}
	val, err := rec.MarshalBinary()
	if err != nil {
		return err
	}
	return s.fenced(ctx, "extend", key, &rec, val, s.ttl(&rec, now))
}

// Complete implements [idempotency.Store].
func (s *Store) Complete(ctx context.Context, key string, rec idempotency.Record, now time.Time) error {
	if rec.State != idempotency.StateCompleted && rec.State != idempotency.StateNotReplayable {
		return fmt.Errorf("redisstore: complete with state %v", rec.State)
	}
	val, err := rec.MarshalBinary()
	if err != nil {
		return err
	}
	return s.fenced(ctx, "complete", key, &rec, val, s.ttl(&rec, now))
}

// Release implements [idempotency.Store].
func (s *Store) Release(ctx context.Context, key string, rec idempotency.Record) error {
	return s.fenced(ctx, "release", key, &rec, nil, 0)
}

// Close implements [idempotency.Store]. It does not close the client.
func (s *Store) Close() error { return nil }
