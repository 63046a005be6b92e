package idempotency

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// State is the lifecycle state of a [Record].
type State uint8

// Record states. The numeric values are part of the stored encoding.
const (
	// StateInFlight: a holder has claimed the key and is running the
	// operation; the claim is valid until LeaseUntil.
	StateInFlight State = 1
	// StateCompleted: the operation finished and its [Result] is stored
	// for replay.
	StateCompleted State = 2
	// StateNotReplayable: the operation finished but its result was larger
	// than the configured cap. It will not run again; a retry receives
	// [ErrNotReplayable].
	StateNotReplayable State = 3
)

func (s State) String() string {
	switch s {
	case StateInFlight:
		return "in-flight"
	case StateCompleted:
		return "completed"
	case StateNotReplayable:
		return "not-replayable"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Result is what an operation produced and what a replay returns. Status
// follows HTTP semantics for every transport, so a result stored by a
// queue worker replays over HTTP and the other way round: 0 counts as 200,
// and 500–599 means "failed, may be retried" (the claim is released instead
// of stored). Header holds only the allow-listed response headers.
type Result struct {
	Status int
	Header http.Header
	Body   []byte
}

// Record is one idempotency record as a [Store] keeps it. Stores treat it
// as a value: they copy what they keep and callers must not modify the
// Header or Body of a Record a store returned.
type Record struct {
	State State
	// Token is the fencing token: 1 for a first claim, one more than the
	// previous holder's on every takeover. Downstream systems can reject
	// writes carrying a token lower than one they have seen.
	Token uint64
	// Owner identifies the claim; together with Token it is the fence a
	// store checks before it lets a holder extend, complete or release.
	Owner [16]byte
	// Fingerprint is the SHA-256 of the request payload the key was first
	// used with.
	Fingerprint [32]byte
	// CreatedAt is when the current holder claimed the key.
	CreatedAt time.Time
	// LeaseUntil ends an in-flight claim; after it another caller may take
	// the key over. Zero for finished records.
	LeaseUntil time.Time
	// ExpiresAt ends the record's retention: at or after it the key is new
	// again. Stores decide this against the caller's clock (the now they
	// are given), never their own.
	ExpiresAt time.Time
	// Result is the stored outcome (StateCompleted), or the status alone
	// (StateNotReplayable).
	Result Result
}

// Live reports whether r still binds its key at now: a finished record
// until ExpiresAt, an in-flight one until LeaseUntil. A record that is not
// live may be taken over by a new claim.
func (r *Record) Live(now time.Time) bool {
	if !now.Before(r.ExpiresAt) {
		return false
	}
	if r.State == StateInFlight {
		return now.Before(r.LeaseUntil)
	}
	return true
}

// SameClaim reports whether r and o belong to the same claim (state
// in-flight, same token and owner): the fence every store checks.
func (r *Record) SameClaim(o *Record) bool {
	return r.State == StateInFlight && o.State == StateInFlight && r.Token == o.Token && r.Owner == o.Owner
}

// Encoding limits. A decoder rejects anything larger, so a corrupted or
// hostile record cannot make it allocate without bound.
const (
	recordVersion = 1
	// FenceLen is the length of the encoded prefix that identifies a claim
	// (version, state, token, owner). Stores with server-side scripts
	// compare it byte for byte.
	FenceLen       = 1 + 1 + 8 + 16
	fixedLen       = FenceLen + 32 + 8 + 8 + 8 + 2
	maxHeaderCount = 64
	maxHeaderBytes = 16 << 10
	// MaxBodyLen bounds the body a record may carry.
	MaxBodyLen = 64 << 20
)

// ErrCorruptRecord is returned when stored bytes do not decode as a
// record.
var ErrCorruptRecord = errors.New("idempotency: corrupt record")

// Fence returns the encoded claim prefix of r (FenceLen bytes).
func (r *Record) Fence() []byte {
	b := make([]byte, 0, FenceLen)
	b = append(b, recordVersion, byte(r.State))
	b = binary.BigEndian.AppendUint64(b, r.Token)
	return append(b, r.Owner[:]...)
}

// AppendBinary appends the encoding of r to b. The first [FenceLen] bytes
// are [Record.Fence].
func (r *Record) AppendBinary(b []byte) ([]byte, error) {
	if r.State < StateInFlight || r.State > StateNotReplayable {
		return b, fmt.Errorf("idempotency: encode record: invalid state %d", r.State)
	}
	if r.Result.Status < 0 || r.Result.Status > 999 {
		return b, fmt.Errorf("idempotency: encode record: invalid status %d", r.Result.Status)
	}
	if len(r.Result.Body) > MaxBodyLen {
		return b, fmt.Errorf("idempotency: encode record: body of %d bytes over %d", len(r.Result.Body), MaxBodyLen)
	}
	if len(r.Result.Header) > maxHeaderCount {
		return b, fmt.Errorf("idempotency: encode record: %d headers over %d", len(r.Result.Header), maxHeaderCount)
	}
	start := len(b)
	b = append(b, recordVersion, byte(r.State))
	b = binary.BigEndian.AppendUint64(b, r.Token)
	b = append(b, r.Owner[:]...)
	b = append(b, r.Fingerprint[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(unixNano(r.CreatedAt)))
	b = binary.BigEndian.AppendUint64(b, uint64(unixNano(r.LeaseUntil)))
	b = binary.BigEndian.AppendUint64(b, uint64(unixNano(r.ExpiresAt)))
	b = binary.BigEndian.AppendUint16(b, uint16(r.Result.Status))
	hdrStart := len(b)
	b = binary.AppendUvarint(b, uint64(len(r.Result.Header)))
	for name, vals := range r.Result.Header {
		b = binary.AppendUvarint(b, uint64(len(name)))
		b = append(b, name...)
		b = binary.AppendUvarint(b, uint64(len(vals)))
		for _, v := range vals {
			b = binary.AppendUvarint(b, uint64(len(v)))
			b = append(b, v...)
		}
	}
	if len(b)-hdrStart > maxHeaderBytes {
		return b[:start], fmt.Errorf("idempotency: encode record: headers over %d bytes", maxHeaderBytes)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Result.Body)))
	return append(b, r.Result.Body...), nil
}

// MarshalBinary encodes r.
func (r *Record) MarshalBinary() ([]byte, error) {
	return r.AppendBinary(make([]byte, 0, fixedLen+16+len(r.Result.Body)))
}

// UnmarshalBinary decodes b into r. It rejects unknown versions and states,
// trailing bytes, and lengths beyond the encoding limits. The decoded Body
// aliases b.
func (r *Record) UnmarshalBinary(b []byte) error {
	if len(b) < fixedLen || b[0] != recordVersion {
		return ErrCorruptRecord
	}
	st := State(b[1])
	if st < StateInFlight || st > StateNotReplayable {
		return ErrCorruptRecord
	}
	var out Record
	out.State = st
	out.Token = binary.BigEndian.Uint64(b[2:])
	copy(out.Owner[:], b[10:26])
	copy(out.Fingerprint[:], b[26:58])
	out.CreatedAt = fromUnixNano(int64(binary.BigEndian.Uint64(b[58:])))
	out.LeaseUntil = fromUnixNano(int64(binary.BigEndian.Uint64(b[66:])))
	out.ExpiresAt = fromUnixNano(int64(binary.BigEndian.Uint64(b[74:])))
	out.Result.Status = int(binary.BigEndian.Uint16(b[82:]))
	if out.Result.Status > 999 {
		return ErrCorruptRecord
	}
	d := decoder{b: b[fixedLen:]}
	hdrStart := len(d.b)
	n := d.count(maxHeaderCount)
	if n > 0 {
		out.Result.Header = make(http.Header, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		name := string(d.bytes(maxHeaderBytes))
		vn := d.count(maxHeaderCount)
		if d.err != nil {
			break
		}
		if _, dup := out.Result.Header[name]; dup || name == "" {
			return ErrCorruptRecord
		}
		vals := make([]string, vn)
		for j := range vals {
			vals[j] = string(d.bytes(maxHeaderBytes))
		}
		out.Result.Header[name] = vals
	}
	if hdrStart-len(d.b) > maxHeaderBytes {
		return ErrCorruptRecord
	}
	body := d.bytes(MaxBodyLen)
	if d.err != nil || len(d.b) != 0 {
		return ErrCorruptRecord
	}
	if len(body) > 0 {
		out.Result.Body = body
	}
	*r = out
	return nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || (n > 1 && d.b[n-1] == 0) { // overflow, truncation or a non-minimal encoding
		d.err = ErrCorruptRecord
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a count that is at most limit and at most the bytes left
// (every counted item takes at least one byte).
func (d *decoder) count(limit int) int {
	v := d.uvarint()
	if v > uint64(limit) || v > uint64(len(d.b)) {
		d.err = ErrCorruptRecord
		return 0
	}
	return int(v)
}

func (d *decoder) bytes(limit int) []byte {
	v := d.uvarint()
	if d.err != nil {
		return nil
	}
	if v > uint64(limit) || v > uint64(len(d.b)) {
		d.err = ErrCorruptRecord
		return nil
	}
	out := d.b[:v:v]
	d.b = d.b[v:]
	return out
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
