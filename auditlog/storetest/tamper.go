package storetest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/memstore"
	"github.com/malai-sec/malai/keyring"
)

// Rewriter replaces everything stored in s with what fn returns, bypassing
// every guard of the store, as an attacker with raw write access to the
// storage would; it returns the store to read from afterwards (a reopened
// one if needed).
type Rewriter func(t *testing.T, s auditlog.Store, fn func(rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte)) auditlog.Store

// TamperOptions describe what a store can express.
type TamperOptions struct {
	// SortedBySeq is set when the store returns rows in sequence order
	// whatever was written and refuses two rows with one sequence number
	// (PostgreSQL's primary key): reordering and duplicates cannot occur.
	SortedBySeq bool
}

// Fixture is a signed, sealed, witnessed log for tamper tests.
type Fixture struct {
	Origin    string
	Signer    note.Signer
	Verifiers []note.Verifier
	Ring      *keyring.Ring
	Witness   *auditlog.CheckpointWitness
	Log       *auditlog.Log
	Store     auditlog.Store
	Trusted   [][]byte
}

// NewFixture appends 12 transfer events to s, with checkpoints at sizes 2,
// 8 and 12 (all witnessed), then closes the log.
func NewFixture(t *testing.T, s auditlog.Store) *Fixture {
	t.Helper()
	ctx := context.Background()
	f := &Fixture{Origin: "malai.test/audit", Store: s}
	skey, vkey, err := note.GenerateKey(rand.Reader, "audit-key-1")
	if err != nil {
		t.Fatal(err)
	}
	f.Signer, _ = note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	f.Verifiers = []note.Verifier{v}
	k, _ := keyring.NewKey()
	f.Ring, err = keyring.NewRing("k1", map[string]keyring.Key{"k1": k})
	if err != nil {
		t.Fatal(err)
	}
	f.Witness, err = auditlog.NewWitness(ctx, auditlog.WitnessConfig{Store: memstore.New(), Origin: f.Origin, Verifiers: f.Verifiers})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	f.Log, err = auditlog.New(auditlog.Config{Store: s, Origin: f.Origin, Signers: []note.Signer{f.Signer},
		Witness: f.Witness, Ring: f.Ring, Now: func() time.Time { return now }, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		if _, err := f.Log.Append(ctx, Transfer(fmt.Sprintf("user-%d", i%3), "a", "b", int64(i+1))); err != nil {
			t.Fatal(err)
		}
		if i == 1 || i == 7 || i == 11 {
			cp, err := f.Log.Checkpoint(ctx)
			if err != nil {
				t.Fatal(err)
			}
			f.Trusted = append(f.Trusted, cp.Note)
		}
	}
	if err := f.Log.Close(); err != nil {
		t.Fatal(err)
	}
	return f
}

// Transfer is a ledger transfer event.
func Transfer(actor, from, to string, amount int64) auditlog.Event {
	p, _ := json.Marshal(map[string]any{"from": from, "to": to, "amount": amount})
	return auditlog.Event{Type: "ledger.transfer", Actor: actor, CorrelationID: "req-" + actor, Payload: p}
}

// Balances folds transfer events into balances.
type Balances map[string]int64

// Fold applies one event.
func (b Balances) Fold(e auditlog.Event) error {
	if e.Type != "ledger.transfer" {
		return fmt.Errorf("unknown event type %q", e.Type)
	}
	var p struct {
		From, To string
		Amount   int64
	}
	if err := json.Unmarshal(e.Payload, &p); err != nil {
		return err
	}
	b[p.From] -= p.Amount
	b[p.To] += p.Amount
	return nil
}

// Verify exports the store and verifies it with the fixture's keys.
func (f *Fixture) Verify(t *testing.T, s auditlog.Store, trusted [][]byte, fold func(auditlog.Event) error, expect func() error) auditlog.Report {
	t.Helper()
	exp, err := auditlog.LoadExport(context.Background(), s, f.Origin, f.Ring)
	if err != nil {
		t.Fatal(err)
	}
	return auditlog.Verify(context.Background(), exp, auditlog.VerifyConfig{Origin: f.Origin, Verifiers: f.Verifiers,
		Trusted: trusted, Ring: f.Ring, Fold: fold, Expect: expect})
}

func (f *Fixture) sign(t *testing.T, c auditlog.Checkpoint, signers ...note.Signer) []byte {
	t.Helper()
	if len(signers) == 0 {
		signers = []note.Signer{f.Signer}
	}
	b, err := auditlog.SignCheckpoint(c, signers...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rechain(rows []auditlog.Record, from int) {
	for i := from; i < len(rows); i++ {
		r := &rows[i]
		if i > 0 {
			r.PrevHash = rows[i-1].Hash
		}
		r.Seq = uint64(i)
		r.KeyID = ""
		r.Payload = []byte(fmt.Sprintf(`{"from":"a","to":"b","amount":%d}`, i+1))
		r.Hash = auditlog.LeafHash(r, r.Payload)
	}
}

func forge(prev *auditlog.Record, seq uint64) auditlog.Record {
	r := auditlog.Record{Seq: seq, Time: prev.Time, Type: "ledger.transfer", Actor: "mallory",
		Payload: []byte(`{"from":"bank","to":"mallory","amount":1000000}`), PrevHash: prev.Hash}
	r.Hash = auditlog.LeafHash(&r, r.Payload)
	return r
}

// RunTamper runs one tamper scenario per verifier finding against stores
// from newStore, tampering through rewrite, and checks the verifier names
// the finding at the right position.
func RunTamper(t *testing.T, newStore func(t *testing.T) auditlog.Store, rewrite Rewriter, opts TamperOptions) {
	type scenario struct {
		name     string
		unsorted bool // needs a store that keeps rows as written
		tamper   func(t *testing.T, f *Fixture, rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte)
		trusted  func(f *Fixture) [][]byte
		want     auditlog.FindingKind
		pos      int
		replay   bool
	}
	other := func(t *testing.T) note.Signer {
		skey, _, _ := note.GenerateKey(rand.Reader, "intruder")
		s, err := note.NewSigner(skey)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	scenarios := []scenario{
		{name: "Modified", want: auditlog.FindingModified, pos: 3,
			tamper: func(t *testing.T, f *Fixture, rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte) {
				rows[3].Actor = "someone-else"
				return rows, cps
			}},
		{name: "SealedPayloadSwapped", want: auditlog.FindingModified, pos: 4,
			tamper: func(t *testing.T, f *Fixture, rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte) {
				rows[4].Payload = slices.Clone(rows[5].Payload) // moved ciphertext fails its AAD
				return rows, cps
			}},
		{name: "Deleted", want: auditlog.FindingGap, pos: 5,
			tamper: func(t *testing.T, f *Fixture, rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte) {
				return slices.Delete(rows, 5, 6), cps
			}},
		{name: "Reordered", unsorted: true, want: auditlog.FindingReordered, pos: 5,
			tamper: func(t *testing.T, f *Fixture, rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte) {
				rows[4], rows[5] = rows[5], rows[4]
				return rows, cps
			}},
		{name: "Duplicated", unsorted: true, want: auditlog.FindingDuplicate, pos: 7,
			tamper: func(t *testing.T, f *Fixture, rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte) {
				return slices.Insert(rows, 7, rows[6]), cps
			}},
		{name: "ForgedInsertedSameSeq", unsorted: true, want: auditlog.FindingForged, pos: 7,
			tamper: func(t *testing.T, f *Fixture, rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte) {
				return slices.Insert(rows, 7, forge(&rows[5], 6)), cps
			}},
		{name: "ForgedReplacingRow", want: auditlog.FindingForged, pos: 7,
			tamper: func(t *testing.T, f *Fixture, rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte) {
				rows[6] = forge(&rows[5], 6)
				return rows, cps
			}},
		{name: "TruncatedTail", want: auditlog.FindingTruncated, pos: 9,
			tamper: func(t *testing.T, f *Fixture, rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte) {
				return rows[:9], cps
			}},
		{name: "RewrittenHistory", want: auditlog.FindingRewritten, pos: 2,
			tamper: func(t *testing.T, f *Fixture, rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte) {
				rechain(rows, 3) // every hash recomputed: the chain alone looks fine
				return rows, cps
			}},
		{name: "ForkSameSize", want: auditlog.FindingFork, pos: -1,
			tamper: func(t *testing.T, f *Fixture, rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte) {
				c := auditlog.Checkpoint{Origin: f.Origin, Size: 8, Root: auditlog.Hash{1}}
				return rows, append(cps, f.sign(t, c))
			}},
		{name: "ForkAgainstTrusted", want: auditlog.FindingFork, pos: -1,
			trusted: func(f *Fixture) [][]byte {
				other := storetestChainRoot(8)
				return [][]byte{mustSign(f, auditlog.Checkpoint{Origin: f.Origin, Size: 8, Root: other})}
			},
			tamper: func(t *testing.T, f *Fixture, rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte) {
				return rows, cps
			}},
		{name: "RollbackInStore", want: auditlog.FindingRollback, pos: -1,
			tamper: func(t *testing.T, f *Fixture, rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte) {
				return rows, append(cps, cps[1]) // size 8 re-issued after 12
			}},
		{name: "RollbackBelowTrusted", want: auditlog.FindingRollback, pos: -1,
			trusted: func(f *Fixture) [][]byte { return f.Trusted },
			tamper: func(t *testing.T, f *Fixture, rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte) {
				return rows[:8], cps[:2] // drop the tail and the checkpoint covering it
			}},
		{name: "BadSignature", want: auditlog.FindingBadSignature, pos: -1,
			tamper: func(t *testing.T, f *Fixture, rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte) {
				c := flipSignature(t, cps[2])
				cps[2] = c
				return rows, cps
			}},
		{name: "UnknownKey", want: auditlog.FindingUnknownKey, pos: -1,
			tamper: func(t *testing.T, f *Fixture, rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte) {
				c := auditlog.Checkpoint{Origin: f.Origin, Size: 12, Root: auditlog.Hash{2}}
				return rows, append(cps, f.sign(t, c, other(t)))
			}},
		{name: "WrongOrigin", want: auditlog.FindingWrongOrigin, pos: -1,
			tamper: func(t *testing.T, f *Fixture, rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte) {
				c := auditlog.Checkpoint{Origin: "another.log/audit", Size: 12, Root: auditlog.Hash{3}}
				return rows, append(cps, f.sign(t, c))
			}},
		{name: "ReplayDiffers", want: auditlog.FindingReplay, pos: -1, replay: true,
			tamper: func(t *testing.T, f *Fixture, rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte) {
				return rows, cps
			}},
		{name: "Unanchored", want: auditlog.FindingUnanchored, pos: 12,
			tamper: func(t *testing.T, f *Fixture, rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte) {
				return append(rows, forge(&rows[11], 12)), cps
			}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			if sc.unsorted && opts.SortedBySeq {
				t.Skip("the store orders rows by a unique sequence number; this tampering cannot be expressed")
			}
			f := NewFixture(t, newStore(t))
			var fold func(auditlog.Event) error
			var expect func() error
			if sc.replay {
				got := Balances{}
				fold = got.Fold
				expect = func() error {
					app := Balances{"a": -78, "b": 78 + 1} // the application's state disagrees by 1
					if got["b"] != app["b"] {
						return fmt.Errorf("balance of b: replay %d, application %d", got["b"], app["b"])
					}
					return nil
				}
			}
			var trusted [][]byte
			if sc.trusted != nil {
				trusted = sc.trusted(f)
			}
			clean := f.Verify(t, f.Store, trusted, nil, nil)
			s := rewrite(t, f.Store, func(rows []auditlog.Record, cps [][]byte) ([]auditlog.Record, [][]byte) {
				return sc.tamper(t, f, rows, cps)
			})
			rep := f.Verify(t, s, trusted, fold, expect)
			if !rep.Has(sc.want, sc.pos) {
				t.Fatalf("want finding %s at position %d; got %v (before tampering: %v)", sc.want, sc.pos, rep.Findings, clean.Findings)
			}
			if sc.want == auditlog.FindingUnanchored {
				if !rep.OK() {
					t.Fatalf("unanchored rows alone must not fail the report: %v", rep.Findings)
				}
			} else if rep.OK() {
				t.Fatalf("report OK despite %s", sc.want)
			}
		})
	}
	t.Run("CleanAndReplayMatches", func(t *testing.T) {
		f := NewFixture(t, newStore(t))
		got := Balances{}
		rep := f.Verify(t, f.Store, f.Trusted, got.Fold, func() error {
			if got["a"] != -78 || got["b"] != 78 {
				return errors.New("balances differ")
			}
			return nil
		})
		if len(rep.Findings) != 0 || rep.Anchored != 12 || rep.Rows != 12 {
			t.Fatalf("clean log: %+v", rep)
		}
	})
}

// storetestChainRoot is the root of a different n-row history.
func storetestChainRoot(n int) auditlog.Hash { return rootOf(Chain(0, auditlog.Hash{}, n)) }

func rootOf(rows []auditlog.Record) auditlog.Hash {
	// RFC 6962 MTH, recursively.
	hs := make([]auditlog.Hash, len(rows))
	for i := range rows {
		hs[i] = rows[i].Hash
	}
	return mth(hs)
}

func mth(hs []auditlog.Hash) auditlog.Hash {
	if len(hs) == 1 {
		return hs[0]
	}
	k := 1
	for k*2 < len(hs) {
		k *= 2
	}
	l, r := mth(hs[:k]), mth(hs[k:])
	return auditlog.NodeHash(l, r)
}

func mustSign(f *Fixture, c auditlog.Checkpoint) []byte {
	b, err := auditlog.SignCheckpoint(c, f.Signer)
	if err != nil {
		panic(err)
	}
	return b
}

// flipSignature flips one bit of the signature (not the key hash) in the
// last signature line of a signed note.
func flipSignature(t *testing.T, signed []byte) []byte {
	t.Helper()
	text := string(signed)
	i := strings.LastIndex(text[:len(text)-1], "\n")
	line := text[i+1 : len(text)-1]
	sp := strings.LastIndex(line, " ")
	raw, err := base64.StdEncoding.DecodeString(line[sp+1:])
	if err != nil || len(raw) < 5 {
		t.Fatalf("signature line %q: %v", line, err)
	}
	raw[len(raw)-1] ^= 1
	return []byte(text[:i+1] + line[:sp+1] + base64.StdEncoding.EncodeToString(raw) + "\n")
}
