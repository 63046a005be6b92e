package idempotency

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults applied by [NewRunner] and [New] to zero fields.
const (
	DefaultLease          = 30 * time.Second
	DefaultRetention      = 24 * time.Hour
	DefaultMaxResultBytes = 1 << 20
	DefaultStoreTimeout   = 5 * time.Second
)

// RunnerConfig configures a [Runner]. Every zero field takes the default
// it names.
type RunnerConfig struct {
	// Store keeps the records. Required: there is no implicit default,
	// because an in-process store silently gives no guarantee across
	// replicas. Use memstore.New for one process, redisstore.New for many.
	Store Store
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Lease is how long a claim stays in flight without a renewal before
	// another caller may take it over. Default [DefaultLease]; at least
	// one second.
	Lease time.Duration
	// Heartbeat is how often a running operation's lease is renewed
	// (extended by Lease) in the background. Default Lease/3; a negative
	// value disables the heartbeat, leaving renewals to [Lease.Extend].
	// When a renewal finds the lease lost, the operation's context is
	// cancelled with cause [ErrLeaseLost].
	Heartbeat time.Duration
	// HeartbeatLimit bounds how long after its claim an operation's lease
	// is renewed in the background. An operation still running after it
	// (a hung handler) loses its claim when the current lease ends, so a
	// stuck process cannot hold a key for ever; a worker that knows it is
	// waiting renews explicitly with [Lease.Extend], which is not limited.
	// Default 10 × Lease.
	HeartbeatLimit time.Duration
	// Retention is how long a finished record is kept: a replay inside it
	// returns the stored result, after it the key is new. Default
	// [DefaultRetention] (24 h).
	Retention time.Duration
	// MaxResultBytes caps a stored result body. A larger result is
	// recorded as [StateNotReplayable]: the operation does not run again
	// and a retry gets [ErrNotReplayable]. Default
	// [DefaultMaxResultBytes]; at most [MaxBodyLen].
	MaxResultBytes int
	// StoreTimeout bounds the store calls that finish a claim (complete,
	// release), which run even when the caller's context is cancelled so
	// that a client that hangs up cannot leave a record behind. Default
	// [DefaultStoreTimeout].
	StoreTimeout time.Duration
	// Logger receives store failures and lost leases, with the hashed
	// record key only. Default slog.Default().
	Logger *slog.Logger
}

func (c RunnerConfig) withDefaults() (RunnerConfig, error) {
	if c.Store == nil {
		return c, fmt.Errorf("%w: Store is required (memstore.New for one process, redisstore.New for many)", ErrInvalidConfig)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	if c.Lease < time.Second {
		return c, fmt.Errorf("%w: Lease %v is under one second", ErrInvalidConfig, c.Lease)
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = c.Lease / 3
	}
	if c.Heartbeat >= c.Lease {
		return c, fmt.Errorf("%w: Heartbeat %v must be shorter than Lease %v", ErrInvalidConfig, c.Heartbeat, c.Lease)
	}
	if c.HeartbeatLimit == 0 {
		c.HeartbeatLimit = 10 * c.Lease
	}
	if c.HeartbeatLimit < 0 {
		return c, fmt.Errorf("%w: negative HeartbeatLimit %v", ErrInvalidConfig, c.HeartbeatLimit)
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.Retention < c.Lease {
		return c, fmt.Errorf("%w: Retention %v is shorter than Lease %v", ErrInvalidConfig, c.Retention, c.Lease)
	}
	if c.MaxResultBytes == 0 {
		c.MaxResultBytes = DefaultMaxResultBytes
	}
	if c.MaxResultBytes < 0 || c.MaxResultBytes > MaxBodyLen {
		return c, fmt.Errorf("%w: MaxResultBytes %d outside 1..%d", ErrInvalidConfig, c.MaxResultBytes, MaxBodyLen)
	}
	if c.StoreTimeout == 0 {
		c.StoreTimeout = DefaultStoreTimeout
	}
	if c.StoreTimeout < 0 {
		return c, fmt.Errorf("%w: negative StoreTimeout %v", ErrInvalidConfig, c.StoreTimeout)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// Runner runs operations at most once per key: the transport-neutral core
// shared by the HTTP middleware ([Middleware]), queue consumers and
// workers. A Runner has no zero value; build one with [NewRunner]. It is
// safe for concurrent use.
type Runner struct {
	cfg   RunnerConfig
	owner [8]byte // random per Runner; with seq it makes claim owners unique
	seq   atomic.Uint64
	stats stats
}

type stats struct {
	claimed, replayed, inFlight, reused, notReplayable atomic.Uint64
	released, storeErrors, leaseLost                   atomic.Uint64
}

// Stats are counters since [NewRunner], for metrics exporters (see the
// otelmetric module). Every operation counts once in the first five.
type Stats struct {
	Claimed       uint64 // claims won: the operation ran
	Replayed      uint64 // finished results returned without running again
	InFlight      uint64 // refused: another holder was running the key
	Reused        uint64 // refused: the key came with another payload
	NotReplayable uint64 // refused: done, but its result was too large to keep
	Released      uint64 // claims given back (error, panic, 5xx) so a retry runs
	StoreErrors   uint64 // store calls that failed (each attempt counts)
	LeaseLost     uint64 // results not stored: the claim had been taken over
}

// Stats returns a snapshot of the counters.
func (r *Runner) Stats() Stats {
	s := &r.stats
	return Stats{
		Claimed: s.claimed.Load(), Replayed: s.replayed.Load(), InFlight: s.inFlight.Load(),
		Reused: s.reused.Load(), NotReplayable: s.notReplayable.Load(), Released: s.released.Load(),
		StoreErrors: s.storeErrors.Load(), LeaseLost: s.leaseLost.Load(),
	}
}

// NewRunner validates cfg and returns a Runner.
func NewRunner(cfg RunnerConfig) (*Runner, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &Runner{cfg: c}
	if _, err := rand.Read(r.owner[:]); err != nil {
		return nil, fmt.Errorf("idempotency: owner id: %w", err)
	}
	return r, nil
}

func (r *Runner) newOwner() [16]byte {
	var o [16]byte
	copy(o[:8], r.owner[:])
	binary.BigEndian.PutUint64(o[8:], r.seq.Add(1))
	return o
}

// Do runs fn at most once for key and fingerprint fp within the retention
// window, and returns its result.
//
//   - No live record: Do claims key, runs fn with a [Lease] (also in fn's
//     context, see [FromContext]), stores the result and returns it
//     with replayed false. When fn returns an error, panics, or returns a
//     Status of 500 or more, the claim is released so a retry runs fn
//     again; the error (or the 5xx result) is returned as is.
//   - A finished record with the same fingerprint: Do returns the stored
//     result with replayed true, without running fn.
//   - A record with another fingerprint: [ErrKeyReused].
//   - A claim still in flight: an [*InFlightError] ([ErrInFlight]); a queue
//     consumer redelivers the message later.
//   - A finished but oversized result: [ErrNotReplayable].
//   - The store fails: an error wrapping [ErrUnavailable]; fn does not run.
//
// When fn returns an error wrapping [ErrOutcomeUnknown] (its side effect
// may or may not have happened, for example a write whose acknowledgement
// was lost and could not yet be read back), the claim is neither released
// nor completed: it stays in flight until its lease ends (the heartbeat
// stops), so a retry meets 409 meanwhile and takes the key over after.
//
// When fn succeeded but its result could not be stored (the lease was lost
// to a takeover, or the store failed), Do returns fn's result together with
// an error wrapping [ErrLeaseLost] or [ErrUnavailable]: the side effect has
// happened, and a later holder may run fn again.
//
// key is any string naming the operation, for example the message id or,
// to share records with HTTP, [RecordKey]. It is hashed before it reaches
// the store or a log.
func (r *Runner) Do(ctx context.Context, key string, fp [32]byte, fn func(ctx context.Context, l *Lease) (Result, error)) (res Result, replayed bool, err error) {
	l, existing, err := r.begin(ctx, storeKey(key), fp)
	if err != nil {
		return Result{}, false, err
	}
	if l == nil {
		return existing.Result, true, nil
	}
	ctx, stop := l.watch(ctx)
	defer stop()
	defer func() {
		if p := recover(); p != nil {
			l.release(ctx)
			panic(p)
		}
	}()
	res, err = fn(ctx, l)
	if errors.Is(err, ErrOutcomeUnknown) {
		// Neither release (a retry would run the operation again while its
		// first run may still land) nor complete: the claim stays in flight
		// until its lease ends, then a retry takes it over.
		l.finish()
		return res, false, err
	}
	if err != nil || res.Status >= 500 {
		l.release(ctx)
		return res, false, err
	}
	return res, false, l.complete(ctx, res)
}

// begin claims skey or reports what holds it. It returns a lease when the
// caller must run the operation, or the completed record to replay.
func (r *Runner) begin(ctx context.Context, skey string, fp [32]byte) (*Lease, Record, error) {
	now := r.cfg.Now()
	rec := Record{
		State:       StateInFlight,
		Token:       1,
		Owner:       r.newOwner(),
		Fingerprint: fp,
		CreatedAt:   now,
		LeaseUntil:  now.Add(r.cfg.Lease),
		ExpiresAt:   now.Add(r.cfg.Retention),
	}
	got, claimed, err := r.cfg.Store.Claim(ctx, skey, rec, now)
	if err != nil {
		r.logStoreError(ctx, "claim", skey, err)
		return nil, Record{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if claimed {
		r.stats.claimed.Add(1)
		return &Lease{r: r, key: skey, rec: got}, Record{}, nil
	}
	if got.Fingerprint != fp {
		r.stats.reused.Add(1)
		return nil, Record{}, ErrKeyReused
	}
	switch got.State {
	case StateInFlight:
		r.stats.inFlight.Add(1)
		return nil, Record{}, &InFlightError{RetryAfter: max(got.LeaseUntil.Sub(now), 0)}
	case StateNotReplayable:
		r.stats.notReplayable.Add(1)
		return nil, Record{}, ErrNotReplayable
	}
	r.stats.replayed.Add(1)
	return nil, got, nil
}

func (r *Runner) logStoreError(ctx context.Context, op, skey string, err error) {
	r.stats.storeErrors.Add(1)
	r.cfg.Logger.LogAttrs(ctx, slog.LevelError, "idempotency: store failed",
		slog.String("op", op), slog.String("record", logKey(skey)), slog.Any("error", err))
}

// logKey shortens a hashed store key for logs.
func logKey(skey string) string {
	if len(skey) > 12 {
		return skey[:12]
	}
	return skey
}

// Lease is a running operation's claim on its key. Its methods are safe
// for concurrent use (the background heartbeat shares it).
type Lease struct {
	r   *Runner
	key string

	mu     sync.Mutex
	rec    Record
	done   bool
	cancel context.CancelCauseFunc
}

type leaseKey struct{}

// NewContext returns a copy of ctx carrying l. [Runner.Do] and the
// middleware do this for the operation they run.
func NewContext(ctx context.Context, l *Lease) context.Context {
	return context.WithValue(ctx, leaseKey{}, l)
}

// FromContext returns the lease of the operation running under ctx: a
// handler or worker uses it to renew the lease under back-pressure and to
// read the fencing token.
func FromContext(ctx context.Context) (*Lease, bool) {
	l, ok := ctx.Value(leaseKey{}).(*Lease)
	return l, ok && l != nil
}

// LeaseFromContext returns the lease of the operation running under ctx.
//
// Deprecated: use [FromContext].
func LeaseFromContext(ctx context.Context) (*Lease, bool) { return FromContext(ctx) }

// Token is the claim's fencing token. It grows by one on every takeover of
// a record, so a downstream system that remembers the highest token it
// has accepted for a key can reject a late holder's writes.
func (l *Lease) Token() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rec.Token
}

// Until is when the lease ends unless renewed.
func (l *Lease) Until() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rec.LeaseUntil
}

// Extend renews the lease to d from now (the configured Lease when d is
// zero or less). It returns [ErrLeaseLost] when another holder has taken
// the key over or the operation has finished, and an error wrapping
// [ErrUnavailable] when the store fails; the lease then still ends at
// [Lease.Until].
func (l *Lease) Extend(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		d = l.r.cfg.Lease
	}
	l.mu.Lock()
	if l.done {
		l.mu.Unlock()
		return ErrLeaseLost
	}
	now := l.r.cfg.Now()
	rec := l.rec
	rec.LeaseUntil = now.Add(d)
	if rec.ExpiresAt.Before(rec.LeaseUntil) {
		rec.ExpiresAt = rec.LeaseUntil
	}
	l.mu.Unlock()
	err := l.r.cfg.Store.Extend(ctx, l.key, rec, now)
	switch {
	case errors.Is(err, ErrLeaseLost):
		l.lost()
		return ErrLeaseLost
	case err != nil:
		l.r.logStoreError(ctx, "extend", l.key, err)
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	l.mu.Lock()
	if rec.LeaseUntil.After(l.rec.LeaseUntil) {
		l.rec.LeaseUntil, l.rec.ExpiresAt = rec.LeaseUntil, rec.ExpiresAt
	}
	l.mu.Unlock()
	return nil
}

func (l *Lease) lost() {
	l.mu.Lock()
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	if done {
		return // a renewal that raced the operation's own completion
	}
	if cancel != nil {
		cancel(ErrLeaseLost)
	}
	l.r.cfg.Logger.LogAttrs(context.Background(), slog.LevelWarn, "idempotency: lease lost",
		slog.String("record", logKey(l.key)))
}

// watch derives the operation's context (carrying the lease, cancelled
// with cause ErrLeaseLost when a renewal finds the lease lost) and starts
// the heartbeat. stop ends both.
func (l *Lease) watch(parent context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(NewContext(parent, l))
	l.mu.Lock()
	l.cancel = cancel
	l.mu.Unlock()
	every := l.r.cfg.Heartbeat
	if every <= 0 {
		return ctx, func() { cancel(nil) }
	}
	// A timer rather than a goroutine per operation: it re-arms itself
	// after each renewal until stop or a lost lease.
	var mu sync.Mutex
	var t *time.Timer
	stopped := false
	renew := func() {
		if !l.heartbeatDue(l.r.cfg.Now()) {
			return // past HeartbeatLimit: let the lease run out
		}
		// The operation may outlive its caller's context (a client that
		// hung up): keep renewing until it actually ends.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), l.r.cfg.StoreTimeout)
		err := l.Extend(rctx, 0)
		rcancel()
		mu.Lock()
		defer mu.Unlock()
		if stopped || errors.Is(err, ErrLeaseLost) {
			return
		}
		t.Reset(every) // t re-runs this same func
	}
	mu.Lock()
	t = time.AfterFunc(every, renew)
	mu.Unlock()
	return ctx, func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
		cancel(nil)
	}
}

// heartbeatDue reports whether the background heartbeat may still renew
// the lease at now.
func (l *Lease) heartbeatDue(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.done && now.Sub(l.rec.CreatedAt) < l.r.cfg.HeartbeatLimit
}

// finish marks the lease done and returns its record, or false when it was
// already finished.
func (l *Lease) finish() (Record, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return Record{}, false
	}
	l.done = true
	return l.rec, true
}

// complete stores res as the claim's result, or a not-replayable marker
// when the body is over the cap.
func (l *Lease) complete(ctx context.Context, res Result) error {
	if len(res.Body) > l.r.cfg.MaxResultBytes {
		return l.completeNotReplayable(ctx, res.Status)
	}
	return l.completeRecord(ctx, StateCompleted, res)
}

// completeNotReplayable records that the operation finished with status
// but its result could not be stored.
func (l *Lease) completeNotReplayable(ctx context.Context, status int) error {
	return l.completeRecord(ctx, StateNotReplayable, Result{Status: status})
}

func (l *Lease) completeRecord(ctx context.Context, st State, res Result) error {
	rec, ok := l.finish()
	if !ok {
		l.r.stats.leaseLost.Add(1)
		return ErrLeaseLost
	}
	if res.Status == 0 {
		res.Status = http.StatusOK
	}
	now := l.r.cfg.Now()
	rec.State = st
	rec.LeaseUntil = time.Time{}
	rec.ExpiresAt = now.Add(l.r.cfg.Retention)
	rec.Result = res
	return l.store(ctx, "complete", func(ctx context.Context) error {
		return l.r.cfg.Store.Complete(ctx, l.key, rec, now)
	})
}

// release deletes the claim so the next caller runs the operation again.
func (l *Lease) release(ctx context.Context) {
	rec, ok := l.finish()
	if !ok {
		return
	}
	l.r.stats.released.Add(1)
	_ = l.store(ctx, "release", func(ctx context.Context) error {
		return l.r.cfg.Store.Release(ctx, l.key, rec)
	})
}

// retryBackoff spaces the attempts to finish a claim: a network blip must
// not leave a finished operation looking in flight until its lease ends
// (after which a retry would run it again).
var retryBackoff = []time.Duration{20 * time.Millisecond, 100 * time.Millisecond}

func (l *Lease) store(ctx context.Context, op string, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.r.cfg.StoreTimeout)
	defer cancel()
	var first error
	for attempt := 0; ; attempt++ {
		err := f(ctx)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrLeaseLost) && first == nil:
			l.r.stats.leaseLost.Add(1)
			l.r.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "idempotency: "+op+" rejected: lease lost",
				slog.String("record", logKey(l.key)))
			return ErrLeaseLost
		case errors.Is(err, ErrLeaseLost):
			// An earlier attempt failed in transit and may have been
			// applied: the outcome is unknown, report the first failure.
			return fmt.Errorf("%w: %w", ErrUnavailable, first)
		}
		if first == nil {
			first = err
		}
		l.r.logStoreError(ctx, op, l.key, err)
		if attempt >= len(retryBackoff) {
			return fmt.Errorf("%w: %w", ErrUnavailable, first)
		}
		t := time.NewTimer(retryBackoff[attempt])
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %w", ErrUnavailable, first)
		case <-t.C:
		}
	}
}
