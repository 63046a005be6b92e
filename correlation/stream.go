package correlation

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/malai-sec/malai/keyring"
)

// KeyRing is the AES-256-GCM key ring that seals log records: one current
// key seals, every key in the ring opens, and each record names its key,
// so records sealed before a rotation stay readable. Build one with
// [NewKeyRing]; rotate with its Rotate method. It is safe for concurrent
// use.
type KeyRing = keyring.Ring

// Key is a 256-bit data key. It redacts itself in logs and fmt output.
type Key = keyring.Key

// NewKeyRing returns a ring whose current key is keys[current]. Key ids
// are 1-255 bytes; an all-zero key is refused.
func NewKeyRing(current string, keys map[string]Key) (*KeyRing, error) {
	return keyring.NewRing(current, keys)
}

// NewKey returns a random data key.
func NewKey() (Key, error) { return keyring.NewKey() }

// MaxRecordSize is the largest log record (one Write) an
// [EncryptedWriter] accepts, in bytes.
const MaxRecordSize = 1 << 20

// Errors of the encrypted log stream. Reader errors arrive wrapped in a
// [*StreamError] that says where; test them with errors.Is.
var (
	// ErrTruncated: the stream stops inside a frame, or ends (or a new
	// stream begins) without the authenticated end record that Close
	// writes. A live stream whose writer is still running reads as
	// truncated at its current end; everything before is verified.
	ErrTruncated = errors.New("correlation: log stream truncated")
	// ErrTampered: a record fails authentication at its position. It was
	// altered, moved from elsewhere, or a record before it was removed.
	ErrTampered = errors.New("correlation: log record altered, reordered or removed")
	// ErrUnknownKey: a record names a key the ring does not hold.
	ErrUnknownKey = errors.New("correlation: log record sealed under an unknown key")
	// ErrMalformedStream: the bytes are not an encrypted log stream.
	ErrMalformedStream = errors.New("correlation: malformed log stream")
	// ErrRecordTooLarge: a Write larger than MaxRecordSize.
	ErrRecordTooLarge = errors.New("correlation: log record too large")
	// ErrWriterClosed: a Write after Close.
	ErrWriterClosed = errors.New("correlation: encrypted log writer closed")
)

// StreamError locates a problem in an encrypted log stream.
type StreamError struct {
	Offset int64  // byte offset of the frame where the problem was found
	Index  uint64 // record index within its stream (0 is the first record)
	Err    error  // ErrTruncated, ErrTampered, ErrUnknownKey or ErrMalformedStream
}

func (e *StreamError) Error() string {
	return fmt.Sprintf("%v: record %d at byte offset %d", e.Err, e.Index, e.Offset)
}

func (e *StreamError) Unwrap() error { return e.Err }

// Stream framing. Every frame is kind(1) | length(4, big endian) | body.
// A stream is a header frame, record frames and an end frame:
//
//	H: magic(12) | stream id(16)              (plaintext)
//	R: seal record of one log line
//	E: seal record of nothing                 (written by Close)
//
// Each R and E record is sealed with the additional data
//
//	magic | stream id | kind | index(8, big endian) | previous record's GCM tag(16)
//
// so a record only opens at its own position in its own stream, after the
// exact record that preceded it: alteration, reordering, removal and
// splicing from another stream all fail authentication at the first
// displaced record, and a missing E reveals a cut tail. Streams may be
// concatenated (a restarted writer appending to the same file).
const (
	kindHeader = 'H'
	kindRecord = 'R'
	kindEnd    = 'E'

	frameHeaderSize = 5
	streamIDSize    = 16
	tagSize         = 16
	headerBodySize  = len(streamMagic) + streamIDSize
	maxFrameBody    = MaxRecordSize + 2 + 255 + 12 + tagSize // keyring.Overhead(255)
	aadSize         = len(streamMagic) + streamIDSize + 1 + 8 + tagSize
)

const streamMagic = "malai-log-v1"

type chain struct {
	id    [streamIDSize]byte
	index uint64
	prev  [tagSize]byte
}

func (c *chain) aad(dst *[aadSize]byte, kind byte) []byte {
	b := dst[:0]
	b = append(b, streamMagic...)
	b = append(b, c.id[:]...)
	b = append(b, kind)
	b = binary.BigEndian.AppendUint64(b, c.index)
	return append(b, c.prev[:]...)
}

// advance moves the chain past a record whose sealed bytes are rec.
func (c *chain) advance(rec []byte) {
	copy(c.prev[:], rec[len(rec)-tagSize:])
	c.index++
}

// EncryptedWriter is an io.Writer that seals each Write as one record of
// an encrypted log stream, so that no plaintext reaches the underlying
// writer. Give it to slog.NewJSONHandler, which writes one line per call.
// Close writes the end record that lets a reader tell a complete stream
// from a cut one.
//
// After the underlying writer fails, every later Write fails too: the
// chain position of the failed frame is unknown. An EncryptedWriter is
// safe for concurrent use; records keep the order in which Writes acquire
// it. Build one with [NewEncryptedWriter]; the zero value is unusable.
type EncryptedWriter struct {
	mu     sync.Mutex
	w      io.Writer
	ring   *KeyRing
	ch     chain
	buf    []byte
	err    error
	closed bool
}

// NewEncryptedWriter starts a new stream on w (writing its header) that
// seals records under ring's current key at the time of each Write.
func NewEncryptedWriter(w io.Writer, ring *KeyRing) (*EncryptedWriter, error) {
	if w == nil || ring == nil {
		return nil, fmt.Errorf("%w: NewEncryptedWriter needs a writer and a key ring", ErrConfig)
	}
	e := &EncryptedWriter{w: w, ring: ring}
	if _, err := rand.Read(e.ch.id[:]); err != nil {
		return nil, fmt.Errorf("correlation: stream id: %w", err)
	}
	hdr := make([]byte, 0, frameHeaderSize+headerBodySize)
	hdr = append(hdr, kindHeader)
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(headerBodySize))
	hdr = append(hdr, streamMagic...)
	hdr = append(hdr, e.ch.id[:]...)
	if _, err := w.Write(hdr); err != nil {
		return nil, fmt.Errorf("correlation: writing stream header: %w", err)
	}
	return e, nil
}

// Write seals p as one record. It returns len(p) on success.
func (e *EncryptedWriter) Write(p []byte) (int, error) {
	if len(p) > MaxRecordSize {
		return 0, ErrRecordTooLarge
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.writeFrame(kindRecord, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close writes the stream's end record. It does not close the underlying
// writer. Later Writes fail with ErrWriterClosed; Close is idempotent.
func (e *EncryptedWriter) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return e.err
	}
	err := e.writeFrame(kindEnd, nil)
	e.closed = true
	return err
}

// writeFrame seals and writes one frame. e.mu held.
func (e *EncryptedWriter) writeFrame(kind byte, p []byte) error {
	if e.closed {
		return ErrWriterClosed
	}
	if e.err != nil {
		return e.err
	}
	var aadBuf [aadSize]byte
	aad := e.ch.aad(&aadBuf, kind)
	buf := append(e.buf[:0], kind, 0, 0, 0, 0)
	buf, err := e.ring.Seal(buf, p, aad)
	if err != nil {
		return err // nothing written; the stream stays consistent
	}
	binary.BigEndian.PutUint32(buf[1:frameHeaderSize], uint32(len(buf)-frameHeaderSize))
	e.buf = buf
	if cap(e.buf) > 64<<10 {
		e.buf = nil // do not pin a large buffer after one large record
	}
	n, err := e.w.Write(buf)
	if err == nil && n < len(buf) {
		err = io.ErrShortWrite
	}
	if err != nil {
		e.err = fmt.Errorf("correlation: encrypted log stream broken: %w", err)
		return e.err
	}
	e.ch.advance(buf)
	return nil
}

// Record is one verified log record.
type Record struct {
	Offset int64  // byte offset of its frame in the input
	Index  uint64 // position within its stream, from 0
	KeyID  string // id of the key that sealed it
	Data   []byte // the plaintext log line
}

// EncryptedReader decrypts and verifies a stream written by
// [EncryptedWriter]. It is not safe for concurrent use. Build one with
// [NewEncryptedReader]; the zero value is unusable.
type EncryptedReader struct {
	r          *bufio.Reader
	ring       *KeyRing
	off        int64
	ch         chain
	in         bool   // inside a stream (its header seen, its end not yet)
	streams    int    // streams begun
	pending    []byte // a header body met where a record was expected
	pendingOff int64
	seen       map[[streamIDSize]byte]struct{} // stream ids met so far
	err        error
	buf        []byte
}

// NewEncryptedReader reads the stream in r, opening records with ring.
func NewEncryptedReader(r io.Reader, ring *KeyRing) *EncryptedReader {
	return &EncryptedReader{r: bufio.NewReader(r), ring: ring}
}

// Next returns the next verified record. It returns io.EOF after the end
// record of the last stream, and otherwise an error wrapped in a
// [*StreamError] that locates the first problem. Errors are final, with
// one exception: when a stream without its end record is followed by a new
// stream (a writer that crashed, then a new one appending), Next reports
// ErrTruncated once and then continues with the new stream.
func (d *EncryptedReader) Next() (Record, error) {
	if d.err != nil {
		return Record{}, d.err
	}
	if d.ring == nil {
		d.err = fmt.Errorf("%w: EncryptedReader needs a key ring", ErrConfig)
		return Record{}, d.err
	}
	for {
		if d.pending != nil {
			body, at := d.pending, d.pendingOff
			d.pending = nil
			if !d.startStream(body) {
				return Record{}, d.fail(at, ErrTampered)
			}
			continue
		}
		start := d.off
		kind, body, err := d.readFrame()
		if err == io.EOF {
			if !d.in && d.streams > 0 {
				d.err = io.EOF
				return Record{}, io.EOF
			}
			return Record{}, d.fail(start, ErrTruncated)
		}
		if err != nil {
			return Record{}, d.fail(start, err)
		}
		if !d.in {
			if kind != kindHeader || len(body) != headerBodySize || string(body[:len(streamMagic)]) != streamMagic {
				return Record{}, d.fail(start, ErrMalformedStream)
			}
			if !d.startStream(body) {
				return Record{}, d.fail(start, ErrTampered)
			}
			continue
		}
		switch kind {
		case kindHeader:
			if len(body) != headerBodySize || string(body[:len(streamMagic)]) != streamMagic {
				return Record{}, d.fail(start, ErrMalformedStream)
			}
			d.pending, d.pendingOff = append([]byte(nil), body...), start
			return Record{}, &StreamError{Offset: start, Index: d.ch.index, Err: ErrTruncated}
		case kindRecord, kindEnd:
		default:
			return Record{}, d.fail(start, ErrMalformedStream)
		}
		var aadBuf [aadSize]byte
		pt, keyID, err := d.ring.Open(nil, body, d.ch.aad(&aadBuf, kind))
		switch {
		case errors.Is(err, keyring.ErrUnknownKey):
			return Record{}, d.fail(start, ErrUnknownKey)
		case errors.Is(err, keyring.ErrMalformed):
			return Record{}, d.fail(start, ErrMalformedStream)
		case err != nil:
			return Record{}, d.fail(start, ErrTampered)
		}
		idx := d.ch.index
		d.ch.advance(body)
		if kind == kindEnd {
			if len(pt) != 0 {
				return Record{}, d.fail(start, ErrMalformedStream)
			}
			d.in = false
			continue
		}
		return Record{Offset: start, Index: idx, KeyID: keyID, Data: pt}, nil
	}
}

// startStream begins the stream whose header body is body. It reports
// false for a stream id already seen in this input: a whole stream
// appended a second time.
func (d *EncryptedReader) startStream(body []byte) bool {
	d.ch = chain{}
	copy(d.ch.id[:], body[len(streamMagic):])
	if d.seen == nil {
		d.seen = make(map[[streamIDSize]byte]struct{})
	}
	if _, dup := d.seen[d.ch.id]; dup {
		return false
	}
	d.seen[d.ch.id] = struct{}{}
	d.in = true
	d.streams++
	return true
}

func (d *EncryptedReader) fail(off int64, err error) error {
	d.err = &StreamError{Offset: off, Index: d.ch.index, Err: err}
	return d.err
}

// readFrame reads one frame. It returns io.EOF only at a frame boundary,
// ErrTruncated for a partial frame, ErrMalformedStream for a bad length,
// and read errors of the underlying reader wrapped.
func (d *EncryptedReader) readFrame() (byte, []byte, error) {
	var hdr [frameHeaderSize]byte
	n, err := io.ReadFull(d.r, hdr[:])
	d.off += int64(n)
	if err == io.EOF {
		return 0, nil, io.EOF
	}
	if err != nil {
		return 0, nil, readErr(err)
	}
	size := binary.BigEndian.Uint32(hdr[1:])
	if size > maxFrameBody {
		return 0, nil, ErrMalformedStream
	}
	if int(size) <= cap(d.buf) {
		body := d.buf[:size]
		n, err = io.ReadFull(d.r, body)
		d.off += int64(n)
		if err != nil {
			return 0, nil, readErr(err)
		}
		return hdr[0], body, nil
	}
	// Grow with the bytes that actually arrive, so a forged length in a
	// short input cannot make the reader allocate a megabyte.
	b := bytes.NewBuffer(d.buf[:0])
	m, err := io.CopyN(b, d.r, int64(size))
	d.off += m
	if err != nil {
		return 0, nil, readErr(err)
	}
	d.buf = b.Bytes()
	return hdr[0], d.buf, nil
}

func readErr(err error) error {
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return ErrTruncated
	}
	return fmt.Errorf("correlation: reading log stream: %w", err)
}
