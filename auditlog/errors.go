package auditlog

import "errors"

// Sentinel errors. Wrapped errors carry detail; test with errors.Is.
var (
	// ErrInvalidConfig is returned by New and NewWitness for a bad Config.
	ErrInvalidConfig = errors.New("auditlog: invalid config")
	// ErrInvalidEvent is returned by Append for an event outside the limits
	// or with a payload that is not JSON.
	ErrInvalidEvent = errors.New("auditlog: invalid event")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("auditlog: log closed")
	// ErrConflict is returned by Store.Append when the batch does not
	// continue the store's chain (another writer appended first) and by
	// Store.Rekey when a row's key id changed meanwhile.
	ErrConflict = errors.New("auditlog: store head moved")
	// ErrTampered is returned by Replay and by New when the stored chain
	// does not verify.
	ErrTampered = errors.New("auditlog: chain does not verify")
	// ErrCheckpoint is returned for a checkpoint that does not parse, has
	// the wrong origin, or carries no valid signature from a known key.
	ErrCheckpoint = errors.New("auditlog: bad checkpoint")
	// ErrProof is returned when an inclusion or consistency proof fails.
	ErrProof = errors.New("auditlog: proof does not verify")
	// ErrRollback is returned by a Witness offered a checkpoint smaller than
	// one it already holds.
	ErrRollback = errors.New("auditlog: checkpoint rollback")
	// ErrFork is returned by a Witness offered a checkpoint inconsistent
	// with one it already holds, and by Store.AddCheckpoint for a
	// checkpoint of the size of the store's newest with another root.
	ErrFork = errors.New("auditlog: checkpoint fork")
	// ErrStaleCheckpoint is returned by Store.AddCheckpoint for a
	// checkpoint smaller than the newest the store holds: another writer
	// of the same store checkpointed a larger tree first. A Log skips it.
	ErrStaleCheckpoint = errors.New("auditlog: checkpoint older than the store's newest")
	// ErrNotFound is returned by Log.Event for a row the store does not
	// hold.
	ErrNotFound = errors.New("auditlog: no such row")
	// ErrFormat is returned when an export or sample does not decode.
	ErrFormat = errors.New("auditlog: malformed export")
)
