package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
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
	// Now, when set, replaces the server's clock: the caller's clock is
	// sent with each call. For tests with a fake clock, and for one-host
	// setups. Leave it nil in production so every host uses the server's
	// clock.
	Now func() time.Time
	// DenyCacheSize bounds the local cache of keys' last known timestamps:
	// denied keys are answered from it without a round trip, and it tells
	// an idle key (one plain SET) from a busy one (the script). Default
	// [DefaultDenyCacheSize]; negative disables the cache.
	DenyCacheSize int
}

// Store is a Redis-backed GCRA store. Build it with [New]; the zero value
// is not usable. It is safe for concurrent use.
type Store struct {
	client  redis.UniversalClient
	prefix  string
	timeout time.Duration
	now     func() time.Time // caller's clock, or nil
	cluster bool             // each node's own TIME, inside the script
	base    time.Time        // cluster mode: monotonic base of the cache's clock
	baseUS  int64

	clock    atomic.Pointer[sample] // the server's clock, sampled
	sampling atomic.Bool

	closed atomic.Bool

	mu      sync.Mutex
	hints   map[string]hint
	hintCap int
}

// hint is the last timestamp (TAT) this store learned for a key, in the
// store's clock, and whether the key was then refused.
type hint struct {
	tat    int64
	denied bool
}

// ErrClosed is returned by Allow after Close.
var ErrClosed = errors.New("redisstore: store is closed")

// script runs GCRA's compare-and-set for a key that may be busy. ARGV:
// cost µs, now µs ("" to read the server's TIME), tolerance µs, and the
// slack in ms a key lives past its TAT. It returns d = max(TAT - now, 0)
// in µs when it admitted the request, -1-d when it refused: the decision
// depends only on d, and one integer is the cheapest reply.
//
// It first writes the TAT of an idle key (now + cost) with SET ... GET,
// which also reads the previous TAT: for a key at or under its rate (TAT
// already past) that single call is the whole decision. For a busy key it
// writes the correct TAT, or on a refusal puts the previous one back, in a
// second call; the script is atomic, so no one sees the interim value.
//
// Numbers stay below 2^53, exact as Lua doubles; TATs are written with %d
// so no digit is lost to Lua's %.14g.
var script = redis.NewScript(`
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end
local cost = tonumber(ARGV[1])
local slack = tonumber(ARGV[4])
local old = tonumber(redis.call('SET', KEYS[1], string.format('%d', now + cost), 'PX', (cost - cost % 1000) / 1000 + slack, 'GET'))
if not old or old <= now then
  return 0
end
local d = old - now
local ahead = d + cost
if ahead > tonumber(ARGV[3]) then
  redis.call('SET', KEYS[1], string.format('%d', old), 'PX', (d - d % 1000) / 1000 + slack)
  return -1 - d
end
redis.call('SET', KEYS[1], string.format('%d', now + ahead), 'PX', (ahead - ahead % 1000) / 1000 + slack)
return d
`)

// busyScript is the script for a key that exists on the server (it is
// busy, or has refilled but not yet expired), on the sampled server clock:
// it reads the TAT first, so a refusal writes nothing (a refused request
// changes nothing in GCRA) and an admission writes once. ARGV as script's,
// now always given.
var busyScript = redis.NewScript(`
local now = tonumber(ARGV[2])
local cost = tonumber(ARGV[1])
local slack = tonumber(ARGV[4])
local old = tonumber(redis.call('GET', KEYS[1]))
if not old or old < now then
  old = now
end
local d = old - now
local ahead = d + cost
if ahead > tonumber(ARGV[3]) then
  return -1 - d
end
redis.call('SET', KEYS[1], string.format('%d', now + ahead), 'PX', (ahead - ahead % 1000) / 1000 + slack)
return d
`)

// New returns a Store over cfg.Client.
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
	_, cluster := cfg.Client.(*redis.ClusterClient)
	s := &Store{
		client:  cfg.Client,
		prefix:  cfg.Prefix,
		timeout: cfg.Timeout,
		now:     cfg.Now,
		cluster: cluster && cfg.Now == nil,
		base:    time.Now(),
		hintCap: cfg.DenyCacheSize,
	}
	s.baseUS = s.base.UnixMicro()
	if s.hintCap > 0 {
		s.hints = make(map[string]hint)
	}
	return s, nil
}

// Allow implements ratelimit.Store.
//
// A key idle long enough to have expired on the server (its bucket full)
// is decided by one plain SET NX, without the script; a busy key by the
// script; a key this store saw refused, until it would be admitted again,
// locally.
func (s *Store) Allow(ctx context.Context, key string, limit gcra.Limit, n int) (gcra.Result, error) {
	if s.closed.Load() {
		return gcra.Result{}, ErrClosed
	}
	p, err := gcra.Compile(limit, n)
	if err != nil {
		return gcra.Result{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	now, slackMs, fast, err := s.clockNow(ctx)
	if err != nil {
		return gcra.Result{}, fmt.Errorf("redisstore: clock: %w", err)
	}
	h, known := s.hint(key)
	if known && h.denied {
		if _, r := gcra.Decide(h.tat, now, p); !r.Allowed {
			return r, nil
		}
	}
	rkey := s.prefix + key
	if fast && (!known || h.tat+slackMs*1000 <= now) {
		// Expired on the server, unless another host used it since: its
		// bucket is full and the request is admitted.
		ttl := time.Duration(p.Cost/1000+slackMs) * time.Millisecond
		set, err := s.client.SetNX(ctx, rkey, strconv.FormatInt(now+p.Cost, 10), ttl).Result()
		if err != nil {
			return gcra.Result{}, fmt.Errorf("redisstore: %w", err)
		}
		if set {
			_, r := gcra.Decide(0, 0, p)
			s.remember(key, hint{tat: now + p.Cost}, now)
			return r, nil
		}
	}
	sc, nowArg := script, ""
	switch {
	case fast:
		sc, nowArg = busyScript, strconv.FormatInt(now, 10)
	case !s.cluster:
		nowArg = strconv.FormatInt(now, 10)
	}
	d, err := sc.Run(ctx, s.client, []string{rkey}, p.Cost, nowArg, p.Tolerance, slackMs).Int64()
	if err != nil {
		return gcra.Result{}, fmt.Errorf("redisstore: %w", err)
	}
	allowed := d >= 0
	if !allowed {
		d = -1 - d
	}
	_, r := gcra.Decide(d, 0, p)
	if r.Allowed != allowed {
		return gcra.Result{}, errors.New("redisstore: script and Go disagree on a decision")
	}
	if allowed {
		s.remember(key, hint{tat: now + d + p.Cost}, now)
	} else {
		s.remember(key, hint{tat: now + d, denied: true}, now)
	}
	return r, nil
}

// Slack a key lives past its TAT: a second with the caller's clock (it
// may run apart from real time) or in cluster mode; with the sampled
// server clock, twice the clock's error bound plus a millisecond, at
// least minSlackMs, so a key the server has expired is one whose TAT has
// passed on every host's clock.
const (
	callerSlackMs = 1000
	minSlackMs    = 5
)

// clockNow returns now in µs on the store's clock, the slack in ms, and
// whether the plain SET NX path may be used (only on the sampled server
// clock, where key expiry and TATs run on the same clock).
func (s *Store) clockNow(ctx context.Context) (now, slackMs int64, fast bool, err error) {
	switch {
	case s.now != nil:
		return s.now().UnixMicro(), callerSlackMs, false, nil
	case s.cluster:
		return s.baseUS + int64(time.Since(s.base)/time.Microsecond), callerSlackMs, false, nil
	}
	sm := s.clock.Load()
	if sm == nil {
		if sm, err = s.resample(ctx); err != nil {
			return 0, 0, false, err
		}
	} else if time.Since(sm.taken) >= resampleEvery && s.sampling.CompareAndSwap(false, true) {
		go func() {
			defer s.sampling.Store(false)
			ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
			defer cancel()
			_, _ = s.resample(ctx) // on failure the old sample stays, its error growing
		}()
	}
	now, errUS := sm.at(time.Now())
	return now, max(minSlackMs, (2*errUS+999)/1000+1), true, nil
}

// The server's clock is sampled once, then every resampleEvery in the
// background; between samples the local monotonic clock carries it, its
// error bound growing by driftPPM.
const (
	resampleEvery = time.Second
	driftPPM      = 100
)

// sample ties the server's clock to the local monotonic clock.
type sample struct {
	mono   time.Time // local instant (monotonic) the server reading refers to
	server int64     // server clock at mono, µs
	err    int64     // bound on the reading's error at mono, µs: half the round trip
	taken  time.Time // when the sample was last refreshed
}

// at returns the server's time at local instant t and its error bound.
func (sm *sample) at(t time.Time) (now, errUS int64) {
	age := int64(t.Sub(sm.mono) / time.Microsecond)
	return sm.server + age, sm.err + max(age, 0)*driftPPM/1_000_000
}

// resample reads the server's TIME and keeps whichever of the new and the
// current sample has the smaller error bound now.
func (s *Store) resample(ctx context.Context) (*sample, error) {
	t0 := time.Now()
	tm, err := s.client.Time(ctx).Result()
	t1 := time.Now()
	if err != nil {
		return nil, err
	}
	rtt := t1.Sub(t0)
	fresh := &sample{mono: t0.Add(rtt / 2), server: tm.UnixMicro(), err: int64(rtt/time.Microsecond)/2 + 1, taken: t1}
	for {
		old := s.clock.Load()
		next := fresh
		if old != nil {
			if _, oldErr := old.at(fresh.mono); oldErr < fresh.err {
				kept := *old
				kept.taken = t1
				next = &kept
			}
		}
		if s.clock.CompareAndSwap(old, next) {
			return next, nil
		}
	}
}

func (s *Store) hint(key string) (hint, bool) {
	if s.hintCap <= 0 {
		return hint{}, false
	}
	s.mu.Lock()
	h, ok := s.hints[key]
	s.mu.Unlock()
	return h, ok
}

// remember records a key's timestamp, evicting an entry when the cache is
// full: the first of up to eight looked at whose key has refilled by now
// (it tells nothing an absent entry does not), else the eighth.
func (s *Store) remember(key string, h hint, now int64) {
	if s.hintCap <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return
	}
	if _, ok := s.hints[key]; !ok && len(s.hints) >= s.hintCap {
		seen := 0
		for k, old := range s.hints {
			seen++
			if old.tat <= now || seen == 8 {
				delete(s.hints, k)
				break
			}
		}
	}
	s.hints[key] = h
}

// Close implements ratelimit.Store; it does not close the client.
func (s *Store) Close() error {
	s.closed.Store(true)
	s.mu.Lock()
	if s.hints != nil {
		clear(s.hints)
	}
	s.mu.Unlock()
	return nil
}
