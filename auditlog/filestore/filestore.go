package filestore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/malai-sec/malai/auditlog"
)

// File names inside the store's directory.
const (
	LogFile  = "audit.log"
	LockFile = "LOCK"
)

// Store is an append-only file store. The zero value is not usable; call
// Open or OpenReadOnly. It is safe for concurrent use; one process at a
// time may hold a directory open for writing (an exclusive lock on
// dir/LOCK).
type Store struct {
	dir      string
	lock     *os.File
	readOnly bool

	mu     sync.RWMutex
	f      *os.File
	size   int64   // bytes of valid frames
	offs   []int64 // offset of each row frame, by position
	head   auditlog.Head
	cps    [][]byte
	closed bool
	broken error // set when a failed write could not be rolled back

	damage     []auditlog.Damage // read-only: stretches holding no valid frame
	skipped    map[int64]int64   // read-only: damaged start offset -> end
	resyncLeft int64             // load: checksum budget left for resync
	resyncBuf  []byte

	recovered int64
	tornPath  string
}

var (
	_ auditlog.Store              = (*Store)(nil)
	_ auditlog.LatestCheckpointer = (*Store)(nil)
	_ auditlog.Damaged            = (*Store)(nil)
)

// Errors of Open and of a read-only store.
var (
	// ErrCorrupt is wrapped by the *CorruptError Open returns for a file
	// holding a frame that is neither valid nor an incomplete final frame.
	ErrCorrupt = errors.New("filestore: log file is corrupt")
	// ErrReadOnly is returned by the write methods of a store opened with
	// OpenReadOnly.
	ErrReadOnly = errors.New("filestore: store is open read-only")
)

// CorruptError locates the first bad frame of a log file. Open leaves
// the file exactly as it found it.
type CorruptError struct {
	Path   string
	Offset int64 // byte offset of the bad frame
	Rows   int   // valid rows before it
	Detail string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("filestore: %s: corrupt frame at byte %d, after %d valid rows (%s); the file is left as it is: "+
		"locate the damage with an offline verification (OpenReadOnly, auditlog.Verify) and restore the file from a backup",
		e.Path, e.Offset, e.Rows, e.Detail)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// Open opens (creating if needed) the store in dir for reading and
// appending.
//
// A crash can only cut the last append short, so only an incomplete final
// frame (one that runs past the end of the file, with no valid frame
// after its start) is taken for a torn tail: it is removed, and the bytes
// are kept in a side file named by TornFile and counted by Recovered.
// Anything else that is not a valid frame (a checksum mismatch, a frame
// followed by valid data, a malformed row) is corruption: Open returns a
// *CorruptError wrapping ErrCorrupt and changes nothing.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("filestore: %w", err)
	}
	lock, err := lockDir(filepath.Join(dir, LockFile))
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, lock: lock}
	if err := s.load(); err != nil {
		if s.f != nil {
			s.f.Close()
		}
		unlockDir(lock)
		return nil, err
	}
	return s, nil
}

// OpenReadOnly opens an existing store without writing anything: no file
// or directory is created, a torn tail is not cut, and damage does not
// stop it. Each stretch of the file that holds no valid frame is skipped
// and reported by Damage (and so by auditlog.LoadExport and
// auditlog.Verify, which locate it); rows after it are read. It takes a
// shared lock, so it fails with ErrLocked while a process has the store
// open with Open. The write methods return ErrReadOnly.
func OpenReadOnly(dir string) (*Store, error) {
	path := filepath.Join(dir, LogFile)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("filestore: %w", err)
	}
	lock, err := lockDirShared(filepath.Join(dir, LockFile))
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, lock: lock, readOnly: true}
	if err := s.load(); err != nil {
		if s.f != nil {
			s.f.Close()
		}
		unlockDir(lock)
		return nil, err
	}
	return s, nil
}

func (s *Store) load() error {
	path := filepath.Join(s.dir, LogFile)
	var f *os.File
	var err error
	if s.readOnly {
		f, err = os.Open(path)
	} else {
		_, statErr := os.Stat(path)
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err == nil && os.IsNotExist(statErr) {
			// make the new file's directory entry durable before any append
			if err := syncDir(s.dir); err != nil {
				f.Close()
				return err
			}
		}
	}
	if err != nil {
		return fmt.Errorf("filestore: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("filestore: %w", err)
	}
	end := st.Size()
	s.f, s.offs, s.cps, s.head, s.size = f, nil, nil, auditlog.Head{}, 0
	s.damage, s.skipped = nil, nil
	s.resyncLeft, s.resyncBuf = resyncBudget, nil
	defer func() { s.resyncBuf = nil }()
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, end), 1<<20)
	var buf []byte
	var off int64
	for off < end {
		hdr, _ := r.Peek(frameHeader)
		n := frameHeader + frameTrailer
		if len(hdr) == frameHeader {
			n += int(min(uint32(maxBody+1), binary.BigEndian.Uint32(hdr[1:])))
		}
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		m, _ := io.ReadFull(r, buf)
		kind, body, fn, derr := decodeFrame(buf[:m])
		var rec auditlog.Record
		if derr == nil && kind == kindRow {
			rec, derr = decodeRow(body)
		}
		if derr != nil {
			next, torn, err := s.classify(off, end, derr)
			if err != nil {
				return err
			}
			switch {
			case torn && !s.readOnly:
				return s.cutTail(off, end)
			case torn:
				s.damage = append(s.damage, auditlog.Damage{Position: len(s.offs), Offset: off, Length: end - off, Torn: true,
					Detail: "incomplete final frame"})
			case !s.readOnly:
				return &CorruptError{Path: path, Offset: off, Rows: len(s.offs), Detail: damageDetail(derr)}
			default:
				if s.skipped == nil {
					s.skipped = map[int64]int64{}
				}
				s.skipped[off] = next
				s.damage = append(s.damage, auditlog.Damage{Position: len(s.offs), Offset: off, Length: next - off,
					Detail: damageDetail(derr)})
			}
			if next >= end {
				break
			}
			if _, err := f.Seek(next, io.SeekStart); err != nil {
				return fmt.Errorf("filestore: %w", err)
			}
			r.Reset(io.NewSectionReader(f, next, end-next))
			off = next
			continue
		}
		switch kind {
		case kindRow:
			s.offs = append(s.offs, off)
			s.head = auditlog.Head{Size: uint64(len(s.offs)), Last: rec.Hash}
		case kindCheckpoint:
			s.cps = append(s.cps, bytes.Clone(body))
		}
		off += int64(fn)
		s.size = off
	}
	if s.readOnly {
		return nil
	}
	_, err = f.Seek(s.size, io.SeekStart)
	return err
}

func damageDetail(err error) string {
	if errors.Is(err, errShort) {
		return "a frame runs past the end of the file and valid frames follow its start"
	}
	return "checksum mismatch or malformed frame"
}

// resyncBudget bounds the bytes one load checksums while looking for
// valid frames after damage, so a hostile file cannot make opening it
// quadratic; past it the rest of the file counts as damaged.
const resyncBudget = 256 << 20

// classify decides what the bad frame at off is. It returns the offset
// of the next valid frame after off (end when there is none) and whether
// the bad frame is a torn tail: an incomplete final frame with no valid
// frame after its start. Open (read-write) only needs the answer for an
// incomplete frame; any other bad frame is corruption whatever follows.
func (s *Store) classify(off, end int64, derr error) (next int64, torn bool, err error) {
	short := errors.Is(derr, errShort)
	if !short && !s.readOnly {
		return end, false, nil
	}
	next, err = s.resync(off, end)
	if err != nil {
		return 0, false, err
	}
	return next, short && next >= end, nil
}

// resync returns the offset of the first valid frame (a row that
// decodes, or a checkpoint) starting after off, or end when there is
// none (or the search budget ran out before one was found).
func (s *Store) resync(off, end int64) (int64, error) {
	const window = 1 << 20
	if s.resyncBuf == nil {
		s.resyncBuf = make([]byte, min(window, end-off)+frameHeader)
	}
	buf := s.resyncBuf
	var frame []byte
	for base := off + 1; base+frameHeader+frameTrailer <= end; base += int64(len(buf) - frameHeader) {
		n, err := s.f.ReadAt(buf[:min(int64(len(buf)), end-base)], base)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("filestore: read: %w", err)
		}
		for i := 0; i < min(n, len(buf)-frameHeader); i++ {
			if buf[i] != kindRow && buf[i] != kindCheckpoint || i+frameHeader > n {
				continue
			}
			size := int64(binary.BigEndian.Uint32(buf[i+1:]))
			p := base + int64(i)
			total := frameHeader + size + frameTrailer
			if size > maxBody || p+total > end {
				continue
			}
			if s.resyncLeft -= total; s.resyncLeft < 0 {
				return end, nil
			}
			var b []byte
			if int64(i)+total <= int64(n) {
				b = buf[i : int64(i)+total]
			} else {
				if int64(cap(frame)) < total {
					frame = make([]byte, total)
				}
				b = frame[:total]
				if _, err := s.f.ReadAt(b, p); err != nil {
					return 0, fmt.Errorf("filestore: read: %w", err)
				}
			}
			kind, body, _, derr := decodeFrame(b)
			if derr == nil && kind == kindRow {
				_, derr = decodeRow(body)
			}
			if derr == nil {
				return p, nil
			}
		}
	}
	return end, nil
}

// cutTail moves the bytes from off to the end of the file into a side
// file and truncates the log there.
func (s *Store) cutTail(off, end int64) error {
	// A new, uniquely named file each time: a later cut never overwrites
	// the bytes an earlier one kept.
	tf, err := os.CreateTemp(s.dir, LogFile+".torn."+strconv.FormatInt(off, 10)+".*")
	if err != nil {
		return fmt.Errorf("filestore: keep torn tail: %w", err)
	}
	torn := tf.Name()
	if _, err := io.Copy(tf, io.NewSectionReader(s.f, off, end-off)); err != nil {
		tf.Close()
		return fmt.Errorf("filestore: keep torn tail: %w", err)
	}
	if err := tf.Sync(); err != nil {
		tf.Close()
		return fmt.Errorf("filestore: keep torn tail: %w", err)
	}
	tf.Close()
	if err := s.f.Truncate(off); err != nil {
		return fmt.Errorf("filestore: cut torn tail: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("filestore: cut torn tail: %w", err)
	}
	s.recovered, s.tornPath = end-off, torn
	s.size = off
	_, err = s.f.Seek(off, io.SeekStart)
	return err
}

// Damage implements auditlog.Damaged: the stretches of the file a
// read-only store skipped because they held no valid frame (always empty
// for a store opened with Open, which refuses such a file).
func (s *Store) Damage() []auditlog.Damage {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]auditlog.Damage(nil), s.damage...)
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// Recovered returns the number of bytes cut from the end of the file at
// Open because they did not form complete, valid frames (an append that
// never returned).
func (s *Store) Recovered() int64 { return s.recovered }

// TornFile returns the path of the side file holding the bytes cut at
// Open, or "".
func (s *Store) TornFile() string { return s.tornPath }

func (s *Store) usable() error {
	if s.closed {
		return auditlog.ErrClosed
	}
	return s.broken
}

func (s *Store) writable() error {
	if err := s.usable(); err != nil {
		return err
	}
	if s.readOnly {
		return ErrReadOnly
	}
	return nil
}

// write appends buf and fsyncs; on failure it truncates back.
func (s *Store) write(buf []byte) error {
	if _, err := s.f.Write(buf); err != nil {
		s.rollback()
		return fmt.Errorf("filestore: write: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		// After a failed fsync the page cache state is unknown: stop.
		s.broken = fmt.Errorf("filestore: fsync failed, reopen the store: %w", err)
		return s.broken
	}
	return nil
}

func (s *Store) rollback() {
	if err := s.f.Truncate(s.size); err != nil {
		s.broken = fmt.Errorf("filestore: could not roll back a failed write, reopen the store: %w", err)
		return
	}
	if _, err := s.f.Seek(s.size, io.SeekStart); err != nil {
		s.broken = fmt.Errorf("filestore: could not roll back a failed write, reopen the store: %w", err)
	}
}

// Append implements auditlog.Store: one write and one fsync for the batch.
func (s *Store) Append(ctx context.Context, recs []auditlog.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	if recs[0].Seq != s.head.Size || recs[0].PrevHash != s.head.Last {
		return fmt.Errorf("filestore: batch starts at %d, store holds %d: %w", recs[0].Seq, s.head.Size, auditlog.ErrConflict)
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].Seq != recs[i-1].Seq+1 || recs[i].PrevHash != recs[i-1].Hash {
			return fmt.Errorf("filestore: batch is not consecutive at %d: %w", recs[i].Seq, auditlog.ErrConflict)
		}
	}
	buf := make([]byte, 0, len(recs)*256)
	offs := make([]int64, len(recs))
	for i := range recs {
		offs[i] = s.size + int64(len(buf))
		buf = appendRow(buf, &recs[i])
	}
	if err := s.write(buf); err != nil {
		return err
	}
	s.offs = append(s.offs, offs...)
	s.size += int64(len(buf))
	s.head = auditlog.Head{Size: s.head.Size + uint64(len(recs)), Last: recs[len(recs)-1].Hash}
	return nil
}

// Head implements auditlog.Store.
func (s *Store) Head(context.Context) (auditlog.Head, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return auditlog.Head{}, err
	}
	return s.head, nil
}

const scanChunk = 256 << 10

// Scan implements auditlog.Store. It reads in chunks without holding the
// store's lock across fn, so appends continue during a long scan.
func (s *Store) Scan(ctx context.Context, from uint64, fn func(auditlog.Record) error) error {
	s.mu.RLock()
	if err := s.usable(); err != nil {
		s.mu.RUnlock()
		return err
	}
	end := uint64(len(s.offs)) // rows as of the call
	skipped := s.skipped
	s.mu.RUnlock()
	buf := make([]byte, scanChunk)
	next := from
	for next < end {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.mu.RLock()
		if s.closed {
			s.mu.RUnlock()
			return auditlog.ErrClosed
		}
		off := s.offs[next]
		stop := s.size
		if end < uint64(len(s.offs)) {
			stop = s.offs[end]
		}
		want := min(int64(len(buf)), stop-off)
		n, err := s.f.ReadAt(buf[:want], off)
		if err == nil && n >= frameHeader {
			// a single frame larger than the chunk: read it whole
			if _, _, _, derr := decodeFrame(buf[:n]); errors.Is(derr, errShort) {
				size := frameHeader + int64(uint32(buf[1])<<24|uint32(buf[2])<<16|uint32(buf[3])<<8|uint32(buf[4])) + frameTrailer
				if size <= stop-off {
					buf = make([]byte, size)
					n, err = s.f.ReadAt(buf, off)
				}
			}
		}
		s.mu.RUnlock()
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("filestore: read: %w", err)
		}
		b := buf[:n]
		before := next
		for len(b) > 0 && next < end {
			if skipped != nil {
				// a damaged stretch: the next chunk starts at the next row
				if _, ok := skipped[off+int64(n-len(b))]; ok {
					break
				}
			}
			kind, body, fn2, derr := decodeFrame(b)
			if errors.Is(derr, errShort) {
				break
			}
			if derr != nil {
				return fmt.Errorf("filestore: row %d: %w", next, derr)
			}
			b = b[fn2:]
			if kind != kindRow {
				continue
			}
			rec, err := decodeRow(body)
			if err != nil {
				return fmt.Errorf("filestore: row %d: %w", next, err)
			}
			next++
			if err := fn(rec); err != nil {
				return err
			}
		}
		if next == before {
			return fmt.Errorf("filestore: row %d: %w", next, errCorrupt)
		}
		if len(buf) > scanChunk {
			buf = make([]byte, scanChunk)
		}
	}
	return nil
}

// AddCheckpoint implements auditlog.Store; checkpoints are ordered as
// [auditlog.KeepCheckpoint] says.
func (s *Store) AddCheckpoint(ctx context.Context, signed []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	if len(signed) > maxBody {
		return fmt.Errorf("filestore: checkpoint larger than %d bytes", maxBody)
	}
	keep, err := auditlog.KeepCheckpoint(s.cps, signed)
	if err != nil {
		return fmt.Errorf("filestore: %w", err)
	}
	if !keep {
		return nil
	}
	buf := appendCheckpoint(nil, signed)
	if err := s.write(buf); err != nil {
		return err
	}
	s.size += int64(len(buf))
	s.cps = append(s.cps, bytes.Clone(signed))
	return nil
}

// Checkpoints implements auditlog.Store.
func (s *Store) Checkpoints(ctx context.Context, fn func([]byte) error) error {
	s.mu.RLock()
	if err := s.usable(); err != nil {
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
	if err := s.usable(); err != nil {
		return nil, err
	}
	if len(s.cps) == 0 {
		return nil, nil
	}
	return bytes.Clone(s.cps[len(s.cps)-1]), nil
}

// Rekey implements auditlog.Store. The whole file is rewritten beside the
// original, fsynced and renamed over it, so a crash leaves either the old
// or the new file; appends wait meanwhile.
func (s *Store) Rekey(ctx context.Context, rows []auditlog.Rekeyed) error {
	want := make(map[uint64]auditlog.Rekeyed, len(rows))
	for _, r := range rows {
		want[r.Seq] = r
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	var conflict error
	err := s.rewrite(func(kind byte, body []byte, out []byte) ([]byte, error) {
		if kind != kindRow {
			return appendCheckpoint(out, body), nil
		}
		rec, err := decodeRow(body)
		if err != nil {
			return nil, err
		}
		if k, ok := want[rec.Seq]; ok {
			if rec.KeyID != k.OldKeyID {
				conflict = fmt.Errorf("filestore: rekey row %d: %w", rec.Seq, auditlog.ErrConflict)
			} else {
				rec.Payload, rec.KeyID = k.Payload, k.KeyID
			}
		}
		return appendRow(out, &rec), nil
	})
	if err != nil {
		return err
	}
	return conflict
}

// rewrite copies the file frame by frame through fn into a new file and
// renames it over the log. Caller holds s.mu.
func (s *Store) rewrite(fn func(kind byte, body []byte, out []byte) ([]byte, error)) error {
	path := filepath.Join(s.dir, LogFile)
	tmp := path + ".rewrite"
	nf, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("filestore: rewrite: %w", err)
	}
	fail := func(err error) error {
		nf.Close()
		os.Remove(tmp)
		return fmt.Errorf("filestore: rewrite: %w", err)
	}
	r := bufio.NewReaderSize(io.NewSectionReader(s.f, 0, s.size), 1<<20)
	w := bufio.NewWriterSize(nf, 1<<20)
	var buf, out []byte
	for {
		hdr, _ := r.Peek(frameHeader)
		if len(hdr) < frameHeader {
			break
		}
		n := frameHeader + frameTrailer + int(uint32(hdr[1])<<24|uint32(hdr[2])<<16|uint32(hdr[3])<<8|uint32(hdr[4]))
		if n > maxBody+frameHeader+frameTrailer {
			return fail(errCorrupt)
		}
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return fail(err)
		}
		kind, body, _, err := decodeFrame(buf)
		if err != nil {
			return fail(err)
		}
		if out, err = fn(kind, body, out[:0]); err != nil {
			return fail(err)
		}
		if _, err := w.Write(out); err != nil {
			return fail(err)
		}
	}
	if err := w.Flush(); err != nil {
		return fail(err)
	}
	if err := nf.Sync(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	if err := syncDir(s.dir); err != nil {
		nf.Close()
		s.broken = fmt.Errorf("filestore: rewrite, reopen the store: %w", err)
		return s.broken
	}
	nf.Close()
	old := s.f
	if err := s.load(); err != nil {
		s.broken = fmt.Errorf("filestore: reload after rewrite, reopen the store: %w", err)
		return s.broken
	}
	old.Close()
	return nil
}

// Close implements auditlog.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.f.Close()
	unlockDir(s.lock)
	return err
}
