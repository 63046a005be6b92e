package auditlog

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"golang.org/x/mod/sumdb/note"
)

// WitnessConfig configures [NewWitness].
type WitnessConfig struct {
	// Store keeps the accepted checkpoints. It must be separate from the
	// log's store (another directory, another database the log's operator
	// cannot write). Required. Only its checkpoint methods are used.
	Store Store
	// Origin is the log's origin. Required.
	Origin string
	// Verifiers are the log's public keys. Required unless GetVerifiers
	// is set; setting both is an error.
	Verifiers []note.Verifier
	// GetVerifiers, when set in place of Verifiers, returns the log's
	// public keys: the witness calls it in NewWitness and at every
	// Publish, so it accepts checkpoints signed by a key rotated in after
	// it started (see Config.GetSigners). It may be called concurrently.
	// The witness trusts every key it returns: feed it from a source the
	// log's operator cannot write. An error, no verifier or a nil one
	// refuses that checkpoint.
	GetVerifiers func() ([]note.Verifier, error)
}

// CheckpointWitness is a [Witness] that accepts a checkpoint only if it is
// signed by a known key, has the log's origin, is not smaller than the
// last one accepted and is proven consistent with it. It is safe for
// concurrent use.
type CheckpointWitness struct {
	cfg       WitnessConfig
	verifiers func() (note.Verifiers, error)
	mu        sync.Mutex
	latest    []byte
	cp        Checkpoint
}

// NewWitness returns a witness over cfg.Store, starting from the newest
// checkpoint already in it (which must verify).
func NewWitness(ctx context.Context, cfg WitnessConfig) (*CheckpointWitness, error) {
	if cfg.Store == nil || cfg.Origin == "" || (len(cfg.Verifiers) == 0) == (cfg.GetVerifiers == nil) {
		return nil, fmt.Errorf("%w: witness needs Store, Origin and one of Verifiers and GetVerifiers", ErrInvalidConfig)
	}
	get := cfg.GetVerifiers
	if get == nil {
		fixed := append([]note.Verifier(nil), cfg.Verifiers...)
		get = func() ([]note.Verifier, error) { return fixed, nil }
	}
	cfg.Verifiers, cfg.GetVerifiers = nil, nil
	w := &CheckpointWitness{cfg: cfg, verifiers: func() (note.Verifiers, error) {
		vs, err := get()
		if err != nil {
			return nil, fmt.Errorf("auditlog: witness verifiers: %w", err)
		}
		if len(vs) == 0 || slices.ContainsFunc(vs, func(v note.Verifier) bool { return v == nil }) {
			return nil, fmt.Errorf("%w: no witness verifier, or a nil one", ErrInvalidConfig)
		}
		return note.VerifierList(vs...), nil
	}}
	if err := w.load(ctx); err != nil {
		return nil, err
	}
	return w, nil
}

// load adopts the newest checkpoint in the witness's store.
func (w *CheckpointWitness) load(ctx context.Context) error {
	vs, err := w.verifiers()
	if err != nil {
		return err
	}
	return w.cfg.Store.Checkpoints(ctx, func(s []byte) error {
		c, _, err := OpenCheckpoint(s, w.cfg.Origin, vs)
		if err != nil {
			return fmt.Errorf("auditlog: witness store: %w", err)
		}
		w.latest, w.cp = append([]byte(nil), s...), c
		return nil
	})
}

// Latest implements Witness.
func (w *CheckpointWitness) Latest(context.Context) ([]byte, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]byte(nil), w.latest...), nil
}

// Publish implements Witness. It returns an error wrapping ErrCheckpoint,
// ErrRollback, ErrFork or ErrProof for a checkpoint it refuses.
func (w *CheckpointWitness) Publish(ctx context.Context, signed []byte, proof [][]byte) error {
	vs, err := w.verifiers()
	if err != nil {
		return err
	}
	c, _, err := OpenCheckpoint(signed, w.cfg.Origin, vs)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.latest != nil {
		switch {
		case c.Size < w.cp.Size:
			return fmt.Errorf("%w: size %d after %d", ErrRollback, c.Size, w.cp.Size)
		case c.Size == w.cp.Size:
			if c.Root != w.cp.Root {
				return fmt.Errorf("%w: two roots for size %d", ErrFork, c.Size)
			}
			return nil
		}
		if err := VerifyConsistency(w.cp.Size, c.Size, proof, w.cp.Root, c.Root); err != nil {
			return fmt.Errorf("%w: %w", ErrFork, err)
		}
	}
	if err := w.cfg.Store.AddCheckpoint(ctx, signed); err != nil {
		return err
	}
	w.latest, w.cp = append([]byte(nil), signed...), c
	return nil
}
