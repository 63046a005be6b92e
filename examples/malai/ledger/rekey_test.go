package ledger

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
	"github.com/malai-sec/malai/auditlog/memstore"
	"github.com/malai-sec/malai/keyring"
)

// TestBackgroundReencryption: after the ring's sealing key changes the
// rekeyer re-seals every older row on the file store while appends go
// on; a pass interrupted after its first batch (as a crash would) is
// resumed by the next start; hashes, the checkpointed root and the
// replayed events are unchanged, and the old key can leave the ring.
func TestBackgroundReencryption(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	skey, _, err := note.GenerateKey(rand.Reader, "ledger.test/audit")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	k1, _ := keyring.NewKey()
	ring, err := keyring.NewRing("k1", map[string]keyring.Key{"k1": k1})
	if err != nil {
		t.Fatal(err)
	}
	open := func() (*auditlog.Log, auditlog.Store) {
		t.Helper()
		st, err := filestore.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		l, err := auditlog.New(auditlog.Config{Store: st, Origin: "ledger.test/audit", Signers: []note.Signer{signer}, Ring: ring})
		if err != nil {
			st.Close()
			t.Fatal(err)
		}
		return l, st
	}
	l, st := open()
	const before = 2500 // more than two of Reencrypt's batches
	events := make([]auditlog.Event, before)
	for i := range events {
		events[i] = auditlog.Event{Type: "test.row", Actor: "alice", Payload: []byte(fmt.Sprintf(`{"n":%d,"secret":"row-%d"}`, i, i))}
	}
	if _, err := l.AppendBatch(ctx, events); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	root, err := l.Root(before)
	if err != nil {
		t.Fatal(err)
	}
	replay := func(l *auditlog.Log) []auditlog.Event {
		t.Helper()
		var out []auditlog.Event
		if _, err := l.Replay(ctx, func(e auditlog.Event) error { out = append(out, e); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	want := replay(l)

	k2, _ := keyring.NewKey()
	if err := ring.Rotate("k2", k2); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)

	// The first pass stops after one batch; appends run meanwhile.
	rctx, cancel := context.WithCancel(ctx)
	batches := 0
	r := &rekeyer{st: st, ring: ring, log: logger, poll: time.Millisecond, afterBatch: func(int) {
		batches++
		cancel()
	}}
	var wg sync.WaitGroup
	appendErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 20 {
			if _, err := l.Append(ctx, auditlog.Event{Type: "test.during", Actor: "bob", Payload: []byte(fmt.Sprintf(`{"during":%d}`, i))}); err != nil {
				appendErr <- err
				return
			}
		}
	}()
	r.run(rctx)
	wg.Wait()
	select {
	case err := <-appendErr:
		t.Fatalf("append during re-encryption: %v", err)
	default:
	}
	if batches != 1 {
		t.Fatalf("%d batches before the interruption, want 1", batches)
	}
	by, err := l.SealedBy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if by["k1"] == 0 || by["k1"] >= before || by["k2"] == 0 {
		t.Fatalf("after the interrupted pass: %v; want some rows left under k1", by)
	}

	// Restart: the log opens over the rewritten file (its rows still
	// match the checkpoint it signed) and the rekeyer resumes.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	l, st = open()
	defer st.Close()
	defer l.Close()
	stop := startRekeyer(&rekeyer{st: st, ring: ring, log: logger, poll: time.Millisecond})
	eventually(t, 30*time.Second, "every row under k2", func() bool {
		by, err := l.SealedBy(ctx)
		return err == nil && len(by) == 1 && by["k2"] == before+20
	})
	stop()

	if got, err := l.Root(before); err != nil || got != root {
		t.Fatalf("root of the first %d rows changed: %v", before, err)
	}
	only, _ := keyring.NewRing("k2", map[string]keyring.Key{"k2": k2})
	var got []auditlog.Event
	if _, err := auditlog.Replay(ctx, st, only, func(e auditlog.Event) error { got = append(got, e); return nil }); err != nil {
		t.Fatalf("replay with the new key alone: %v", err)
	}
	if len(got) != before+20 {
		t.Fatalf("replayed %d events, want %d", len(got), before+20)
	}
	for i, e := range want {
		if g := got[i]; g.Seq != e.Seq || g.Type != e.Type || !bytes.Equal(g.Payload, e.Payload) || !g.Time.Equal(e.Time) {
			t.Fatalf("event %d differs after re-encryption", i)
		}
	}
}

// TestRekeyerSharedStoreOnlyReports: with the chain in PostgreSQL (the
// ledger's role may not rewrite rows) the rekeyer rewrites nothing and
// says once per sealing key how many rows "malai audit-rekey" has to
// re-encrypt.
func TestRekeyerSharedStoreOnlyReports(t *testing.T) {
	ctx := context.Background()
	skey, _, _ := note.GenerateKey(rand.Reader, "ledger.test/audit")
	signer, _ := note.NewSigner(skey)
	k1, _ := keyring.NewKey()
	ring, _ := keyring.NewRing("k1", map[string]keyring.Key{"k1": k1})
	st := memstore.New()
	l, err := auditlog.New(auditlog.Config{Store: st, Origin: "ledger.test/audit", Signers: []note.Signer{signer}, Ring: ring})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.AppendBatch(ctx, []auditlog.Event{{Type: "a"}, {Type: "b"}, {Type: "c"}}); err != nil {
		t.Fatal(err)
	}
	k2, _ := keyring.NewKey()
	if err := ring.Rotate("k2", k2); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lines bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&lockedWriter{mu: &mu, w: &lines}, nil))
	stop := startRekeyer(&rekeyer{st: st, ring: ring, log: logger, shared: true, poll: time.Millisecond})
	eventually(t, 10*time.Second, "the audit-rekey notice", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return bytes.Contains(lines.Bytes(), []byte("malai audit-rekey"))
	})
	// Dozens of polls later: still one notice, and nothing rewritten.
	time.Sleep(50 * time.Millisecond)
	stop()
	mu.Lock()
	n := bytes.Count(lines.Bytes(), []byte("malai audit-rekey"))
	got := lines.String()
	mu.Unlock()
	if n != 1 || !bytes.Contains([]byte(got), []byte(`"rows":3`)) {
		t.Fatalf("want one notice naming 3 rows, got %d: %s", n, got)
	}
	if by, _ := l.SealedBy(ctx); by["k1"] != 3 {
		t.Fatalf("the rekeyer rewrote rows of a shared store: %v", by)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}
