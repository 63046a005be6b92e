package auditlog_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/memstore"
)

// keySource is a rotating key set, as a key file or a KMS presents one:
// the newest key and the one before it sign, every key ever added
// verifies.
type keySource struct {
	mu   sync.Mutex
	keys []keys
	fail error
}

func (s *keySource) rotate(k keys) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, k)
}

func (s *keySource) signers() ([]note.Signer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	var out []note.Signer
	for i := len(s.keys) - 1; i >= 0 && len(out) < 2; i-- {
		out = append(out, s.keys[i].signer)
	}
	return out, nil
}

func (s *keySource) verifiers() ([]note.Verifier, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]note.Verifier, len(s.keys))
	for i, k := range s.keys {
		out[i] = k.verifier
	}
	return out, nil
}

// signedBy returns the names of the keys whose signatures on a checkpoint
// verify.
func signedBy(t *testing.T, signed []byte, vs ...note.Verifier) []string {
	t.Helper()
	var names []string
	for _, v := range vs {
		if _, n, err := auditlog.OpenCheckpoint(signed, origin, note.VerifierList(v)); err == nil {
			names = append(names, n...)
		}
	}
	return names
}

// TestRotateSignersWhileRunning: a running Log signs each checkpoint with
// the keys GetSigners returns then, its witness accepts the rotated keys
// it learns through GetVerifiers, the whole chain verifies offline with
// every key, and a Log reopened with the newest keys adopts the newest
// checkpoint.
func TestRotateSignersWhileRunning(t *testing.T) {
	ctx := context.Background()
	src := &keySource{}
	src.rotate(newKeys(t, "audit-1"))
	wst := memstore.New()
	w, err := auditlog.NewWitness(ctx, auditlog.WitnessConfig{Store: wst, Origin: origin, GetVerifiers: src.verifiers})
	if err != nil {
		t.Fatal(err)
	}
	st := memstore.New()
	l := newLog(t, auditlog.Config{Store: st, Origin: origin, GetSigners: src.signers, Witness: w, Plaintext: true, CheckpointInterval: time.Hour})
	checkpoint := func(n int) auditlog.SignedCheckpoint {
		t.Helper()
		for i := range n {
			if _, err := l.Append(ctx, auditlog.Event{Type: "t", Payload: fmt.Appendf(nil, `{"i":%d}`, i)}); err != nil {
				t.Fatal(err)
			}
		}
		cp, err := l.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return cp
	}
	all := func() []note.Verifier { vs, _ := src.verifiers(); return vs }
	if got := signedBy(t, checkpoint(3).Note, all()...); !slices.Equal(got, []string{"audit-1"}) {
		t.Fatalf("first checkpoint signed by %v", got)
	}
	// Two rotations, the second leaving no key of the log's start: the
	// witness follows only through GetVerifiers.
	for i, want := range [][]string{{"audit-1", "audit-2"}, {"audit-2", "audit-3"}} {
		src.rotate(newKeys(t, fmt.Sprintf("audit-%d", i+2)))
		cp := checkpoint(2)
		if got := signedBy(t, cp.Note, all()...); !slices.Equal(got, want) {
			t.Fatalf("after rotation %d: checkpoint signed by %v, want %v", i+1, got, want)
		}
		latest, _ := w.Latest(ctx)
		if string(latest) != string(cp.Note) {
			t.Fatalf("after rotation %d the witness did not take the checkpoint", i+1)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	exp, err := auditlog.LoadExport(ctx, st, origin, nil)
	if err != nil {
		t.Fatal(err)
	}
	trusted, _ := w.Latest(ctx)
	rep := auditlog.Verify(ctx, exp, auditlog.VerifyConfig{Origin: origin, Verifiers: all(), Trusted: [][]byte{trusted}})
	if !rep.OK() || rep.Anchored != 7 || len(rep.Findings) != 0 {
		t.Fatalf("offline verify of the rotated chain: %+v", rep)
	}
	// Verifying with the first key alone: the checkpoints only the new
	// keys signed are unknown-key findings, not silently accepted.
	old := auditlog.Verify(ctx, exp, auditlog.VerifyConfig{Origin: origin, Verifiers: all()[:1]})
	if old.OK() {
		t.Fatalf("verify with the retired key alone accepted checkpoints it never signed: %+v", old)
	}
	// Reopened with the newest keys, the log adopts its newest checkpoint
	// and its witness still accepts what it signs.
	var reported []error
	l2 := newLog(t, auditlog.Config{Store: st, Origin: origin, GetSigners: src.signers, Witness: w, Plaintext: true,
		OnError: func(err error) { reported = append(reported, err) }})
	if cp := l2.LatestCheckpoint(); cp.Size != 7 || len(reported) != 0 {
		t.Fatalf("reopened log adopted %+v (errors %v)", cp.Checkpoint, reported)
	}
	if _, err := l2.Append(ctx, auditlog.Event{Type: "t"}); err != nil {
		t.Fatal(err)
	}
	if _, err := l2.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRotateSignersConcurrentAppend: appends, checkpoints and rotations
// at once (run with -race). Every stored checkpoint verifies, the chain
// verifies, and the last checkpoint is signed by the newest key.
func TestRotateSignersConcurrentAppend(t *testing.T) {
	ctx := context.Background()
	src := &keySource{}
	src.rotate(newKeys(t, "audit-0"))
	w, err := auditlog.NewWitness(ctx, auditlog.WitnessConfig{Store: memstore.New(), Origin: origin, GetVerifiers: src.verifiers})
	if err != nil {
		t.Fatal(err)
	}
	st := memstore.New()
	var errMu sync.Mutex
	var bg []error
	l, err := auditlog.New(auditlog.Config{Store: st, Origin: origin, GetSigners: src.signers, Witness: w, Plaintext: true,
		CheckpointInterval: time.Millisecond,
		OnError:            func(err error) { errMu.Lock(); bg = append(bg, err); errMu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	const writers, perWriter, rotations = 8, 50, 10
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range perWriter {
				if _, err := l.Append(ctx, auditlog.Event{Type: "t", Payload: fmt.Appendf(nil, `{"g":%d,"i":%d}`, g, i)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range rotations {
			src.rotate(newKeys(t, fmt.Sprintf("audit-%d", i+1)))
			if _, err := l.Checkpoint(ctx); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if len(bg) != 0 {
		t.Fatalf("background checkpoints failed: %v", bg)
	}
	all, _ := src.verifiers()
	n := 0
	if err := st.Checkpoints(ctx, func(s []byte) error {
		n++
		_, _, err := auditlog.OpenCheckpoint(s, origin, note.VerifierList(all...))
		return err
	}); err != nil || n == 0 {
		t.Fatalf("%d stored checkpoints: %v", n, err)
	}
	last := l.LatestCheckpoint()
	if last.Size != writers*perWriter {
		t.Fatalf("last checkpoint covers %d rows, want %d", last.Size, writers*perWriter)
	}
	if got := signedBy(t, last.Note, all...); !slices.Contains(got, fmt.Sprintf("audit-%d", rotations)) {
		t.Fatalf("last checkpoint signed by %v, want the newest key audit-%d", got, rotations)
	}
	exp, _ := auditlog.LoadExport(ctx, st, origin, nil)
	if rep := auditlog.Verify(ctx, exp, auditlog.VerifyConfig{Origin: origin, Verifiers: all}); !rep.OK() || len(rep.Findings) != 0 {
		t.Fatalf("verify after concurrent rotation: %+v", rep)
	}
}

// TestRotatedOutKeyStaysTheLogs: a Log whose keys rotated away from those
// another replica of the same store still signs with recognises that
// replica's larger checkpoint as its own (a key it held) instead of
// refusing it as forged.
func TestRotatedOutKeyStaysTheLogs(t *testing.T) {
	ctx := context.Background()
	k1 := newKeys(t, "audit-1")
	src := &keySource{}
	src.rotate(k1)
	st := memstore.New()
	a := newLog(t, auditlog.Config{Store: st, Origin: origin, GetSigners: src.signers, Plaintext: true, CheckpointInterval: time.Hour})
	b := newLog(t, auditlog.Config{Store: st, Origin: origin, Signers: []note.Signer{k1.signer}, Plaintext: true, CheckpointInterval: time.Hour})
	// a rotates twice: it signs with neither key b holds.
	src.rotate(newKeys(t, "audit-2"))
	src.rotate(newKeys(t, "audit-3"))
	if _, err := a.Append(ctx, auditlog.Event{Type: "t"}); err != nil {
		t.Fatal(err)
	}
	// b appends after it and checkpoints a larger tree with the old key.
	if _, err := b.Append(ctx, auditlog.Event{Type: "t"}); err != nil {
		t.Fatal(err)
	}
	if cp, err := b.Checkpoint(ctx); err != nil || cp.Size != 2 {
		t.Fatalf("b's checkpoint: %+v, %v", cp.Checkpoint, err)
	}
	// a's view (one row) is behind the store's checkpoint (two): its
	// attempt is skipped, and the store's newest is signed by a key a held.
	if _, err := a.Checkpoint(ctx); err != nil {
		t.Fatalf("a refused the replica's checkpoint signed by a key it rotated out: %v", err)
	}
}

// TestGetSignersFailures: a failing or empty signer source fails that
// checkpoint, periodic or explicit, and the next one retries; New refuses
// a source that fails at once and a config with both Signers and
// GetSigners.
func TestGetSignersFailures(t *testing.T) {
	ctx := context.Background()
	k := newKeys(t, "k")
	boom := errors.New("kms down")
	for name, get := range map[string]func() ([]note.Signer, error){
		"error":      func() ([]note.Signer, error) { return nil, boom },
		"no signer":  func() ([]note.Signer, error) { return nil, nil },
		"nil signer": func() ([]note.Signer, error) { return []note.Signer{nil}, nil },
	} {
		t.Run("New/"+name, func(t *testing.T) {
			if _, err := auditlog.New(auditlog.Config{Store: memstore.New(), Origin: origin, GetSigners: get, Plaintext: true}); err == nil {
				t.Fatal("New accepted a signer source that gives no usable signer")
			}
		})
	}
	if _, err := auditlog.New(auditlog.Config{Store: memstore.New(), Origin: origin, Signers: []note.Signer{k.signer}, GetSigners: (&keySource{keys: []keys{k}}).signers, Plaintext: true}); !errors.Is(err, auditlog.ErrInvalidConfig) {
		t.Fatalf("New with Signers and GetSigners = %v, want ErrInvalidConfig", err)
	}
	if _, err := auditlog.NewWitness(ctx, auditlog.WitnessConfig{Store: memstore.New(), Origin: origin, Verifiers: []note.Verifier{k.verifier}, GetVerifiers: (&keySource{keys: []keys{k}}).verifiers}); !errors.Is(err, auditlog.ErrInvalidConfig) {
		t.Fatalf("NewWitness with Verifiers and GetVerifiers = %v, want ErrInvalidConfig", err)
	}

	src := &keySource{keys: []keys{k}}
	st := memstore.New()
	reported := make(chan error, 16)
	l := newLog(t, auditlog.Config{Store: st, Origin: origin, GetSigners: src.signers, Plaintext: true,
		CheckpointInterval: time.Nanosecond, OnError: func(err error) {
			select {
			case reported <- err:
			default:
			}
		}})
	src.mu.Lock()
	src.fail = boom
	src.mu.Unlock()
	if _, err := l.Append(ctx, auditlog.Event{Type: "t"}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Checkpoint(ctx); !errors.Is(err, boom) {
		t.Fatalf("Checkpoint with a failing source = %v, want %v", err, boom)
	}
	if err := <-reported; !errors.Is(err, boom) {
		t.Fatalf("periodic checkpoint reported %v, want %v", err, boom)
	}
	if n := countCheckpoints(t, st); n != 0 {
		t.Fatalf("%d checkpoints stored while the source failed", n)
	}
	src.mu.Lock()
	src.fail = nil
	src.mu.Unlock()
	cp, err := l.Checkpoint(ctx)
	if err != nil || cp.Size != 1 {
		t.Fatalf("Checkpoint once the source recovered: %+v, %v", cp.Checkpoint, err)
	}
}

// TestWitnessLearnsKeysFromGetVerifiers: the witness refuses a checkpoint
// signed only by a key its source does not return, and accepts it once
// the source returns the key.
func TestWitnessLearnsKeysFromGetVerifiers(t *testing.T) {
	ctx := context.Background()
	k1, k2 := newKeys(t, "audit-1"), newKeys(t, "audit-2")
	src := &keySource{keys: []keys{k1}}
	w, err := auditlog.NewWitness(ctx, auditlog.WitnessConfig{Store: memstore.New(), Origin: origin, GetVerifiers: src.verifiers})
	if err != nil {
		t.Fatal(err)
	}
	signed, err := auditlog.SignCheckpoint(auditlog.Checkpoint{Origin: origin, Size: 0, Root: auditlog.Hash{}}, k2.signer)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Publish(ctx, signed, nil); !errors.Is(err, auditlog.ErrCheckpoint) {
		t.Fatalf("Publish by a key the source does not return = %v, want ErrCheckpoint", err)
	}
	src.rotate(k2)
	if err := w.Publish(ctx, signed, nil); err != nil {
		t.Fatalf("Publish once the source returns the key: %v", err)
	}
}

func countCheckpoints(t *testing.T, st auditlog.Store) int {
	t.Helper()
	n := 0
	if err := st.Checkpoints(context.Background(), func([]byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}
