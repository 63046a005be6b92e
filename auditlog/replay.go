package auditlog

import (
	"context"
	"errors"
	"fmt"

	"github.com/malai-sec/malai/keyring"
)

// Replay reads src from the first row, checks every row (payload opens,
// leaf hash recomputes, sequence and prev_hash link) and calls fold with
// each event in order. ring opens sealed payloads; it may be nil for a
// plaintext log. It returns the head it verified and folded: on an error,
// the head of the last row before the one that failed. A row that fails a check
// stops the replay with an error wrapping ErrTampered; an error from fold
// stops it and is returned as is.
//
// Replay proves the chain is internally consistent, not that nobody
// rewrote it wholesale: compare its head with a signed checkpoint (or run
// [Verify]) for that.
func Replay(ctx context.Context, src Store, ring *keyring.Ring, fold func(Event) error) (Head, error) {
	return replayFrom(ctx, src, ring, Head{}, fold)
}

// replayFrom is Replay from the row after head, whose hash the first row
// read must link to.
func replayFrom(ctx context.Context, src Store, ring *keyring.Ring, from Head, fold func(Event) error) (Head, error) {
	var (
		head = from
		o    opener
	)
	err := src.Scan(ctx, from.Size, func(r Record) error {
		if r.Seq != head.Size {
			return fmt.Errorf("%w: row %d found where row %d belongs", ErrTampered, r.Seq, head.Size)
		}
		if r.PrevHash != head.Last {
			return fmt.Errorf("%w: row %d does not link to row %d", ErrTampered, r.Seq, r.Seq-1)
		}
		p, err := o.open(ring, &r)
		if err != nil {
			return err
		}
		if fold != nil {
			if err := fold(r.event(p)); err != nil {
				return err
			}
		}
		head = Head{Size: r.Seq + 1, Last: r.Hash}
		return nil
	})
	return head, err
}

// opener checks one row's fields and leaf hash and opens its payload,
// reusing its buffers across rows.
type opener struct {
	buf, plain []byte
	aad        [40]byte
}

func (o *opener) open(ring *keyring.Ring, r *Record) ([]byte, error) {
	p := r.Payload
	if r.KeyID != "" {
		if ring == nil {
			return nil, fmt.Errorf("auditlog: row %d is sealed and no key ring was given", r.Seq)
		}
		var err error
		o.plain, _, err = ring.Open(o.plain[:0], r.Payload, sealAAD(o.aad[:0], r.Seq, r.Hash))
		if err != nil {
			if errors.Is(err, keyring.ErrUnknownKey) {
				return nil, fmt.Errorf("auditlog: row %d: %w", r.Seq, err)
			}
			return nil, fmt.Errorf("%w: row %d payload does not open", ErrTampered, r.Seq)
		}
		p = o.plain
	}
	if err := checkFields(r.Type, r.Actor, r.CorrelationID, p); err != nil {
		return nil, fmt.Errorf("%w: row %d: %v", ErrTampered, r.Seq, err)
	}
	o.buf = appendLeafData(o.buf[:0], r, p)
	if leafHashOf(o.buf) != r.Hash {
		return nil, fmt.Errorf("%w: row %d was modified", ErrTampered, r.Seq)
	}
	return p, nil
}

// Replay replays the log's own store with its key ring; see [Replay].
func (l *Log) Replay(ctx context.Context, fold func(Event) error) (Head, error) {
	return Replay(ctx, l.cfg.Store, l.cfg.Ring, fold)
}

// ReadFrom reads the durable rows after from, checks each one as [Replay]
// does (the first must link to from.Last) and calls fn with each event in
// order. It returns the head it reached. A caller that keeps state folded
// from the log uses it to catch up with rows another writer appended (a
// second process on the same PostgreSQL table) and to read back the outcome
// of an append that ended in an ambiguous error. It does not change the
// log's own head.
func (l *Log) ReadFrom(ctx context.Context, from Head, fn func(Event) error) (Head, error) {
	return replayFrom(ctx, l.cfg.Store, l.cfg.Ring, from, fn)
}

// Event reads back the durable row seq, checks its leaf hash (and, for a
// row the log already holds, that the hash is the one in its tree) and
// returns it with its payload opened. It returns an error wrapping
// [ErrNotFound] when the store holds no such row.
func (l *Log) Event(ctx context.Context, seq uint64) (Event, error) {
	var (
		e     Event
		found bool
		o     opener
	)
	err := l.cfg.Store.Scan(ctx, seq, func(r Record) error {
		if r.Seq != seq {
			return fmt.Errorf("%w: row %d found where row %d belongs", ErrTampered, r.Seq, seq)
		}
		p, err := o.open(l.cfg.Ring, &r)
		if err != nil {
			return err
		}
		l.mu.RLock()
		known := seq < l.tree.size
		var want Hash
		if known {
			want = l.tree.hashes[0][seq]
		}
		l.mu.RUnlock()
		if known && want != r.Hash {
			return fmt.Errorf("%w: row %d differs from the row the log committed", ErrTampered, seq)
		}
		e, found = r.event(p), true
		return errStopScan
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return Event{}, err
	}
	if !found {
		return Event{}, fmt.Errorf("auditlog: row %d: %w", seq, ErrNotFound)
	}
	return e, nil
}

var errStopScan = errors.New("stop scan")

// Reencrypt re-keys the log's own store with its key ring (see
// [Reencrypt]). Run it in a goroutine after a rotation; it returns the
// number of rows re-encrypted.
func (l *Log) Reencrypt(ctx context.Context) (int, error) {
	return Reencrypt(ctx, l.cfg.Store, l.cfg.Ring)
}

// SealedBy counts the rows of the log's own store by data key (see
// [SealedBy]).
func (l *Log) SealedBy(ctx context.Context) (map[string]uint64, error) {
	return SealedBy(ctx, l.cfg.Store)
}

// SealedBy counts the rows of st by the id of the key that seals their
// payload ("" counts plaintext payloads), reading every row once without
// opening a payload. Once no row names a key and every process seals
// under a newer one, that key may leave the ring: nothing it sealed is
// left in st. The counts are those of one pass over the rows; rows
// appended meanwhile may be missed.
func SealedBy(ctx context.Context, st Store) (map[string]uint64, error) {
	out := map[string]uint64{}
	err := st.Scan(ctx, 0, func(r Record) error {
		out[r.KeyID]++
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Reencrypt seals again, under ring's current key, every payload of st
// sealed under an older key (and every plaintext payload), in batches of
// 1024 rows through [Store.Rekey], without touching any hash. It needs
// no [Log]: a store whose runtime role may not rewrite rows (pgstore's
// application role) is re-keyed by a separate command connected as the
// migrator role. It is safe to run while a Log appends, and to run
// again after an interruption.
func Reencrypt(ctx context.Context, st Store, ring *keyring.Ring) (int, error) {
	if ring == nil {
		return 0, fmt.Errorf("%w: no Ring configured", ErrInvalidConfig)
	}
	const batchSize = 1024
	total := 0
	var from uint64
	for {
		var batch []Rekeyed
		var next uint64
		var aad [40]byte
		current := ring.Current()
		err := st.Scan(ctx, from, func(r Record) error {
			next = r.Seq + 1
			if r.KeyID == current {
				return nil
			}
			p := r.Payload
			ad := sealAAD(aad[:0], r.Seq, r.Hash)
			if r.KeyID != "" {
				var err error
				p, _, err = ring.Open(nil, r.Payload, ad)
				if err != nil {
					return fmt.Errorf("auditlog: reencrypt row %d: %w", r.Seq, err)
				}
			}
			sealed, err := ring.Seal(nil, p, ad)
			if err != nil {
				return err
			}
			kid, err := keyring.KeyID(sealed)
			if err != nil {
				return err
			}
			batch = append(batch, Rekeyed{Seq: r.Seq, OldKeyID: r.KeyID, KeyID: kid, Payload: sealed})
			if len(batch) == batchSize {
				return errStopScan
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStopScan) {
			return total, err
		}
		if len(batch) > 0 {
			if err := st.Rekey(ctx, batch); err != nil && !errors.Is(err, ErrConflict) {
				return total, err
			}
			total += len(batch)
		}
		if !errors.Is(err, errStopScan) {
			return total, nil
		}
		from = next
	}
}
