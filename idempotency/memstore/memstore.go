// Package memstore is the in-process [idempotency.Store]: a map bounded in
// bytes, with records expired on the caller's clock.
//
// It gives the idempotency guarantee within one process only. Replicas
// behind a load balancer need a shared store (redisstore).
//
// # Bounds and sizing
//
// Records leave the store when their ExpiresAt passes (checked against the
// now each call carries). Each record counts about 320 bytes plus its key
// (43), stored response headers and body against MaxBytes: a 300-byte JSON
// response kept with its Content-Type costs about 700 bytes, so the
// default 64 MiB holds roughly 95,000 such records, and a service that
// completes N keyed requests a day at the default 24 h retention needs
// MaxBytes of about N × 700 bytes.
//
// When a new claim would take the store over MaxBytes it is refused with
// [ErrFull] (the middleware answers 503): by default the store never
// evicts a live record, because that would let a retry repeat a side
// effect. A caller that keeps its own durable record of every outcome (a
// ledger that writes each key and result into its audit chain and checks
// the chain before acting) sets Config.EvictCompleted: a full store then
// drops the completed records that expire soonest to make room, and only
// in-flight claims can fill it. When a completion does not fit, its body
// is dropped and the record is kept as not replayable, so the operation
// still never runs twice.
package memstore

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/malai-sec/malai/idempotency"
)

// DefaultMaxBytes bounds the store when Config.MaxBytes is zero.
const DefaultMaxBytes = 64 << 20

// Errors.
var (
	// ErrFull: a new claim would exceed MaxBytes.
	ErrFull = errors.New("memstore: store full")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("memstore: store closed")
)

// Config configures a [Store].
type Config struct {
	// MaxBytes bounds the approximate memory held by records (keys,
	// headers, bodies and a fixed per-record overhead). Default
	// [DefaultMaxBytes].
	MaxBytes int64
	// EvictCompleted loosens the default: when a new claim does not fit,
	// the completed records that expire soonest are evicted to make room
	// (in-flight claims never are). A retry of an evicted key runs the
	// operation again as far as this store knows, so set it only when the
	// operation itself remembers its outcome durably and checks it.
	EvictCompleted bool
}

// Store is an in-memory idempotency store. Build it with [New]; it is safe
// for concurrent use.
type Store struct {
	max   int64
	evict bool

	mu      sync.Mutex
	m       map[string]*entry
	exp     expiryHeap
	bytes   int64
	evicted int64
	closed  bool
}

type entry struct {
	rec  idempotency.Record
	size int64
}

var _ idempotency.Store = (*Store)(nil)

// New returns an empty store.
func New(cfg Config) (*Store, error) {
	if cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("memstore: negative MaxBytes %d", cfg.MaxBytes)
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	return &Store{max: cfg.MaxBytes, evict: cfg.EvictCompleted, m: make(map[string]*entry)}, nil
}

const overhead = 256

func sizeOf(key string, rec *idempotency.Record) int64 {
	n := int64(overhead + len(key) + len(rec.Result.Body))
	for k, vs := range rec.Result.Header {
		n += int64(len(k))
		for _, v := range vs {
			n += int64(len(v)) + 16
		}
	}
	return n
}

// Claim implements [idempotency.Store].
func (s *Store) Claim(ctx context.Context, key string, rec idempotency.Record, now time.Time) (idempotency.Record, bool, error) {
	if err := ctx.Err(); err != nil {
		return idempotency.Record{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return idempotency.Record{}, false, ErrClosed
	}
	s.sweep(now)
	old := s.m[key]
	if old != nil && old.rec.Live(now) {
		return old.rec, false, nil
	}
	if old != nil {
		rec.Token = old.rec.Token + 1
	}
	rec.Result = idempotency.Result{}
	e := &entry{rec: rec, size: sizeOf(key, &rec)}
	if !s.fits(old, e.size+itemCost) && (!s.evict || !s.evictFor(key, old, e.size+itemCost)) {
		return idempotency.Record{}, false, ErrFull
	}
	s.put(key, old, e)
	return rec, true, nil
}

// Extend implements [idempotency.Store].
func (s *Store) Extend(ctx context.Context, key string, rec idempotency.Record, now time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, err := s.held(key, &rec)
	if err != nil {
		return err
	}
	rec.Result = idempotency.Result{}
	s.put(key, old, &entry{rec: rec, size: old.size})
	return nil
}

// Complete implements [idempotency.Store].
func (s *Store) Complete(ctx context.Context, key string, rec idempotency.Record, now time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if rec.State != idempotency.StateCompleted && rec.State != idempotency.StateNotReplayable {
		return fmt.Errorf("memstore: complete with state %v", rec.State)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, err := s.held(key, &rec)
	if err != nil {
		return err
	}
	rec.Result.Body = bytes.Clone(rec.Result.Body)
	rec.Result.Header = cloneHeader(rec.Result.Header)
	e := &entry{rec: rec, size: sizeOf(key, &rec)}
	if !s.fits(old, e.size+itemCost) {
		// Keep the outcome, drop the body: never a second execution.
		rec.State = idempotency.StateNotReplayable
		rec.Result = idempotency.Result{Status: rec.Result.Status}
		e = &entry{rec: rec, size: sizeOf(key, &rec)}
	}
	s.put(key, old, e)
	s.sweep(now)
	return nil
}

// Release implements [idempotency.Store].
func (s *Store) Release(ctx context.Context, key string, rec idempotency.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, err := s.held(key, &rec)
	if err != nil {
		return err
	}
	delete(s.m, key)
	s.bytes -= old.size
	return nil
}

// Close empties the store; later calls return [ErrClosed].
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.m = nil
	s.exp = nil
	s.bytes = 0
	return nil
}

// Len returns the number of records held, live or not yet swept.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// held returns the entry of the in-flight claim rec belongs to.
func (s *Store) held(key string, rec *idempotency.Record) (*entry, error) {
	if s.closed {
		return nil, ErrClosed
	}
	old := s.m[key]
	if old == nil {
		return nil, idempotency.ErrLeaseLost
	}
	claim := *rec
	claim.State = idempotency.StateInFlight
	if !old.rec.SameClaim(&claim) {
		return nil, idempotency.ErrLeaseLost
	}
	return old, nil
}

// evictFor drops completed records, soonest to expire first, until size
// more bytes fit. Heap items of in-flight records are set aside and put
// back. It reports whether the claim fits now.
func (s *Store) evictFor(key string, old *entry, size int64) bool {
	var keep []expiry
	for !s.fits(old, size) && len(s.exp) > 0 {
		it := heap.Pop(&s.exp).(expiry)
		cur := s.m[it.key]
		switch {
		case cur == nil || !cur.rec.ExpiresAt.Equal(it.at):
			s.bytes -= itemCost // stale item: its record was re-dated or removed
		case it.key == key || cur.rec.State == idempotency.StateInFlight:
			keep = append(keep, it)
		default:
			delete(s.m, it.key)
			s.bytes -= cur.size + itemCost
			s.evicted++
		}
	}
	for _, it := range keep {
		heap.Push(&s.exp, it)
	}
	return s.fits(old, size)
}

// Evicted reports how many completed records EvictCompleted has dropped.
func (s *Store) Evicted() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.evicted
}

func (s *Store) fits(old *entry, size int64) bool {
	n := s.bytes + size
	if old != nil {
		n -= old.size
	}
	return n <= s.max
}

func (s *Store) put(key string, old, e *entry) {
	if old != nil {
		s.bytes -= old.size
	}
	s.m[key] = e
	s.bytes += e.size
	if old == nil || !old.rec.ExpiresAt.Equal(e.rec.ExpiresAt) {
		heap.Push(&s.exp, expiry{at: e.rec.ExpiresAt, key: key})
		s.bytes += itemCost
	}
}

// itemCost is what an expiry heap item counts against MaxBytes, so that
// items left behind by released or re-dated records stay bounded too.
const itemCost = 64

// sweep removes records whose ExpiresAt is at or before now. A heap item
// whose record has since been re-dated or removed is dropped.
func (s *Store) sweep(now time.Time) {
	for len(s.exp) > 0 && !now.Before(s.exp[0].at) {
		it := heap.Pop(&s.exp).(expiry)
		s.bytes -= itemCost
		if cur := s.m[it.key]; cur != nil && !now.Before(cur.rec.ExpiresAt) {
			delete(s.m, it.key)
			s.bytes -= cur.size
		}
	}
}

func cloneHeader(h http.Header) http.Header {
	if h == nil {
		return nil
	}
	return h.Clone()
}

type expiry struct {
	at  time.Time
	key string
}

type expiryHeap []expiry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = expiry{}
	*h = old[:len(old)-1]
	return it
}
