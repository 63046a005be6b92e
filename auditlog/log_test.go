package auditlog_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"github.com/malai-sec/malai/internal/fakeclock"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/memstore"
	"github.com/malai-sec/malai/auditlog/storetest"
	"github.com/malai-sec/malai/keyring"
)

const origin = "ledger.test/audit"

type keys struct {
	signer   note.Signer
	verifier note.Verifier
}

func newKeys(t testing.TB, name string) keys {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return keys{s, v}
}

func newRing(t testing.TB, id string) *keyring.Ring {
	t.Helper()
	k, err := keyring.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	r, err := keyring.NewRing(id, map[string]keyring.Key{id: k})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newLog(t testing.TB, cfg auditlog.Config) *auditlog.Log {
	t.Helper()
	l, err := auditlog.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestNewRefusesBadConfig(t *testing.T) {
	k := newKeys(t, "k")
	ring := newRing(t, "r1")
	good := auditlog.Config{Store: memstore.New(), Origin: origin, Signers: []note.Signer{k.signer}, Ring: ring}
	cases := map[string]func(c *auditlog.Config){
		"no store":           func(c *auditlog.Config) { c.Store = nil },
		"no origin":          func(c *auditlog.Config) { c.Origin = "" },
		"multi-line origin":  func(c *auditlog.Config) { c.Origin = "a\nb" },
		"no signer":          func(c *auditlog.Config) { c.Signers = nil },
		"nil signer":         func(c *auditlog.Config) { c.Signers = []note.Signer{nil} },
		"no ring":            func(c *auditlog.Config) { c.Ring = nil },
		"negative interval":  func(c *auditlog.Config) { c.CheckpointInterval = -1 },
		"negative max batch": func(c *auditlog.Config) { c.MaxBatch = -1 },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			c := good
			mutate(&c)
			if _, err := auditlog.New(c); !errors.Is(err, auditlog.ErrInvalidConfig) {
				t.Fatalf("New = %v, want ErrInvalidConfig", err)
			}
		})
	}
	l, err := auditlog.New(good)
	if err != nil {
		t.Fatalf("good config refused: %v", err)
	}
	l.Close()
}

func TestAppendRefusesBadEvents(t *testing.T) {
	k := newKeys(t, "k")
	l := newLog(t, auditlog.Config{Store: memstore.New(), Origin: origin, Signers: []note.Signer{k.signer}, Plaintext: true})
	ctx := context.Background()
	for name, e := range map[string]auditlog.Event{
		"no type":        {},
		"long type":      {Type: strings.Repeat("t", auditlog.MaxTypeLen+1)},
		"long actor":     {Type: "t", Actor: strings.Repeat("a", auditlog.MaxActorLen+1)},
		"long corr":      {Type: "t", CorrelationID: strings.Repeat("c", auditlog.MaxCorrelationLen+1)},
		"payload not js": {Type: "t", Payload: []byte("{not json")},
		"huge payload":   {Type: "t", Payload: []byte(`"` + strings.Repeat("x", auditlog.MaxPayloadLen) + `"`)},
	} {
		if _, err := l.Append(ctx, e); !errors.Is(err, auditlog.ErrInvalidEvent) {
			t.Errorf("%s: Append = %v, want ErrInvalidEvent", name, err)
		}
	}
	if h := l.Head(); h.Size != 0 {
		t.Fatalf("refused events were appended: %+v", h)
	}
	l.Close()
	if _, err := l.Append(ctx, auditlog.Event{Type: "t"}); !errors.Is(err, auditlog.ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
}

func TestPayloadWhitespaceDoesNotChangeHash(t *testing.T) {
	k := newKeys(t, "k")
	now := func() time.Time { return time.Unix(1, 0) }
	a := newLog(t, auditlog.Config{Store: memstore.New(), Origin: origin, Signers: []note.Signer{k.signer}, Plaintext: true, Now: now})
	b := newLog(t, auditlog.Config{Store: memstore.New(), Origin: origin, Signers: []note.Signer{k.signer}, Plaintext: true, Now: now})
	ra, _ := a.Append(context.Background(), auditlog.Event{Type: "t", Payload: []byte(`{"a": 1, "b": [1, 2]}`)})
	rb, _ := b.Append(context.Background(), auditlog.Event{Type: "t", Payload: []byte(`{"a":1,"b":[1,2]}`)})
	if ra.Hash != rb.Hash {
		t.Fatal("insignificant whitespace changed the leaf hash")
	}
}

func TestLeafHashCoversEveryField(t *testing.T) {
	base := auditlog.Record{Seq: 3, Time: 5, Type: "t", Actor: "a", CorrelationID: "c", PrevHash: auditlog.Hash{9}}
	p := []byte(`{"x":1}`)
	h := auditlog.LeafHash(&base, p)
	for name, mutate := range map[string]func(r *auditlog.Record){
		"seq":   func(r *auditlog.Record) { r.Seq++ },
		"time":  func(r *auditlog.Record) { r.Time++ },
		"type":  func(r *auditlog.Record) { r.Type = "u" },
		"actor": func(r *auditlog.Record) { r.Actor = "b" },
		"corr":  func(r *auditlog.Record) { r.CorrelationID = "d" },
		"prev":  func(r *auditlog.Record) { r.PrevHash[0]++ },
		// moving bytes between adjacent fields must change the hash too
		"boundary": func(r *auditlog.Record) { r.Type, r.Actor = "ta", "" },
	} {
		r := base
		mutate(&r)
		if auditlog.LeafHash(&r, p) == h {
			t.Errorf("changing %s kept the leaf hash", name)
		}
	}
	if auditlog.LeafHash(&base, []byte(`{"x":2}`)) == h {
		t.Error("changing the payload kept the leaf hash")
	}
	if auditlog.LeafHash(&base, p) != h {
		t.Error("leaf hash is not deterministic")
	}
	// KeyID and the stored (sealed) payload are not covered.
	r := base
	r.KeyID, r.Payload = "k2", []byte("sealed")
	if auditlog.LeafHash(&r, p) != h {
		t.Error("key id or sealed bytes changed the leaf hash")
	}
}

func TestEncryptionAtRestAndRotation(t *testing.T) {
	ctx := context.Background()
	k := newKeys(t, "k")
	ring := newRing(t, "k1")
	st := memstore.New()
	l := newLog(t, auditlog.Config{Store: st, Origin: origin, Signers: []note.Signer{k.signer}, Ring: ring})
	var receipts []auditlog.Receipt
	for i := range 300 {
		r, err := l.Append(ctx, storetest.Transfer("alice", "a", "b", int64(i+1)))
		if err != nil {
			t.Fatal(err)
		}
		receipts = append(receipts, r)
	}
	check := func(wantKey string) {
		t.Helper()
		i := 0
		err := st.Scan(ctx, 0, func(r auditlog.Record) error {
			if r.KeyID != wantKey {
				t.Fatalf("row %d under key %q, want %q", r.Seq, r.KeyID, wantKey)
			}
			if bytes.Contains(r.Payload, []byte("amount")) {
				t.Fatalf("row %d payload stored in plaintext", r.Seq)
			}
			if r.Hash != receipts[i].Hash {
				t.Fatalf("row %d hash changed", r.Seq)
			}
			i++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	check("k1")
	root, _ := l.Root(300)
	newKey, _ := keyring.NewKey()
	if err := ring.Rotate("k2", newKey); err != nil {
		t.Fatal(err)
	}
	if by, err := l.SealedBy(ctx); err != nil || len(by) != 1 || by["k1"] != 300 {
		t.Fatalf("SealedBy before Reencrypt = %v, %v; want k1:300", by, err)
	}
	n, err := l.Reencrypt(ctx)
	if err != nil || n != 300 {
		t.Fatalf("Reencrypt = %d, %v; want 300", n, err)
	}
	check("k2")
	if by, err := auditlog.SealedBy(ctx, st); err != nil || len(by) != 1 || by["k2"] != 300 {
		t.Fatalf("SealedBy after Reencrypt = %v, %v; want k2:300", by, err)
	}
	if again, _ := l.Reencrypt(ctx); again != 0 {
		t.Fatalf("second Reencrypt redid %d rows", again)
	}
	// A ring holding only the new key reads everything: the old key can be
	// retired.
	only, _ := keyring.NewRing("k2", map[string]keyring.Key{"k2": newKey})
	got := storetest.Balances{}
	head, err := auditlog.Replay(ctx, st, only, got.Fold)
	if err != nil || head.Size != 300 || got["b"] != 300*301/2 {
		t.Fatalf("Replay with the new key only: %+v %v %v", head, err, got["b"])
	}
	if root2, _ := l.Root(300); root2 != root {
		t.Fatal("re-encryption changed the Merkle root")
	}
	// Without any key the payload cannot be read.
	if _, err := auditlog.Replay(ctx, st, newRing(t, "k2"), nil); err == nil {
		t.Fatal("Replay opened payloads with a wrong key")
	}
}

func TestReplayDetectsTampering(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	f := storetest.NewFixture(t, st)
	st.Tamper(func(rows *[]auditlog.Record, _ *[][]byte) { (*rows)[4].Actor = "mallory" })
	_, err := auditlog.Replay(ctx, st, f.Ring, nil)
	if !errors.Is(err, auditlog.ErrTampered) {
		t.Fatalf("Replay over a modified row = %v, want ErrTampered", err)
	}
	st2 := memstore.New()
	f2 := storetest.NewFixture(t, st2)
	st2.Tamper(func(rows *[]auditlog.Record, _ *[][]byte) { *rows = append((*rows)[:3], (*rows)[4:]...) })
	if _, err := auditlog.Replay(ctx, st2, f2.Ring, nil); !errors.Is(err, auditlog.ErrTampered) {
		t.Fatalf("Replay over a deleted row = %v, want ErrTampered", err)
	}
}

func TestNewRefusesStoreBehindWitness(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	f := storetest.NewFixture(t, st)
	st.Tamper(func(rows *[]auditlog.Record, cps *[][]byte) { *rows, *cps = (*rows)[:8], (*cps)[:2] })
	_, err := auditlog.New(auditlog.Config{Store: st, Origin: f.Origin, Signers: []note.Signer{f.Signer}, Ring: f.Ring, Witness: f.Witness})
	if !errors.Is(err, auditlog.ErrRollback) {
		t.Fatalf("New over a truncated store = %v, want ErrRollback", err)
	}
	_ = ctx
}

func TestNewRefusesStoreContradictingItsCheckpoint(t *testing.T) {
	st := memstore.New()
	f := storetest.NewFixture(t, st)
	st.Tamper(func(rows *[]auditlog.Record, _ *[][]byte) {
		r := &(*rows)[11]
		r.Actor = "x"
		r.Hash = auditlog.LeafHash(r, nil)
	})
	_, err := auditlog.New(auditlog.Config{Store: st, Origin: f.Origin, Signers: []note.Signer{f.Signer}, Ring: f.Ring})
	if !errors.Is(err, auditlog.ErrTampered) {
		t.Fatalf("New = %v, want ErrTampered", err)
	}
}

func TestWitnessRefuses(t *testing.T) {
	ctx := context.Background()
	f := storetest.NewFixture(t, memstore.New())
	sign := func(size uint64, root auditlog.Hash, s note.Signer) []byte {
		b, err := auditlog.SignCheckpoint(auditlog.Checkpoint{Origin: f.Origin, Size: size, Root: root}, s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	latest, _ := f.Witness.Latest(ctx)
	cp, _, err := auditlog.OpenCheckpoint(latest, f.Origin, note.VerifierList(f.Verifiers...))
	if err != nil || cp.Size != 12 {
		t.Fatalf("witness latest = %+v, %v", cp, err)
	}
	intruder := newKeys(t, "intruder")
	cases := []struct {
		name   string
		signed []byte
		proof  [][]byte
		want   error
	}{
		{"rollback", sign(8, auditlog.Hash{}, f.Signer), nil, auditlog.ErrRollback},
		{"same size other root", sign(12, auditlog.Hash{1}, f.Signer), nil, auditlog.ErrFork},
		{"no consistency proof", sign(13, auditlog.Hash{1}, f.Signer), nil, auditlog.ErrFork},
		{"bogus consistency proof", sign(13, auditlog.Hash{1}, f.Signer), [][]byte{make([]byte, 32), make([]byte, 32)}, auditlog.ErrFork},
		{"unknown key", sign(13, auditlog.Hash{1}, intruder.signer), nil, auditlog.ErrCheckpoint},
	}
	for _, c := range cases {
		if err := f.Witness.Publish(ctx, c.signed, c.proof); !errors.Is(err, c.want) {
			t.Errorf("%s: Publish = %v, want %v", c.name, err, c.want)
		}
	}
	if again, _ := f.Witness.Latest(ctx); !bytes.Equal(again, latest) {
		t.Fatal("a refused checkpoint replaced the witness's latest")
	}
}

func TestCheckpointIntervalWithFakeClock(t *testing.T) {
	ctx := context.Background()
	k := newKeys(t, "k")
	c := fakeclock.New(time.Unix(1_700_000_000, 0))
	st := memstore.New()
	l := newLog(t, auditlog.Config{Store: st, Origin: origin, Signers: []note.Signer{k.signer}, Plaintext: true,
		Now: c.Now, CheckpointInterval: time.Hour})
	if _, err := l.Append(ctx, auditlog.Event{Type: "t"}); err != nil {
		t.Fatal(err)
	}
	if cp := l.LatestCheckpoint(); cp.Note != nil {
		t.Fatalf("checkpoint issued before the interval: %+v", cp.Checkpoint)
	}
	c.Advance(time.Hour)
	if _, err := l.Append(ctx, auditlog.Event{Type: "t"}); err != nil {
		t.Fatal(err)
	}
	// The committer issues the checkpoint right after the batch; Checkpoint
	// waits for it through the checkpoint lock.
	cp, err := l.Checkpoint(ctx)
	if err != nil || cp.Size != 2 {
		t.Fatalf("checkpoint after the interval: %+v, %v", cp.Checkpoint, err)
	}
	n := 0
	st.Checkpoints(ctx, func([]byte) error { n++; return nil })
	if n != 1 {
		t.Fatalf("%d checkpoints stored, want exactly 1 (no duplicate for an unchanged size)", n)
	}
}

func TestProofsFromLog(t *testing.T) {
	ctx := context.Background()
	k := newKeys(t, "k")
	l := newLog(t, auditlog.Config{Store: memstore.New(), Origin: origin, Signers: []note.Signer{k.signer}, Plaintext: true})
	var rs []auditlog.Receipt
	for i := range 37 {
		r, err := l.Append(ctx, auditlog.Event{Type: "t", Payload: json.RawMessage(`{"i":` + string(rune('0'+i%10)) + `}`)})
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	for size := uint64(1); size <= 37; size++ {
		root, _ := l.Root(size)
		for i := uint64(0); i < size; i++ {
			p, err := l.InclusionProof(i, size)
			if err != nil {
				t.Fatal(err)
			}
			if err := auditlog.VerifyInclusion(i, size, rs[i].Hash, p, root); err != nil {
				t.Fatalf("inclusion %d/%d: %v", i, size, err)
			}
			if i+1 < size {
				if err := auditlog.VerifyInclusion(i+1, size, rs[i].Hash, p, root); err == nil {
					t.Fatalf("inclusion proof of %d verified at index %d", i, i+1)
				}
			}
		}
		for s1 := uint64(0); s1 <= size; s1++ {
			r1, _ := l.Root(s1)
			p, err := l.ConsistencyProof(s1, size)
			if err != nil {
				t.Fatal(err)
			}
			if err := auditlog.VerifyConsistency(s1, size, p, r1, root); err != nil {
				t.Fatalf("consistency %d→%d: %v", s1, size, err)
			}
		}
	}
}

func TestSample(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	f := storetest.NewFixture(t, st)
	l := newLog(t, auditlog.Config{Store: st, Origin: f.Origin, Signers: []note.Signer{f.Signer}, Ring: f.Ring})
	s, err := l.Sample(ctx, auditlog.SampleConfig{N: 5, Redact: []string{"actor", "payload.from"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Rows) != 5 || s.Rows[0].Seq != 7 || s.Rows[4].Seq != 11 {
		t.Fatalf("sample rows: %+v", s.Rows)
	}
	for _, r := range s.Rows {
		if r.Actor != "" || bytes.Contains(r.Payload, []byte(`"from"`)) || !bytes.Contains(r.Payload, []byte(`"amount"`)) {
			t.Fatalf("row %d not redacted as asked: %q %s", r.Seq, r.Actor, r.Payload)
		}
	}
	b, _ := json.Marshal(s)
	var back auditlog.Sample
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if err := auditlog.VerifySample(&back, f.Origin, f.Verifiers); err != nil {
		t.Fatalf("sample does not verify: %v", err)
	}
	back.Rows[2].Hash[0] ^= 1
	if err := auditlog.VerifySample(&back, f.Origin, f.Verifiers); !errors.Is(err, auditlog.ErrProof) {
		t.Fatalf("sample with a changed leaf hash = %v, want ErrProof", err)
	}
	// Unredacted rows prove their fields too.
	full, err := l.Sample(ctx, auditlog.SampleConfig{N: 3})
	if err != nil {
		t.Fatal(err)
	}
	full.Rows[1].Actor = "someone-else"
	if err := auditlog.VerifySample(full, f.Origin, f.Verifiers); !errors.Is(err, auditlog.ErrProof) {
		t.Fatalf("sample with a changed actor = %v, want ErrProof", err)
	}
	if _, err := l.Sample(ctx, auditlog.SampleConfig{Redact: []string{"hash"}}); !errors.Is(err, auditlog.ErrInvalidConfig) {
		t.Fatalf("redacting an unknown field = %v", err)
	}
}

func TestExportRoundTrip(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	f := storetest.NewFixture(t, st)
	for _, ring := range []*keyring.Ring{nil, f.Ring} {
		exp, err := auditlog.LoadExport(ctx, st, f.Origin, ring)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := exp.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		back, err := auditlog.ReadExport(&buf)
		if err != nil {
			t.Fatal(err)
		}
		rep := auditlog.Verify(ctx, back, auditlog.VerifyConfig{Origin: f.Origin, Verifiers: f.Verifiers, Trusted: f.Trusted, Ring: f.Ring})
		if len(rep.Findings) != 0 || rep.Rows != 12 {
			t.Fatalf("round-tripped export (ring %v): %+v", ring != nil, rep)
		}
	}
}

func TestVerifySealedWithoutKeysIsUnreadable(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	f := storetest.NewFixture(t, st)
	exp, _ := auditlog.LoadExport(ctx, st, f.Origin, nil)
	rep := auditlog.Verify(ctx, exp, auditlog.VerifyConfig{Origin: f.Origin, Verifiers: f.Verifiers})
	if !rep.Has(auditlog.FindingUnreadable, 0) || rep.OK() {
		t.Fatalf("sealed export verified without keys: %v", rep.Findings)
	}
}

func TestKeyRotationTwoSigners(t *testing.T) {
	ctx := context.Background()
	oldKey, newKey := newKeys(t, "audit-2025"), newKeys(t, "audit-2026")
	st := memstore.New()
	l := newLog(t, auditlog.Config{Store: st, Origin: origin, Signers: []note.Signer{oldKey.signer, newKey.signer}, Plaintext: true})
	if _, err := l.Append(ctx, auditlog.Event{Type: "t"}); err != nil {
		t.Fatal(err)
	}
	cp, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []note.Verifier{oldKey.verifier, newKey.verifier} {
		if _, names, err := auditlog.OpenCheckpoint(cp.Note, origin, note.VerifierList(v)); err != nil || len(names) != 1 {
			t.Fatalf("checkpoint with verifier %s: %v %v", v.Name(), names, err)
		}
	}
	exp, _ := auditlog.LoadExport(ctx, st, origin, nil)
	rep := auditlog.Verify(ctx, exp, auditlog.VerifyConfig{Origin: origin, Verifiers: []note.Verifier{newKey.verifier}})
	if len(rep.Findings) != 0 {
		t.Fatalf("verifying with the new key only: %v", rep.Findings)
	}
}

// flakyStore fails Append on demand: before writing (a clean failure) or
// after writing (the acknowledgement is lost, as when a connection drops
// during COMMIT).
type flakyStore struct {
	auditlog.Store
	mu          sync.Mutex
	failBefore  int
	failAfter   int
	appendCalls int
}

var errInjected = errors.New("injected store failure")

func (f *flakyStore) Append(ctx context.Context, recs []auditlog.Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.appendCalls++
	if f.failBefore > 0 {
		f.failBefore--
		return errInjected
	}
	if err := f.Store.Append(ctx, recs); err != nil {
		return err
	}
	if f.failAfter > 0 {
		f.failAfter--
		return errInjected
	}
	return nil
}

func TestStoreFailures(t *testing.T) {
	ctx := context.Background()
	k := newKeys(t, "k")
	st := &flakyStore{Store: memstore.New(), failBefore: 1}
	l := newLog(t, auditlog.Config{Store: st, Origin: origin, Signers: []note.Signer{k.signer}, Plaintext: true})
	if _, err := l.Append(ctx, auditlog.Event{Type: "a"}); !errors.Is(err, errInjected) {
		t.Fatalf("Append over a failing store = %v, want the store's error", err)
	}
	r, err := l.Append(ctx, auditlog.Event{Type: "b"})
	if err != nil || r.Seq != 0 {
		t.Fatalf("Append after a clean failure = %+v, %v; want seq 0", r, err)
	}
	// Lost acknowledgement: the row is stored but the caller sees an error.
	st.mu.Lock()
	st.failAfter = 1
	st.mu.Unlock()
	if _, err := l.Append(ctx, auditlog.Event{Type: "c"}); !errors.Is(err, errInjected) {
		t.Fatalf("Append with a lost ack = %v", err)
	}
	// The next append finds the store ahead, catches up and continues the
	// chain after the row it did not know was committed.
	r, err = l.Append(ctx, auditlog.Event{Type: "d"})
	if err != nil || r.Seq != 2 {
		t.Fatalf("Append after a lost ack = %+v, %v; want seq 2", r, err)
	}
	var types []string
	head, err := auditlog.Replay(ctx, st, nil, func(e auditlog.Event) error { types = append(types, e.Type); return nil })
	if err != nil || head.Size != 3 || strings.Join(types, "") != "bcd" {
		t.Fatalf("Replay = %+v %v %v", head, types, err)
	}
	if h := l.Head(); h != head {
		t.Fatalf("log head %+v, store head %+v", h, head)
	}
}

// OnCommit sees every commit: its events, a duration, conditional ones,
// and failures.
func TestOnCommitReportsCommits(t *testing.T) {
	k := newKeys(t, "k")
	var mu sync.Mutex
	var commits []auditlog.CommitEvent
	store := memstore.New()
	l := newLog(t, auditlog.Config{Store: store, Origin: origin, Signers: []note.Signer{k.signer}, Plaintext: true,
		OnCommit: func(e auditlog.CommitEvent) {
			mu.Lock()
			commits = append(commits, e)
			mu.Unlock()
		}})
	defer l.Close()
	ctx := context.Background()
	if _, err := l.AppendBatch(ctx, []auditlog.Event{{Type: "a"}, {Type: "b"}, {Type: "c"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AppendIf(ctx, l.Head(), []auditlog.Event{{Type: "d"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AppendIf(ctx, auditlog.Head{}, []auditlog.Event{{Type: "e"}}); !errors.Is(err, auditlog.ErrConflict) {
		t.Fatalf("stale AppendIf: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	events, conditional := 0, 0
	for _, c := range commits {
		if c.Err != nil {
			t.Fatalf("commit failed: %+v", c)
		}
		if c.Duration < 0 {
			t.Fatalf("negative duration %+v", c)
		}
		events += c.Events
		if c.Conditional {
			conditional++
		}
	}
	if events != 4 || conditional != 1 {
		t.Fatalf("commits %+v: %d events, %d conditional; want 4 and 1 (a refused AppendIf never reaches the store)", commits, events, conditional)
	}
}
