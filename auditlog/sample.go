package auditlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// SampleConfig configures [Log.Sample].
type SampleConfig struct {
	// N is how many of the most recent checkpointed rows to take; default
	// 20.
	N int
	// Redact lists fields to remove: "actor", "correlation_id", "payload",
	// or "payload.<key>" for a top-level key of a JSON object payload.
	Redact []string
}

// SampleRow is one row of a sanitised sample.
type SampleRow struct {
	Seq           uint64          `json:"seq"`
	Time          int64           `json:"time"`
	Type          string          `json:"type"`
	Actor         string          `json:"actor,omitempty"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	Payload       json.RawMessage `json:"payload,omitempty"`
	PrevHash      Hash            `json:"prev_hash"`
	Hash          Hash            `json:"hash"`
	// Redacted names the fields removed from this row.
	Redacted []string `json:"redacted,omitempty"`
	// Proof is the inclusion proof of Hash at Seq in the checkpoint's tree.
	Proof [][]byte `json:"proof"`
}

// Sample is a sanitised audit sample for an evidence pass: recent rows,
// chosen fields redacted, each with an inclusion proof to a signed
// checkpoint.
type Sample struct {
	Checkpoint string      `json:"checkpoint"`
	Rows       []SampleRow `json:"rows"`
}

var sampleFields = []string{"actor", "correlation_id", "payload"}

// Sample returns the N most recent rows covered by the newest checkpoint
// (issuing one if none exists yet), with the configured fields redacted
// and inclusion proofs.
func (l *Log) Sample(ctx context.Context, cfg SampleConfig) (*Sample, error) {
	if cfg.N < 0 {
		return nil, fmt.Errorf("%w: negative N", ErrInvalidConfig)
	}
	if cfg.N == 0 {
		cfg.N = 20
	}
	for _, f := range cfg.Redact {
		if !slices.Contains(sampleFields, f) && (!strings.HasPrefix(f, "payload.") || len(f) == len("payload.")) {
			return nil, fmt.Errorf("%w: cannot redact %q", ErrInvalidConfig, f)
		}
	}
	cp := l.LatestCheckpoint()
	if cp.Note == nil {
		var err error
		if cp, err = l.Checkpoint(ctx); err != nil {
			return nil, err
		}
	}
	from := uint64(0)
	if cp.Size > uint64(cfg.N) {
		from = cp.Size - uint64(cfg.N)
	}
	s := &Sample{Checkpoint: string(cp.Note)}
	var aad [40]byte
	err := l.cfg.Store.Scan(ctx, from, func(r Record) error {
		if r.Seq >= cp.Size {
			return errStopScan
		}
		p := r.Payload
		if r.KeyID != "" {
			var err error
			if p, _, err = l.cfg.Ring.Open(nil, r.Payload, sealAAD(aad[:0], r.Seq, r.Hash)); err != nil {
				return fmt.Errorf("auditlog: sample row %d: %w", r.Seq, err)
			}
		}
		row := SampleRow{Seq: r.Seq, Time: r.Time, Type: r.Type, Actor: r.Actor, CorrelationID: r.CorrelationID,
			Payload: bytes.Clone(p), PrevHash: r.PrevHash, Hash: r.Hash}
		if err := row.redact(cfg.Redact); err != nil {
			return err
		}
		proof, err := l.InclusionProof(r.Seq, cp.Size)
		if err != nil {
			return err
		}
		row.Proof = proof
		s.Rows = append(s.Rows, row)
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return nil, err
	}
	return s, nil
}

func (r *SampleRow) redact(fields []string) error {
	for _, f := range fields {
		switch {
		case f == "actor" && r.Actor != "":
			r.Actor = ""
		case f == "correlation_id" && r.CorrelationID != "":
			r.CorrelationID = ""
		case f == "payload" && r.Payload != nil:
			r.Payload = nil
		case strings.HasPrefix(f, "payload.") && r.Payload != nil:
			var obj map[string]json.RawMessage
			if json.Unmarshal(r.Payload, &obj) != nil {
				continue // not an object: nothing of that name
			}
			key := strings.TrimPrefix(f, "payload.")
			if _, ok := obj[key]; !ok {
				continue
			}
			delete(obj, key)
			b, err := json.Marshal(obj)
			if err != nil {
				return err
			}
			r.Payload = b
		default:
			continue
		}
		r.Redacted = append(r.Redacted, f)
	}
	return nil
}

// VerifySample checks a sample: the checkpoint's signature and origin, every
// row's inclusion proof, and for rows with nothing redacted that the
// fields shown hash to the row's leaf hash. For redacted rows only the
// inclusion of the leaf hash is proven; the fields still shown are not
// (the leaf hash covers the fields removed too).
func VerifySample(s *Sample, origin string, verifiers []note.Verifier) error {
	cp, _, err := OpenCheckpoint([]byte(s.Checkpoint), origin, note.VerifierList(verifiers...))
	if err != nil {
		return err
	}
	for i := range s.Rows {
		r := &s.Rows[i]
		if r.Seq >= cp.Size {
			return fmt.Errorf("%w: sample row %d is past the checkpoint (size %d)", ErrProof, r.Seq, cp.Size)
		}
		if err := VerifyInclusion(r.Seq, cp.Size, r.Hash, r.Proof, cp.Root); err != nil {
			return fmt.Errorf("sample row %d: %w", r.Seq, err)
		}
		if len(r.Redacted) == 0 {
			rec := Record{Seq: r.Seq, Time: r.Time, Type: r.Type, Actor: r.Actor, CorrelationID: r.CorrelationID, PrevHash: r.PrevHash}
			if LeafHash(&rec, r.Payload) != r.Hash {
				return fmt.Errorf("%w: sample row %d does not hash to its leaf hash", ErrProof, r.Seq)
			}
		}
	}
	return nil
}
