package filestore

import (
	"bufio"
	"bytes"
	"context"
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
// Open. It is safe for concurrent use; one process at a time may hold a
// directory open (an exclusive lock on dir/LOCK).
type Store struct {
	dir  string
	lock *os.File

	mu     sync.RWMutex
	f      *os.File
	size   int64   // bytes of valid frames
	offs   []int64 // offset of each row frame, by position
	head   auditlog.Head
	cps    [][]byte
	closed bool
	broken error // set when a failed write could not be rolled back

	recovered int64
	tornPath  string
}

var (
	_ auditlog.Store              = (*Store)(nil)
	_ auditlog.LatestCheckpointer = (*Store)(nil)
)

// Open opens (creating if needed) the store in dir. A frame cut short by
// a crash at the end of the file is removed; the bytes removed are kept in
// a side file named by TornFile and counted by Recovered.
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
		unlockDir(lock)
		return nil, err
	}
	return s, nil
}

func (s *Store) load() error {
	path := filepath.Join(s.dir, LogFile)
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("filestore: %w", err)
	}
	if os.IsNotExist(statErr) {
		// make the new file's directory entry durable before any append
		if err := syncDir(s.dir); err != nil {
			f.Close()
			return err
		}
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("filestore: %w", err)
	}
	s.f, s.offs, s.cps, s.head, s.size = f, nil, nil, auditlog.Head{}, 0
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, st.Size()), 1<<20)
	var buf []byte
	var off int64
	for {
		hdr, err := r.Peek(frameHeader)
		if len(hdr) == 0 && errors.Is(err, io.EOF) {
			break
		}
		n := frameHeader + frameTrailer
		if len(hdr) == frameHeader {
			n += int(min(uint32(maxBody+1), uint32(hdr[1])<<24|uint32(hdr[2])<<16|uint32(hdr[3])<<8|uint32(hdr[4])))
		}
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		m, _ := io.ReadFull(r, buf)
		kind, body, fn, derr := decodeFrame(buf[:m])
		if derr != nil {
			return s.cutTail(off, st.Size())
		}
		switch kind {
		case kindRow:
			rec, err := decodeRow(body)
			if err != nil {
				return s.cutTail(off, st.Size())
			}
			s.offs = append(s.offs, off)
			s.head = auditlog.Head{Size: uint64(len(s.offs)), Last: rec.Hash}
		case kindCheckpoint:
			s.cps = append(s.cps, bytes.Clone(body))
		}
		off += int64(fn)
	}
	s.size = off
	_, err = f.Seek(off, io.SeekStart)
	return err
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
	if err := s.usable(); err != nil {
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

// AddCheckpoint implements auditlog.Store.
func (s *Store) AddCheckpoint(ctx context.Context, signed []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if len(signed) > maxBody {
		return fmt.Errorf("filestore: checkpoint larger than %d bytes", maxBody)
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
	if err := s.usable(); err != nil {
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

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("filestore: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("filestore: sync directory: %w", err)
	}
	return nil
}
