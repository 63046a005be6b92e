package memstore

import (
	"context"
	"errors"
	"hash/maphash"
	"math/bits"
	"sync"
	"time"

	"github.com/malai-sec/malai/ratelimit/internal/gcra"
)

// Defaults applied by [New].
const (
	DefaultMaxKeys       = 1 << 20
	DefaultSweepInterval = time.Minute
	maxShards            = 64
	evictionSample       = 8
)

// Config configures a [Store]. The zero Config is usable: at most
// [DefaultMaxKeys] keys, swept every [DefaultSweepInterval], real time.
type Config struct {
	// MaxKeys is the hard cap on keys held. Default [DefaultMaxKeys].
	MaxKeys int
	// SweepInterval is how often a background goroutine drops fully
	// refilled keys. Default [DefaultSweepInterval]; negative disables the
	// goroutine (call [Store.Sweep] yourself).
	SweepInterval time.Duration
	// Now is the clock. Default: the monotonic clock (wall time at New plus
	// time.Since), which is immune to wall-clock steps and costs half a
	// time.Now.
	Now func() time.Time
}

// ErrClosed is returned by Allow after Close.
var ErrClosed = errors.New("memstore: store is closed")

// Store is an in-memory GCRA store. Build it with [New]; the zero value is
// not usable. It is safe for concurrent use.
type Store struct {
	seed   maphash.Seed
	now    func() time.Time // nil: monotonic clock from base
	base   time.Time
	baseUS int64
	shards []shard
	shift  uint // top bits of the hash select the shard

	stop     chan struct{}
	done     chan struct{}
	closeMu  sync.Mutex
	isClosed bool
}

type shard struct {
	mu     sync.Mutex
	m      map[uint64]int64 // key hash → TAT in µs
	cap    int
	closed bool
	_      [32]byte // keep hot shards on separate cache lines
}

// New returns a Store. It starts the sweep goroutine unless disabled; call
// Close to stop it.
func New(cfg Config) (*Store, error) {
	if cfg.MaxKeys < 0 {
		return nil, errors.New("memstore: MaxKeys must not be negative")
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = DefaultSweepInterval
	}
	n := maxShards
	for n > 1 && n > cfg.MaxKeys {
		n /= 2
	}
	s := &Store{
		seed:   maphash.MakeSeed(),
		now:    cfg.Now,
		base:   time.Now(),
		shards: make([]shard, n),
		shift:  uint(64 - bits.TrailingZeros(uint(n))),
	}
	s.baseUS = s.base.UnixMicro()
	per := cfg.MaxKeys / n
	for i := range s.shards {
		s.shards[i].m = make(map[uint64]int64)
		s.shards[i].cap = per
	}
	if cfg.SweepInterval > 0 {
		s.stop, s.done = make(chan struct{}), make(chan struct{})
		go s.sweepLoop(cfg.SweepInterval)
	}
	return s, nil
}

func (s *Store) shardOf(h uint64) *shard {
	if s.shift == 64 {
		return &s.shards[0]
	}
	return &s.shards[h>>s.shift]
}

// micros returns the current time in µs since the Unix epoch.
func (s *Store) micros() int64 {
	if s.now != nil {
		return s.now().UnixMicro()
	}
	return s.baseUS + int64(time.Since(s.base)/time.Microsecond)
}

// Allow decides one request of cost n (usually 1) for key under limit.
// The error is non-nil only for an invalid limit or a closed store.
func (s *Store) Allow(_ context.Context, key string, limit gcra.Limit, n int) (gcra.Result, error) {
	p, err := gcra.Compile(limit, n)
	if err != nil {
		return gcra.Result{}, err
	}
	h := maphash.String(s.seed, key)
	sh := s.shardOf(h)
	now := s.micros()
	sh.mu.Lock()
	if sh.closed {
		sh.mu.Unlock()
		return gcra.Result{}, ErrClosed
	}
	tat, ok := sh.m[h]
	newTAT, r := gcra.Decide(tat, now, p)
	if r.Allowed {
		if !ok && len(sh.m) >= sh.cap {
			sh.evict(now)
		}
		sh.m[h] = newTAT
	}
	sh.mu.Unlock()
	return r, nil
}

// evict removes one key: a refilled one if the sample holds one, else the
// sampled key with the earliest TAT. Map iteration starts at a random
// position, which makes the sample random.
func (sh *shard) evict(now int64) {
	var victim uint64
	best := int64(1<<63 - 1)
	seen := 0
	for h, tat := range sh.m {
		if tat <= now {
			victim = h
			break
		}
		if tat < best {
			victim, best = h, tat
		}
		if seen++; seen == evictionSample {
			break
		}
	}
	delete(sh.m, victim)
}

// Len returns the number of keys held.
func (s *Store) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// Sweep drops every key that has fully refilled and returns how many it
// dropped. It locks one shard at a time.
func (s *Store) Sweep() int {
	now := s.micros()
	dropped := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for h, tat := range sh.m {
			if tat <= now {
				delete(sh.m, h)
				dropped++
			}
		}
		sh.mu.Unlock()
	}
	return dropped
}

func (s *Store) sweepLoop(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Sweep()
		}
	}
}

// Close stops the sweep goroutine and releases the keys. Allow fails with
// [ErrClosed] afterwards. Close is idempotent.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.isClosed {
		return nil
	}
	s.isClosed = true
	if s.stop != nil {
		close(s.stop)
		<-s.done
	}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		sh.closed = true
		sh.m = nil
		sh.mu.Unlock()
	}
	return nil
}
