package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/malai-sec/malai/ratelimit/internal/gcra"
)

// Defaults applied by [New].
const (
	DefaultPrefix        = "malai:rl:"
	DefaultTimeout       = 100 * time.Millisecond
	DefaultDenyCacheSize = 1 << 16
)

// Config configures a [Store].
type Config struct {
	// Client is the Redis client (single node, Sentinel or Cluster). It is
	// required and is not closed by Close.
	Client redis.UniversalClient
	// Prefix is prepended to every key. Default [DefaultPrefix].
	Prefix string
	// Timeout bounds each decision. Default [DefaultTimeout]. It only
	// shortens socket reads when the client has ContextTimeoutEnabled.
	Timeout time.Duration
	// Now, when set, replaces Redis TIME: the caller's clock is sent with
	// each call. For tests with a fake clock, and for one-host setups. Leave
	// it nil in production so every host uses the server's clock.
	Now func() time.Time
	// DenyCacheSize bounds the local cache of denied keys. Default
	// [DefaultDenyCacheSize]; negative disables the cache.
	DenyCacheSize int
}

// Store is a Redis-backed GCRA store. Build it with [New]; the zero value
// is not usable. It is safe for concurrent use.
type Store struct {
	client  redis.UniversalClient
	prefix  string
	timeout time.Duration
	now     func() time.Time // caller's clock, nil → Redis TIME
	base    time.Time        // monotonic base of the deny cache's clock
	baseUS  int64

	closed atomic.Bool

	mu      sync.Mutex
	denied  map[string]int64 // key → TAT translated to the local clock, µs
	denyCap int
}

// ErrClosed is returned by Allow after Close.
var ErrClosed = errors.New("redisstore: store is closed")

// script runs GCRA's compare-and-set. ARGV: tolerance µs, cost µs,
// [now µs]. It returns d = max(TAT - now, 0) in µs when it admitted the
// request, -1-d when it refused: the decision depends only on d, and one
// integer is the cheapest reply.
//
// It first writes the TAT of an idle key (now + cost) with SET ... GET,
// which also reads the previous TAT: for a key at or under its rate (TAT
// already past) that single call is the whole decision. For a busy key it
// writes the correct TAT, or on a refusal puts the previous one back, in a
// second call; the script is atomic, so no one sees the interim value.
//
// Numbers stay below 2^53, exact as Lua doubles; TATs are written with %d
// so no digit is lost to Lua's %.14g. A key lives until it has fully
// refilled, plus one second.
var script = redis.NewScript(`
local now
if ARGV[3] then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end
local cost = tonumber(ARGV[2])
local old = tonumber(redis.call('SET', KEYS[1], string.format('%d', now + cost), 'PX', (cost - cost % 1000) / 1000 + 1000, 'GET'))
if not old or old <= now then
  return 0
end
local d = old - now
local ahead = d + cost
if ahead > tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], string.format('%d', old), 'PX', (d - d % 1000) / 1000 + 1000)
  return -1 - d
end
redis.call('SET', KEYS[1], string.format('%d', now + ahead), 'PX', (ahead - ahead % 1000) / 1000 + 1000)
return d
`)

// New validates cfg and returns a Store.
func New(cfg Config) (*Store, error) {
	if cfg.Client == nil {
		return nil, errors.New("redisstore: Client is required")
	}
	if cfg.Timeout < 0 {
		return nil, errors.New("redisstore: Timeout must not be negative")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.DenyCacheSize == 0 {
		cfg.DenyCacheSize = DefaultDenyCacheSize
	}
	s := &Store{
		client:  cfg.Client,
		prefix:  cfg.Prefix,
		timeout: cfg.Timeout,
		now:     cfg.Now,
		base:    time.Now(),
		denyCap: cfg.DenyCacheSize,
	}
	s.baseUS = s.base.UnixMicro()
	if s.denyCap > 0 {
		s.denied = make(map[string]int64)
	}
	return s, nil
}

// Allow decides one request of cost n for key in one round trip, or none
// when the key is known to be over its limit.
func (s *Store) Allow(ctx context.Context, key string, limit gcra.Limit, n int) (gcra.Result, error) {
	if s.closed.Load() {
		return gcra.Result{}, ErrClosed
	}
	p, err := gcra.Compile(limit, n)
	if err != nil {
		return gcra.Result{}, err
	}
	localNow := s.localMicros()
	if r, ok := s.cachedDenial(key, localNow, p); ok {
		return r, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var d int64
	if s.now != nil {
		d, err = script.Run(ctx, s.client, []string{s.prefix + key}, p.Tolerance, p.Cost, localNow).Int64()
	} else {
		d, err = script.Run(ctx, s.client, []string{s.prefix + key}, p.Tolerance, p.Cost).Int64()
	}
	if err != nil {
		return gcra.Result{}, fmt.Errorf("redisstore: %w", err)
	}
	allowed := d >= 0
	if !allowed {
		d = -1 - d
	}
	// GCRA depends only on how far the TAT is ahead of now.
	_, r := gcra.Decide(d, 0, p)
	if r.Allowed != allowed {
		return gcra.Result{}, errors.New("redisstore: script and Go disagree on a decision")
	}
	if !allowed {
		s.rememberDenial(key, localNow+d, localNow)
	}
	return r, nil
}

// localMicros is this host's clock for the deny cache: Config.Now when
// set, else monotonic time (only differences matter to the cache).
func (s *Store) localMicros() int64 {
	if s.now != nil {
		return s.now().UnixMicro()
	}
	return s.baseUS + int64(time.Since(s.base)/time.Microsecond)
}

func (s *Store) cachedDenial(key string, now int64, p gcra.Params) (gcra.Result, bool) {
	if s.denyCap <= 0 {
		return gcra.Result{}, false
	}
	s.mu.Lock()
	tat, ok := s.denied[key]
	if !ok {
		s.mu.Unlock()
		return gcra.Result{}, false
	}
	_, r := gcra.Decide(tat, now, p)
	if r.Allowed {
		delete(s.denied, key)
	}
	s.mu.Unlock()
	return r, !r.Allowed
}

func (s *Store) rememberDenial(key string, tat, now int64) {
	if s.denyCap <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return
	}
	if _, ok := s.denied[key]; !ok && len(s.denied) >= s.denyCap {
		// Drop an entry that no longer denies anything, or, failing that
		// within a small random sample, any sampled one: forgetting a
		// denial only costs a round trip.
		seen := 0
		for k, t := range s.denied {
			seen++
			if t <= now || seen == 8 {
				delete(s.denied, k)
				break
			}
		}
	}
	s.denied[key] = tat
}

// Close forgets the local denials; Allow fails with [ErrClosed] afterwards.
// It does not close the Redis client.
func (s *Store) Close() error {
	s.closed.Store(true)
	s.mu.Lock()
	if s.denied != nil {
		clear(s.denied)
	}
	s.mu.Unlock()
	return nil
}
