package auditlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Limits on an event's fields. Longer values are refused by [Log.Append]
// and by every decoder, so a hostile export cannot make the verifier
// allocate without bound.
const (
	MaxTypeLen        = 255
	MaxActorLen       = 1024
	MaxCorrelationLen = 255
	MaxPayloadLen     = 1 << 20
)

// Hash is a SHA-256 digest: a leaf hash, a prev_hash or a Merkle root. It
// marshals as lowercase hex.
type Hash [32]byte

// String returns the hash in lowercase hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// MarshalText implements encoding.TextMarshaler.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler; it accepts exactly 64
// hex digits.
func (h *Hash) UnmarshalText(b []byte) error {
	if len(b) != 64 {
		return fmt.Errorf("auditlog: hash must be 64 hex digits, got %d characters", len(b))
	}
	var out Hash
	if _, err := hex.Decode(out[:], b); err != nil {
		return errors.New("auditlog: hash is not hex")
	}
	*h = out
	return nil
}

// Event is one audit event as the application sees it. Seq and Time are
// assigned by the log when the event is appended; values set by the caller
// are ignored.
type Event struct {
	// Seq is the event's position in the log, starting at 0. It is also
	// its leaf index in the Merkle tree.
	Seq uint64
	// Time is when the log committed the event (UTC, nanoseconds).
	Time time.Time
	// Type names the event, for example "ledger.transfer". Required.
	Type string
	// Actor is who caused the event (a subject id).
	Actor string
	// CorrelationID ties the event to the request that caused it (the
	// correlation id its logs carry).
	CorrelationID string
	// Payload is a JSON value. It is compacted before hashing, so
	// insignificant whitespace never changes a hash. Empty means none.
	Payload json.RawMessage
}

// Record is one row as a [Store] keeps it. Payload holds the plaintext
// JSON when KeyID is empty and a keyring record otherwise; the leaf
// hash always covers the plaintext, so re-encryption never changes it.
type Record struct {
	Seq           uint64
	Time          int64 // Unix nanoseconds, UTC
	Type          string
	Actor         string
	CorrelationID string
	Payload       []byte
	KeyID         string
	PrevHash      Hash
	Hash          Hash
}

// Event returns the record as an Event; plaintext must be the opened
// payload (Payload itself when the record is not sealed).
func (r *Record) event(plaintext []byte) Event {
	var p json.RawMessage
	if len(plaintext) > 0 {
		p = json.RawMessage(bytes.Clone(plaintext))
	}
	return Event{
		Seq:           r.Seq,
		Time:          time.Unix(0, r.Time).UTC(),
		Type:          r.Type,
		Actor:         r.Actor,
		CorrelationID: r.CorrelationID,
		Payload:       p,
	}
}

const encodingVersion = 1

// appendLeafData appends the RFC 6962 leaf input (the 0x00 leaf prefix
// followed by the canonical encoding) of r with the given plaintext
// payload:
//
//	0x00 | version(1)=1 | seq(8) | time(8) | prev_hash(32) |
//	len(type)(2) type | len(actor)(2) actor | len(correlation)(2) correlation |
//	len(payload)(4) payload
//
// Integers are big-endian. Every field is length-prefixed, so two
// different events never share an encoding.
func appendLeafData(dst []byte, r *Record, plaintext []byte) []byte {
	dst = append(dst, 0x00, encodingVersion)
	dst = binary.BigEndian.AppendUint64(dst, r.Seq)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Time))
	dst = append(dst, r.PrevHash[:]...)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(r.Type)))
	dst = append(dst, r.Type...)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(r.Actor)))
	dst = append(dst, r.Actor...)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(r.CorrelationID)))
	dst = append(dst, r.CorrelationID...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(plaintext)))
	return append(dst, plaintext...)
}

// LeafHash returns the RFC 6962 leaf hash of r with the given plaintext
// payload: SHA-256(0x00 || canonical encoding). It is the value stored in
// Hash, chained through the next row's PrevHash, and the Merkle leaf.
func LeafHash(r *Record, plaintext []byte) Hash {
	var buf [512]byte
	return sha256.Sum256(appendLeafData(buf[:0], r, plaintext))
}

// checkFields reports whether r's fields are within the limits.
func checkFields(typ, actor, corr string, payload []byte) error {
	switch {
	case typ == "":
		return fmt.Errorf("%w: empty type", ErrInvalidEvent)
	case len(typ) > MaxTypeLen:
		return fmt.Errorf("%w: type longer than %d bytes", ErrInvalidEvent, MaxTypeLen)
	case len(actor) > MaxActorLen:
		return fmt.Errorf("%w: actor longer than %d bytes", ErrInvalidEvent, MaxActorLen)
	case len(corr) > MaxCorrelationLen:
		return fmt.Errorf("%w: correlation id longer than %d bytes", ErrInvalidEvent, MaxCorrelationLen)
	case len(payload) > MaxPayloadLen:
		return fmt.Errorf("%w: payload longer than %d bytes", ErrInvalidEvent, MaxPayloadLen)
	}
	return nil
}

// canonicalPayload validates and compacts a JSON payload.
func canonicalPayload(p json.RawMessage) ([]byte, error) {
	if len(p) == 0 {
		return nil, nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, p); err != nil {
		return nil, fmt.Errorf("%w: payload is not JSON", ErrInvalidEvent)
	}
	return b.Bytes(), nil
}

// sealAAD is the additional authenticated data of a sealed payload: the
// row's sequence number and leaf hash, so a sealed payload moved to
// another row fails to open.
func sealAAD(dst []byte, seq uint64, h Hash) []byte {
	dst = binary.BigEndian.AppendUint64(dst, seq)
	return append(dst, h[:]...)
}

func leafHashOf(data []byte) Hash { return sha256.Sum256(data) }
