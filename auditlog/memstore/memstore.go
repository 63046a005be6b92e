// Package memstore is the in-memory [auditlog.Store]: the default for
// tests and for a process that only needs the chain while it runs. Nothing
// survives a restart.
package memstore

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"github.com/malai-sec/malai/auditlog"
)

// Store is an in-memory audit store. The zero value is not usable; call
// New. It is safe for concurrent use.
type Store struct {
	mu     sync.RWMutex
	rows   []auditlog.Record
	cps    [][]byte
	closed bool
}

var (
	_ auditlog.Store              = (*Store)(nil)
	_ auditlog.LatestCheckpointer = (*Store)(nil)
)

// New returns an empty store.
func New() *Store { return &Store{} }

func (s *Store) check() error {
	if s.closed {
		return auditlog.ErrClosed
	}
	return nil
}

// Append implements auditlog.Store.
func (s *Store) Append(ctx context.Context, recs []auditlog.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	var last auditlog.Hash
	if n := len(s.rows); n > 0 {
		last = s.rows[n-1].Hash
	}
	if recs[0].Seq != uint64(len(s.rows)) || recs[0].PrevHash != last {
		return fmt.Errorf("memstore: batch starts at %d, store holds %d: %w", recs[0].Seq, len(s.rows), auditlog.ErrConflict)
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].Seq != recs[i-1].Seq+1 || recs[i].PrevHash != recs[i-1].Hash {
			return fmt.Errorf("memstore: batch is not consecutive at %d: %w", recs[i].Seq, auditlog.ErrConflict)
		}
	}
	for _, r := range recs {
		r.Payload = bytes.Clone(r.Payload)
		s.rows = append(s.rows, r)
	}
	return nil
}

// Head implements auditlog.Store.
func (s *Store) Head(ctx context.Context) (auditlog.Head, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(); err != nil {
		return auditlog.Head{}, err
	}
	if len(s.rows) == 0 {
		return auditlog.Head{}, nil
	}
	return auditlog.Head{Size: uint64(len(s.rows)), Last: s.rows[len(s.rows)-1].Hash}, nil
}

// Scan implements auditlog.Store.
func (s *Store) Scan(ctx context.Context, from uint64, fn func(auditlog.Record) error) error {
	s.mu.RLock()
	if err := s.check(); err != nil {
		s.mu.RUnlock()
		return err
	}
	rows := s.rows[:len(s.rows):len(s.rows)]
	s.mu.RUnlock()
	for i := from; i < uint64(len(rows)); i++ {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		s.mu.RLock()
		r := rows[i] // Rekey may swap the payload slice; read it under the lock
		s.mu.RUnlock()
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// AddCheckpoint implements auditlog.Store; checkpoints are ordered as
// [auditlog.KeepCheckpoint] says.
func (s *Store) AddCheckpoint(ctx context.Context, signed []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return err
	}
	keep, err := auditlog.KeepCheckpoint(s.cps, signed)
	if err != nil {
		return fmt.Errorf("memstore: %w", err)
	}
	if !keep {
		return nil
	}
	s.cps = append(s.cps, bytes.Clone(signed))
	return nil
}

// Checkpoints implements auditlog.Store.
func (s *Store) Checkpoints(ctx context.Context, fn func([]byte) error) error {
	s.mu.RLock()
	if err := s.check(); err != nil {
		s.mu.RUnlock()
		return err
	}
	cps := s.cps[:len(s.cps):len(s.cps)]
	s.mu.RUnlock()
	for _, c := range cps {
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}

// LatestCheckpoint implements auditlog.LatestCheckpointer.
func (s *Store) LatestCheckpoint(context.Context) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(); err != nil {
		return nil, err
	}
	if len(s.cps) == 0 {
		return nil, nil
	}
	return bytes.Clone(s.cps[len(s.cps)-1]), nil
}

// Rekey implements auditlog.Store.
func (s *Store) Rekey(ctx context.Context, rows []auditlog.Rekeyed) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return err
	}
	var conflict error
	for _, k := range rows {
		if k.Seq >= uint64(len(s.rows)) {
			return fmt.Errorf("memstore: rekey row %d: no such row", k.Seq)
		}
		r := &s.rows[k.Seq]
		if r.KeyID != k.OldKeyID {
			conflict = fmt.Errorf("memstore: rekey row %d: %w", k.Seq, auditlog.ErrConflict)
			continue
		}
		r.Payload, r.KeyID = bytes.Clone(k.Payload), k.KeyID
	}
	return conflict
}

// Close implements auditlog.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// Tamper gives tests direct access to the rows and checkpoints, to
// simulate an attacker with write access to the storage. It is not part of
// the Store contract; production code has no reason to call it.
func (s *Store) Tamper(fn func(rows *[]auditlog.Record, checkpoints *[][]byte)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(&s.rows, &s.cps)
}
