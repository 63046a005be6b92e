package idempotency

import (
	"context"
	"errors"
	"time"
)

// Store keeps idempotency records. Implementations: memstore (one
// process) and redisstore (shared). Every implementation passes
// storetest.Run.
//
// Keys reach a store already hashed (see [Runner.Do]); a store never sees
// an Idempotency-Key in clear. Every method decides liveness against the
// now it is given ([Record.Live]), never against its own clock, so one
// injected clock drives every store the same way; a store may also expire
// data on its own clock as a backstop, as long as it keeps a record at
// least until its ExpiresAt.
//
// Implementations must be safe for concurrent use, and atomic per key
// across every process that shares them: two concurrent Claims of a key
// never both succeed.
type Store interface {
	// Claim stores rec (StateInFlight) under key unless a live record is
	// there. When it stores rec it returns the stored record and true; on
	// a takeover of a dead record the stored Token is the dead record's
	// plus one, otherwise rec.Token. When a live record is there it
	// returns that record and false.
	Claim(ctx context.Context, key string, rec Record, now time.Time) (Record, bool, error)
	// Extend replaces the in-flight record of the same claim
	// ([Record.SameClaim]) with rec, which carries a later LeaseUntil. It
	// returns ErrLeaseLost when the stored record is missing or belongs to
	// another claim.
	Extend(ctx context.Context, key string, rec Record, now time.Time) error
	// Complete replaces the in-flight record of the same claim with rec
	// (StateCompleted or StateNotReplayable; Token and Owner identify the
	// claim). It returns ErrLeaseLost when the stored record is missing,
	// finished, or belongs to another claim: a late holder cannot
	// overwrite its successor's result.
	Complete(ctx context.Context, key string, rec Record, now time.Time) error
	// Release deletes the in-flight record of the same claim so the next
	// caller runs the operation again. It returns ErrLeaseLost when the
	// stored record belongs to another claim or is gone.
	Release(ctx context.Context, key string, rec Record) error
	// Close releases the store's resources. A store does not close
	// clients it was given.
	Close() error
}

// Errors. Compare with errors.Is.
var (
	// ErrLeaseLost: the claim is no longer the holder of its key (the
	// lease expired and another caller took the key over, or the record is
	// gone). A late completion is rejected with it.
	ErrLeaseLost = errors.New("idempotency: lease lost to another holder")
	// ErrInFlight: another holder is running the operation for this key.
	// The error is an [*InFlightError] carrying when to retry.
	ErrInFlight = errors.New("idempotency: request in flight")
	// ErrKeyReused: the key was first used with a different fingerprint.
	ErrKeyReused = errors.New("idempotency: key reused with a different payload")
	// ErrNotReplayable: the operation completed but its result was too
	// large to store; it will not run again.
	ErrNotReplayable = errors.New("idempotency: result not replayable")
	// ErrUnavailable wraps every store failure; the HTTP middleware
	// answers it with 503 and Retry-After.
	ErrUnavailable = errors.New("idempotency: store unavailable")
	// ErrInvalidConfig wraps every configuration error returned by [New]
	// and [NewRunner].
	ErrInvalidConfig = errors.New("idempotency: invalid config")
	// ErrKeyMissing: the route requires an Idempotency-Key header.
	ErrKeyMissing = errors.New("idempotency: Idempotency-Key header missing")
	// ErrKeyInvalid: the Idempotency-Key is not a structured-field string
	// of 1 to 255 characters (or, with Config.BareKeys, a bare value of
	// that size).
	ErrKeyInvalid = errors.New("idempotency: Idempotency-Key invalid")
	// ErrNoPrincipal: the principal function found no verified caller.
	ErrNoPrincipal = errors.New("idempotency: no verified caller")
	// ErrBodyTooLarge: the request body exceeds MaxBodyBytes.
	ErrBodyTooLarge = errors.New("idempotency: request body too large")
	// ErrBodyUnreadable: the request body could not be read.
	ErrBodyUnreadable = errors.New("idempotency: request body unreadable")
	// ErrOutcomeUnknown is returned (wrapped) by an operation run by
	// [Runner.Do] whose side effect may or may not have happened: Do then
	// leaves the claim in flight until its lease ends instead of releasing
	// it. The HTTP middleware answers it like ErrUnavailable (503).
	ErrOutcomeUnknown = errors.New("idempotency: outcome unknown")
)

// InFlightError is the error for a key whose first request is still
// running. It matches [ErrInFlight] with errors.Is.
type InFlightError struct {
	// RetryAfter is how long until the holder's lease ends.
	RetryAfter time.Duration
}

func (e *InFlightError) Error() string { return ErrInFlight.Error() }

// Unwrap returns [ErrInFlight].
func (e *InFlightError) Unwrap() error { return ErrInFlight }
