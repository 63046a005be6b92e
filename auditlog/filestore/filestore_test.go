package filestore_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
	"github.com/malai-sec/malai/auditlog/storetest"
	"github.com/malai-sec/malai/keyring"
)

func open(t *testing.T, dir string) *filestore.Store {
	t.Helper()
	s, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) auditlog.Store { return open(t, t.TempDir()) })
}

// rewriteFile is the attacker: it rewrites the whole file with valid
// frames (CRCs included) and reopens the store.
func rewriteFile(t *testing.T, s auditlog.Store, fn func([]auditlog.Record, [][]byte) ([]auditlog.Record, [][]byte)) auditlog.Store {
	t.Helper()
	fs := s.(*filestore.Store)
	exp, err := auditlog.LoadExport(context.Background(), fs, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := fs.Dir()
	fs.Close()
	rows, cps := fn(exp.Records, exp.Checkpoints)
	if err := os.WriteFile(filepath.Join(dir, filestore.LogFile), filestore.EncodeForTest(rows, cps), 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, dir)
	t.Cleanup(func() { s2.Close() })
	return s2
}

func TestTamper(t *testing.T) {
	storetest.RunTamper(t, func(t *testing.T) auditlog.Store { return open(t, t.TempDir()) }, rewriteFile, storetest.TamperOptions{})
}

func TestPersistsAcrossReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	f := storetest.NewFixture(t, s)
	want, err := auditlog.LoadExport(ctx, s, f.Origin, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := open(t, dir)
	defer s2.Close()
	got, err := auditlog.LoadExport(ctx, s2, f.Origin, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Records) != 12 || len(got.Checkpoints) != len(want.Checkpoints) {
		t.Fatalf("after reopen: %d rows, %d checkpoints", len(got.Records), len(got.Checkpoints))
	}
	rep := f.Verify(t, s2, f.Trusted, nil, nil)
	if len(rep.Findings) != 0 {
		t.Fatalf("reopened store does not verify: %v", rep.Findings)
	}
	// A new Log continues the chain.
	l, err := auditlog.New(auditlog.Config{Store: s2, Origin: f.Origin, Signers: []note.Signer{f.Signer}, Ring: f.Ring})
	if err != nil {
		t.Fatal(err)
	}
	r, err := l.Append(ctx, storetest.Transfer("u", "a", "b", 1))
	if err != nil || r.Seq != 12 {
		t.Fatalf("append after reopen: %+v, %v", r, err)
	}
	l.Close()
}

func TestSecondOpenRefused(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	defer s.Close()
	if _, err := filestore.Open(dir); !errors.Is(err, filestore.ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

func TestTornTailCut(t *testing.T) {
	ctx := context.Background()
	for _, cut := range []int{1, 4, 5, 20, -1} {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir)
			if err := s.Append(ctx, storetest.Chain(0, auditlog.Hash{}, 5)); err != nil {
				t.Fatal(err)
			}
			s.Close()
			path := filepath.Join(dir, filestore.LogFile)
			good, _ := os.ReadFile(path)
			// the next append's frames, torn
			next := filestore.EncodeForTest(storetest.Chain(5, auditlog.Hash{}, 2), nil)
			torn := next[:len(next)-1]
			if cut >= 0 {
				torn = next[:cut]
			}
			if err := os.WriteFile(path, append(append([]byte{}, good...), torn...), 0o600); err != nil {
				t.Fatal(err)
			}
			s2 := open(t, dir)
			defer s2.Close()
			wantSize, wantCut := uint64(5), len(torn)
			if cut == -1 {
				// the first of the two frames was whole: it stays
				wantSize, wantCut = 6, len(torn)-len(filestore.EncodeForTest(storetest.Chain(5, auditlog.Hash{}, 1), nil))
			}
			if h, _ := s2.Head(ctx); h.Size != wantSize {
				t.Fatalf("size after torn tail = %d, want %d", h.Size, wantSize)
			}
			if s2.Recovered() != int64(wantCut) {
				t.Fatalf("Recovered = %d, want %d", s2.Recovered(), wantCut)
			}
			if cut == -1 {
				return
			}
			if s2.Recovered() != int64(len(torn)) {
				t.Fatalf("Recovered = %d, want %d", s2.Recovered(), len(torn))
			}
			kept, err := os.ReadFile(s2.TornFile())
			if err != nil || string(kept) != string(torn) {
				t.Fatalf("torn bytes not kept: %v", err)
			}
			now, _ := os.ReadFile(path)
			if string(now) != string(good) {
				t.Fatalf("file after cut differs from the acknowledged prefix")
			}
			if err := s2.Append(ctx, storetest.Chain(5, storetest.Chain(0, auditlog.Hash{}, 5)[4].Hash, 1)); err != nil {
				t.Fatalf("append after cut: %v", err)
			}
		})
	}
}

func TestRekeyPersists(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	f := storetest.NewFixture(t, s)
	if err := f.Ring.Rotate("k2", mustKey(t)); err != nil {
		t.Fatal(err)
	}
	l, err := auditlog.New(auditlog.Config{Store: s, Origin: f.Origin, Signers: []note.Signer{f.Signer}, Ring: f.Ring})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	n, err := l.Reencrypt(ctx)
	if err != nil || n != 12 {
		t.Fatalf("Reencrypt = %d, %v", n, err)
	}
	s.Close()
	s2 := open(t, dir)
	defer s2.Close()
	err = s2.Scan(ctx, 0, func(r auditlog.Record) error {
		if r.KeyID != "k2" {
			return fmt.Errorf("row %d still under %q", r.Seq, r.KeyID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep := f.Verify(t, s2, f.Trusted, nil, nil); len(rep.Findings) != 0 {
		t.Fatalf("re-encrypted log does not verify: %v", rep.Findings)
	}
}

// TestCrashKeepsAcknowledged runs a child process that appends at full
// speed from many goroutines and prints each acknowledged sequence number,
// kills it with SIGKILL, and checks that every acknowledged event is
// present after reopening and that the chain verifies.
func TestCrashKeepsAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test re-executes the test binary")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "AUDITLOG_CRASH_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[uint64]auditlog.Hash{}
	sc := bufio.NewScanner(out)
	for sc.Scan() && len(acked) < 3000 {
		seq, hash, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(seq, 10, 64)
		if err != nil {
			t.Fatalf("child wrote %q", sc.Text())
		}
		var h auditlog.Hash
		if err := h.UnmarshalText([]byte(hash)); err != nil {
			t.Fatal(err)
		}
		acked[n] = h
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if len(acked) < 3000 {
		t.Fatalf("child acknowledged only %d events", len(acked))
	}
	s := open(t, dir)
	defer s.Close()
	found := map[uint64]auditlog.Hash{}
	head, err := auditlog.Replay(context.Background(), s, nil, func(e auditlog.Event) error { return nil })
	if err != nil {
		t.Fatalf("chain after SIGKILL does not verify: %v", err)
	}
	_ = s.Scan(context.Background(), 0, func(r auditlog.Record) error { found[r.Seq] = r.Hash; return nil })
	for seq, h := range acked {
		if found[seq] != h {
			t.Fatalf("acknowledged event %d lost or changed after SIGKILL", seq)
		}
	}
	t.Logf("acknowledged %d, present %d, torn bytes cut %d", len(acked), head.Size, s.Recovered())
}

func TestHelperProcess(t *testing.T) {
	dir := os.Getenv("AUDITLOG_CRASH_DIR")
	if dir == "" {
		t.Skip("helper for TestCrashKeepsAcknowledged")
	}
	s, err := filestore.Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	skey, _, _ := note.GenerateKey(nil, "crash")
	signer, _ := note.NewSigner(skey)
	l, err := auditlog.New(auditlog.Config{Store: s, Origin: "crash", Signers: []note.Signer{signer}, Plaintext: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				r, err := l.Append(context.Background(), auditlog.Event{Type: "crash", Actor: strconv.Itoa(g), Payload: []byte(strconv.Itoa(i))})
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(w, "%d %s\n", r.Seq, r.Hash)
				w.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait() // never returns: the parent kills the process
}

func mustKey(t *testing.T) keyring.Key {
	t.Helper()
	k, err := keyring.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
