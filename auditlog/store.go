package auditlog

import (
	"bytes"
	"context"
	"fmt"
)

// Head is a log's durable size and the leaf hash of its last row (the zero
// Hash when Size is 0).
type Head struct {
	Size uint64
	Last Hash
}

// Rekeyed is a row's payload sealed again under another key, for
// [Store.Rekey].
type Rekeyed struct {
	Seq      uint64
	OldKeyID string
	KeyID    string
	Payload  []byte
}

// Store keeps audit rows and checkpoints. Implementations: memstore (the
// default, for tests and single-process use), filestore (the embedded
// default on disk) and pgstore (PostgreSQL). All run the shared suite in
// auditlog/storetest.
//
// A Store is safe for concurrent use. It never updates or deletes a row,
// except for the sealed payload bytes and key id through Rekey.
type Store interface {
	// Append durably appends recs, which are consecutive. recs[0].Seq must
	// be the store's size and recs[0].PrevHash its last hash, otherwise
	// Append returns an error wrapping ErrConflict and appends nothing. It
	// returns only once every record is durable; on error none or all of
	// the records were appended, never a subset.
	Append(ctx context.Context, recs []Record) error
	// Head returns the durable size and last hash.
	Head(ctx context.Context) (Head, error)
	// Scan calls fn for every row with Seq >= from, in order, as of the
	// call. The Record's slices are valid only during fn; an error from
	// fn stops the scan and is returned.
	Scan(ctx context.Context, from uint64, fn func(Record) error) error
	// AddCheckpoint durably keeps a signed checkpoint, keeping the store's
	// checkpoints in issue order: each is at least as large as the one
	// before it, whichever writer signed it. Atomically with the insert
	// (under the lock appends take, for a store many processes share) it
	// compares the checkpoint with the newest one kept whose body parses
	// ([ParseSignedCheckpoint]) using [CheckCheckpointOrder]: a smaller one
	// is refused with ErrStaleCheckpoint, one of the same size with
	// another root with ErrFork, and neither is kept. A copy of the newest
	// (the same bytes) is not kept twice and returns nil. A note whose
	// body does not parse is kept or refused as the store's format allows;
	// it never takes part in the ordering. The root is not checked
	// against the rows: the Log signs only roots of rows it read from the
	// store, and Verify checks every root.
	AddCheckpoint(ctx context.Context, signed []byte) error
	// Checkpoints calls fn for every checkpoint kept, oldest first.
	Checkpoints(ctx context.Context, fn func(signed []byte) error) error
	// Rekey replaces the sealed payloads of rows; a row whose key id is
	// no longer OldKeyID is left alone and reported with ErrConflict
	// after the others are done. Hashes are never touched.
	Rekey(ctx context.Context, rows []Rekeyed) error
	// Close releases the store's resources.
	Close() error
}

// Damage is a stretch of a store's underlying file that holds no valid
// row or checkpoint. Stores that read raw files report it (filestore's
// read-only mode, through [Damaged]) instead of failing, so that [Verify]
// can locate it; [LoadExport] copies it into [Export.Damage].
type Damage struct {
	// Position is the number of rows before the damage: the index in
	// Export.Records of the first row after it.
	Position int
	// Offset and Length locate the damaged bytes in the file.
	Offset, Length int64
	// Torn marks an incomplete final frame: an append cut short by a
	// crash, which never returned and so acknowledged nothing. Every
	// other damage is corruption or tampering.
	Torn bool
	// Detail says what is wrong, for an operator.
	Detail string
}

// Damaged is implemented by stores that can report [Damage].
type Damaged interface {
	Damage() []Damage
}

// LatestCheckpointer is implemented by stores that can return their newest
// checkpoint without reading them all; [New] uses it when present. It
// returns nil when the store holds none.
type LatestCheckpointer interface {
	LatestCheckpoint(ctx context.Context) ([]byte, error)
}

// ParseSignedCheckpoint parses the checkpoint in a signed note without
// checking its signatures, for a store that orders checkpoints (see
// [Store.AddCheckpoint]) without holding the keys.
func ParseSignedCheckpoint(signed []byte) (Checkpoint, error) {
	return parseUnverified(signed)
}

// CheckCheckpointOrder reports whether a store whose newest checkpoint is
// prev may keep next after it: next must be larger, or of the same size
// with the same root. Otherwise it returns an error wrapping
// ErrStaleCheckpoint (next is smaller) or ErrFork (same size, two roots).
func CheckCheckpointOrder(prev, next Checkpoint) error {
	switch {
	case next.Size < prev.Size:
		return fmt.Errorf("%w: size %d offered after size %d", ErrStaleCheckpoint, next.Size, prev.Size)
	case next.Size == prev.Size && next.Root != prev.Root:
		return fmt.Errorf("%w: a checkpoint of size %d with another root is stored", ErrFork, next.Size)
	}
	return nil
}

// KeepCheckpoint applies the order of [Store.AddCheckpoint] for a store
// that holds its checkpoints in memory, kept oldest first: it reports
// whether signed is to be kept, or returns the error refusing it. It
// compares signed with the newest kept checkpoint whose body parses; a
// signed note whose body does not parse is kept (Verify reports it).
func KeepCheckpoint(kept [][]byte, signed []byte) (bool, error) {
	next, err := parseUnverified(signed)
	if err != nil {
		return true, nil
	}
	for i := len(kept) - 1; i >= 0; i-- {
		prev, err := parseUnverified(kept[i])
		if err != nil {
			continue
		}
		if bytes.Equal(kept[i], signed) {
			return false, nil
		}
		return true, CheckCheckpointOrder(prev, next)
	}
	return true, nil
}
