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
// plaintext log. It returns the head it verified. A row that fails a check
// stops the replay with an error wrapping ErrTampered; an error from fold
// stops it and is returned as is.
//
// Replay proves the chain is internally consistent, not that nobody
// rewrote it wholesale: compare its head with a signed checkpoint (or run
// [Verify]) for that.
func Replay(ctx context.Context, src Store, ring *keyring.Ring, fold func(Event) error) (Head, error) {
	var (
		head  Head
		buf   []byte
		plain []byte
		aad   [40]byte
	)
	err := src.Scan(ctx, 0, func(r Record) error {
		if r.Seq != head.Size {
			return fmt.Errorf("%w: row %d found where row %d belongs", ErrTampered, r.Seq, head.Size)
		}
		if r.PrevHash != head.Last {
			return fmt.Errorf("%w: row %d does not link to row %d", ErrTampered, r.Seq, r.Seq-1)
		}
		p := r.Payload
		if r.KeyID != "" {
			if ring == nil {
				return fmt.Errorf("auditlog: row %d is sealed and no key ring was given", r.Seq)
			}
			var err error
			plain, _, err = ring.Open(plain[:0], r.Payload, sealAAD(aad[:0], r.Seq, r.Hash))
			if err != nil {
				if errors.Is(err, keyring.ErrUnknownKey) {
					return fmt.Errorf("auditlog: row %d: %w", r.Seq, err)
				}
				return fmt.Errorf("%w: row %d payload does not open", ErrTampered, r.Seq)
			}
			p = plain
		}
		if err := checkFields(r.Type, r.Actor, r.CorrelationID, p); err != nil {
			return fmt.Errorf("%w: row %d: %v", ErrTampered, r.Seq, err)
		}
		buf = appendLeafData(buf[:0], &r, p)
		if leafHashOf(buf) != r.Hash {
			return fmt.Errorf("%w: row %d was modified", ErrTampered, r.Seq)
		}
		head = Head{Size: r.Seq + 1, Last: r.Hash}
		if fold != nil {
			return fold(r.event(p))
		}
		return nil
	})
	return head, err
}

// Replay replays the log's own store with its key ring; see [Replay].
func (l *Log) Replay(ctx context.Context, fold func(Event) error) (Head, error) {
	return Replay(ctx, l.cfg.Store, l.cfg.Ring, fold)
}

var errStopScan = errors.New("stop scan")

// Reencrypt seals again, under the ring's current key, every payload
// sealed under an older key (and every plaintext payload), in batches,
// without touching any hash. Run it in a goroutine after a rotation; it
// returns the number of rows re-encrypted. It is safe to run while
// appending, and to run again after an interruption.
func (l *Log) Reencrypt(ctx context.Context) (int, error) {
	ring := l.cfg.Ring
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
		err := l.cfg.Store.Scan(ctx, from, func(r Record) error {
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
			if err := l.cfg.Store.Rekey(ctx, batch); err != nil && !errors.Is(err, ErrConflict) {
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
