package filestore_test

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
	"github.com/malai-sec/malai/auditlog/storetest"
)

// chainDir is a log on disk the way the reference system keeps it: the
// chain under dir/audit, the witness's checkpoints under dir/witness, one
// signing key for every start.
type chainDir struct {
	dir      string
	signer   note.Signer
	verifier note.Verifier
}

func newChainDir(t *testing.T) *chainDir {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "audit-test")
	if err != nil {
		t.Fatal(err)
	}
	c := &chainDir{dir: t.TempDir()}
	c.signer, _ = note.NewSigner(skey)
	c.verifier, _ = note.NewVerifier(vkey)
	return c
}

const testOrigin = "malai.test/audit"

func (c *chainDir) logFile() string { return filepath.Join(c.dir, "audit", filestore.LogFile) }

// running is a started log over the two stores.
type running struct {
	log     *auditlog.Log
	st, wst *filestore.Store
}

// stop closes the log (final checkpoint) and the stores.
func (r *running) stop() { r.log.Close(); r.st.Close(); r.wst.Close() }

// crash releases the stores as a SIGKILL would: no final checkpoint. The
// log's periodic checkpoint is an hour away, so nothing else is written.
func (r *running) crash() { r.st.Close(); r.wst.Close() }

// start opens both stores and a Log over them, as the system's start-up
// does; every error is returned, nothing is repaired.
func (c *chainDir) start(t *testing.T) (*running, error) {
	t.Helper()
	ctx := context.Background()
	st, err := filestore.Open(filepath.Join(c.dir, "audit"))
	if err != nil {
		return nil, err
	}
	wst, err := filestore.Open(filepath.Join(c.dir, "witness"))
	if err != nil {
		st.Close()
		return nil, err
	}
	w, err := auditlog.NewWitness(ctx, auditlog.WitnessConfig{Store: wst, Origin: testOrigin, Verifiers: []note.Verifier{c.verifier}})
	if err == nil {
		var l *auditlog.Log
		l, err = auditlog.New(auditlog.Config{Store: st, Origin: testOrigin, Signers: []note.Signer{c.signer}, Witness: w,
			Plaintext: true, CheckpointInterval: time.Hour})
		if err == nil {
			return &running{log: l, st: st, wst: wst}, nil
		}
	}
	st.Close()
	wst.Close()
	return nil, err
}

// fill starts the log, appends n events with a witnessed checkpoint
// after every cpEvery of them, and stops it (the final checkpoint covers
// them all).
func (c *chainDir) fill(t *testing.T, n, cpEvery int) {
	t.Helper()
	ctx := context.Background()
	r, err := c.start(t)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := r.log.Append(ctx, storetest.Transfer("u", "a", "b", int64(i+1))); err != nil {
			t.Fatal(err)
		}
		if (i+1)%cpEvery == 0 {
			if _, err := r.log.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	r.stop()
}

// verify reads the chain read-only, as the offline verify command does,
// and returns the report.
func (c *chainDir) verify(t *testing.T) auditlog.Report {
	t.Helper()
	ctx := context.Background()
	st, err := filestore.OpenReadOnly(filepath.Join(c.dir, "audit"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	wst, err := filestore.OpenReadOnly(filepath.Join(c.dir, "witness"))
	if err != nil {
		t.Fatal(err)
	}
	defer wst.Close()
	exp, err := auditlog.LoadExport(ctx, st, testOrigin, nil)
	if err != nil {
		t.Fatal(err)
	}
	var trusted [][]byte
	if err := wst.Checkpoints(ctx, func(b []byte) error { trusted = append(trusted, slices.Clone(b)); return nil }); err != nil {
		t.Fatal(err)
	}
	return auditlog.Verify(ctx, exp, auditlog.VerifyConfig{Origin: testOrigin, Verifiers: []note.Verifier{c.verifier}, Trusted: trusted})
}

// snapshot returns every file under dir with its contents.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func frames(t *testing.T, path string) ([]byte, []int64, []int, []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	offs, lens, kinds := filestore.FramesForTest(b)
	return b, offs, lens, kinds
}

// rowFrames returns the indexes (into offs) of the row frames.
func rowFrames(kinds []byte) []int {
	var out []int
	for i, k := range kinds {
		if k == 'R' {
			out = append(out, i)
		}
	}
	return out
}

func TestCorruptMiddleRowRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		patch func(b []byte, off int64, n int)
	}{
		// one flipped byte inside the row, checksum not fixed
		{"payload byte", func(b []byte, off int64, n int) { b[off+int64(n)-10] ^= 0x01 }},
		// the length grows past the end of the file: looks incomplete, but
		// valid frames follow
		{"length past the end", func(b []byte, off int64, n int) { b[off+1] = 0x00; b[off+2] = 0x0f }},
		// the length shrinks: the checksum no longer matches
		{"length shorter", func(b []byte, off int64, n int) { b[off+4]-- }},
		// the kind byte
		{"kind byte", func(b []byte, off int64, n int) { b[off] = 'X' }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newChainDir(t)
			c.fill(t, 20, 5)
			b, offs, lens, kinds := frames(t, c.logFile())
			rows := rowFrames(kinds)
			victim := rows[len(rows)-4] // a row a few rows before the end
			tc.patch(b, offs[victim], lens[victim])
			if err := os.WriteFile(c.logFile(), b, 0o600); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, c.dir)

			_, err := c.start(t)
			var ce *filestore.CorruptError
			if !errors.Is(err, filestore.ErrCorrupt) || !errors.As(err, &ce) {
				t.Fatalf("start-up over a corrupted middle row = %v, want ErrCorrupt", err)
			}
			if ce.Offset != offs[victim] || ce.Rows != len(rows)-4 {
				t.Fatalf("corruption located at byte %d after %d rows, want byte %d after %d rows", ce.Offset, ce.Rows, offs[victim], len(rows)-4)
			}
			rep := c.verify(t)
			if rep.OK() || !rep.Has(auditlog.FindingCorrupt, len(rows)-4) {
				t.Fatalf("verify does not report the corrupt frame at row position %d: %v", len(rows)-4, rep.Findings)
			}
			// the rows after the damage are still read and reported as
			// following a gap, not dropped silently
			if rep.Rows != len(rows)-1 || !rep.Has(auditlog.FindingGap, -1) {
				t.Fatalf("verify read %d rows (want %d, every row but the damaged one) and findings %v", rep.Rows, len(rows)-1, rep.Findings)
			}
			if after := snapshot(t, c.dir); !mapsEqual(before, after) {
				t.Fatal("start-up or verify changed the data directory")
			}
		})
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestTornTailIsAWarningForVerify(t *testing.T) {
	c := newChainDir(t)
	c.fill(t, 8, 4)
	good, err := os.ReadFile(c.logFile())
	if err != nil {
		t.Fatal(err)
	}
	next := filestore.EncodeForTest(storetest.Chain(8, auditlog.Hash{}, 1), nil)
	if err := os.WriteFile(c.logFile(), append(slices.Clone(good), next[:len(next)/2]...), 0o600); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, c.dir)
	rep := c.verify(t)
	if !rep.OK() || !rep.Has(auditlog.FindingTorn, 8) || rep.Rows != 8 {
		t.Fatalf("torn tail: OK=%v rows=%d findings %v; want a torn warning at position 8", rep.OK(), rep.Rows, rep.Findings)
	}
	if after := snapshot(t, c.dir); !mapsEqual(before, after) {
		t.Fatal("verify changed the data directory")
	}
	// start-up cuts it and keeps the bytes
	r, err := c.start(t)
	if err != nil {
		t.Fatal(err)
	}
	defer r.stop()
	if r.log.Head().Size != 8 {
		t.Fatalf("head after cutting the torn tail = %d, want 8", r.log.Head().Size)
	}
	now, _ := os.ReadFile(c.logFile())
	if string(now) != string(good) {
		t.Fatal("file after the cut is not the acknowledged prefix")
	}
}

func TestMissingLastCheckpointRefused(t *testing.T) {
	c := newChainDir(t)
	c.fill(t, 12, 4) // checkpoints at 4, 8, 12 and the final one at Close (12, the same)
	b, offs, _, kinds := frames(t, c.logFile())
	last := len(kinds) - 1
	if kinds[last] != 'C' {
		t.Fatalf("last frame is %q, want a checkpoint", kinds[last])
	}
	if err := os.WriteFile(c.logFile(), b[:offs[last]], 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := c.start(t)
	if !errors.Is(err, auditlog.ErrRollback) {
		t.Fatalf("start-up with the last checkpoint deleted = %v, want ErrRollback", err)
	}
	if rep := c.verify(t); rep.OK() || !rep.Has(auditlog.FindingRollback, -1) {
		t.Fatalf("verify with the last checkpoint deleted: %v", rep.Findings)
	}
}

func TestDeletedTail(t *testing.T) {
	// 12 rows under witnessed checkpoints at 4 and 8, then 4 unanchored
	// rows: the process stopped without its final checkpoint.
	setup := func(t *testing.T) (*chainDir, []byte, []int64, []byte) {
		c := newChainDir(t)
		c.fill(t, 8, 4)
		r, err := c.start(t)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 4 {
			if _, err := r.log.Append(context.Background(), storetest.Transfer("u", "a", "b", int64(100+i))); err != nil {
				t.Fatal(err)
			}
		}
		r.crash()
		b, offs, _, kinds := frames(t, c.logFile())
		return c, b, offs, kinds
	}
	t.Run("unanchored rows", func(t *testing.T) {
		c, b, offs, kinds := setup(t)
		rows := rowFrames(kinds)
		if len(rows) != 12 {
			t.Fatalf("%d rows, want 12", len(rows))
		}
		// delete rows 8..11, which no checkpoint covers
		if err := os.WriteFile(c.logFile(), b[:offs[rows[8]]], 0o600); err != nil {
			t.Fatal(err)
		}
		// Nothing signed covers these rows, so nothing can tell them from
		// appends that never happened: start-up succeeds at the last
		// witnessed checkpoint. This is the limit of checkpoints; it is
		// why the interval is short.
		r, err := c.start(t)
		if err != nil {
			t.Fatalf("start-up after deleting unanchored rows = %v", err)
		}
		if r.log.Head().Size != 8 {
			t.Fatalf("head = %d, want 8", r.log.Head().Size)
		}
		r.stop()
	})
	t.Run("into anchored rows", func(t *testing.T) {
		c, b, offs, kinds := setup(t)
		rows := rowFrames(kinds)
		// delete from row 7 on: row 7 is under the witnessed checkpoint of
		// size 8, which goes with it
		if err := os.WriteFile(c.logFile(), b[:offs[rows[7]]], 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := c.start(t); !errors.Is(err, auditlog.ErrRollback) {
			t.Fatalf("start-up with a chain shorter than its witnessed checkpoint = %v, want ErrRollback", err)
		}
		rep := c.verify(t)
		if rep.OK() || !rep.Has(auditlog.FindingTruncated, -1) {
			t.Fatalf("verify of a chain shorter than its witnessed checkpoint: %v", rep.Findings)
		}
	})
}

func TestMalformedCheckpointFrameIsAFinding(t *testing.T) {
	c := newChainDir(t)
	c.fill(t, 8, 4)
	// Whoever can write the file appends a well-framed checkpoint that is
	// not a signed note, then one signed by another key.
	skey, _, _ := note.GenerateKey(rand.Reader, "mallory")
	other, _ := note.NewSigner(skey)
	forged, err := auditlog.SignCheckpoint(auditlog.Checkpoint{Origin: testOrigin, Size: 3}, other)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(c.logFile())
	b = append(b, filestore.CheckpointFrameForTest([]byte("not a note"))...)
	b = append(b, filestore.CheckpointFrameForTest(forged)...)
	if err := os.WriteFile(c.logFile(), b, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := c.start(t)
	if err != nil {
		t.Fatalf("start-up with a malformed checkpoint frame = %v, want it skipped", err)
	}
	if cp := r.log.LatestCheckpoint(); cp.Size != 8 {
		t.Fatalf("latest checkpoint adopted = size %d, want the log's own of size 8", cp.Size)
	}
	if _, err := r.log.Append(context.Background(), storetest.Transfer("u", "a", "b", 1)); err != nil {
		t.Fatal(err)
	}
	r.stop()
	rep := c.verify(t)
	n := len(rep.Findings)
	if !rep.Has(auditlog.FindingMalformedCheckpoint, -1) || !rep.Has(auditlog.FindingUnknownKey, -1) || n < 2 {
		t.Fatalf("verify does not locate the two bad checkpoints: %v", rep.Findings)
	}
}

func TestReadOnly(t *testing.T) {
	ctx := context.Background()
	c := newChainDir(t)
	c.fill(t, 3, 3)
	dir := filepath.Join(c.dir, "audit")
	rw, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := filestore.OpenReadOnly(dir); !errors.Is(err, filestore.ErrLocked) {
		t.Fatalf("OpenReadOnly while the store is open for writing = %v, want ErrLocked", err)
	}
	rw.Close()
	ro, err := filestore.OpenReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := filestore.OpenReadOnly(dir); err != nil {
		t.Fatalf("a second reader = %v", err)
	}
	if _, err := filestore.Open(dir); !errors.Is(err, filestore.ErrLocked) {
		t.Fatalf("Open while a reader holds the store = %v, want ErrLocked", err)
	}
	h, _ := ro.Head(ctx)
	if err := ro.Append(ctx, storetest.Chain(h.Size, h.Last, 1)); !errors.Is(err, filestore.ErrReadOnly) {
		t.Fatalf("Append on a read-only store = %v", err)
	}
	if err := ro.AddCheckpoint(ctx, []byte("x")); !errors.Is(err, filestore.ErrReadOnly) {
		t.Fatalf("AddCheckpoint on a read-only store = %v", err)
	}
	if _, err := filestore.OpenReadOnly(filepath.Join(c.dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenReadOnly of a missing store = %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("OpenReadOnly created a directory")
	}
}
