package auditlog_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/memstore"
	"github.com/malai-sec/malai/auditlog/storetest"
)

// damagedStore reports damage the way a store over a raw file does.
type damagedStore struct {
	auditlog.Store
	damage []auditlog.Damage
}

func (d damagedStore) Damage() []auditlog.Damage { return d.damage }

func TestDamageIsReportedAndRoundTrips(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	f := storetest.NewFixture(t, st)
	src := damagedStore{Store: st, damage: []auditlog.Damage{
		{Position: 5, Offset: 1234, Length: 99, Detail: "checksum mismatch"},
		{Position: 12, Offset: 9000, Length: 7, Torn: true},
	}}
	exp, err := auditlog.LoadExport(ctx, src, f.Origin, f.Ring)
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
	if len(back.Damage) != 2 || back.Damage[0] != src.damage[0] || back.Damage[1] != src.damage[1] {
		t.Fatalf("damage after the round trip = %+v", back.Damage)
	}
	rep := auditlog.Verify(ctx, back, auditlog.VerifyConfig{Origin: f.Origin, Verifiers: f.Verifiers, Trusted: f.Trusted, Ring: f.Ring})
	if rep.OK() || !rep.Has(auditlog.FindingCorrupt, 5) || !rep.Has(auditlog.FindingTorn, 12) {
		t.Fatalf("findings = %v", rep.Findings)
	}
	// a torn tail alone is a warning
	back.Damage = back.Damage[1:]
	if rep := auditlog.Verify(ctx, back, auditlog.VerifyConfig{Origin: f.Origin, Verifiers: f.Verifiers, Trusted: f.Trusted, Ring: f.Ring}); !rep.OK() {
		t.Fatalf("a torn tail alone fails verification: %v", rep.Findings)
	}
}

func TestNewSkipsCheckpointsItDidNotSign(t *testing.T) {
	ctx := context.Background()
	k := newKeys(t, "audit")
	st := memstore.New()
	l := newLog(t, auditlog.Config{Store: st, Origin: origin, Signers: []note.Signer{k.signer}, Plaintext: true})
	for range 4 {
		if _, err := l.Append(ctx, auditlog.Event{Type: "t"}); err != nil {
			t.Fatal(err)
		}
	}
	own, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()

	mallory := newKeys(t, "audit") // same name, another key
	forged, err := auditlog.SignCheckpoint(auditlog.Checkpoint{Origin: origin, Size: 2}, mallory.signer)
	if err != nil {
		t.Fatal(err)
	}
	wrongRoot, err := auditlog.SignCheckpoint(auditlog.Checkpoint{Origin: origin, Size: 4}, mallory.signer)
	if err != nil {
		t.Fatal(err)
	}
	// Written past the store's ordering (AddCheckpoint refuses the last
	// two), as whoever can write the store's files or table directly can.
	st.Tamper(func(_ *[]auditlog.Record, cps *[][]byte) {
		*cps = append(*cps, []byte("garbage"), wrongRoot, forged)
	})
	var reported []error
	l2, err := auditlog.New(auditlog.Config{Store: st, Origin: origin, Signers: []note.Signer{k.signer}, Plaintext: true,
		OnError: func(err error) { reported = append(reported, err) }})
	if err != nil {
		t.Fatalf("New over a store holding checkpoints it did not sign = %v, want them skipped", err)
	}
	defer l2.Close()
	if got := l2.LatestCheckpoint(); !bytes.Equal(got.Note, own.Note) {
		t.Fatalf("adopted checkpoint of size %d, want the log's own", got.Size)
	}
	if len(reported) != 1 || !errors.Is(reported[0], auditlog.ErrCheckpoint) {
		t.Fatalf("skipped checkpoints reported as %v", reported)
	}
	exp, _ := auditlog.LoadExport(ctx, st, origin, nil)
	rep := auditlog.Verify(ctx, exp, auditlog.VerifyConfig{Origin: origin, Verifiers: []note.Verifier{k.verifier}})
	for _, want := range []struct {
		kind auditlog.FindingKind
		idx  int
	}{{auditlog.FindingMalformedCheckpoint, 1}, {auditlog.FindingUnknownKey, 2}, {auditlog.FindingUnknownKey, 3}} {
		found := false
		for _, f := range rep.Findings {
			found = found || f.Kind == want.kind && f.Checkpoint == want.idx
		}
		if !found {
			t.Fatalf("verify does not report %s at checkpoint %d: %v", want.kind, want.idx, rep.Findings)
		}
	}
}

func TestNewStillRefusesItsOwnCheckpointContradicted(t *testing.T) {
	// A checkpoint the log signed that the rows no longer match is
	// tampering, not noise: New refuses it even after forged ones.
	ctx := context.Background()
	k := newKeys(t, "audit")
	st := memstore.New()
	own, err := auditlog.SignCheckpoint(auditlog.Checkpoint{Origin: origin, Size: 0, Root: auditlog.Hash{1}}, k.signer)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AddCheckpoint(ctx, own); err != nil {
		t.Fatal(err)
	}
	if err := st.AddCheckpoint(ctx, []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	if _, err := auditlog.New(auditlog.Config{Store: st, Origin: origin, Signers: []note.Signer{k.signer}, Plaintext: true}); !errors.Is(err, auditlog.ErrTampered) {
		t.Fatalf("New = %v, want ErrTampered", err)
	}
}

func TestCheckpointForkIsLoud(t *testing.T) {
	// A checkpoint of the log's next size with another root, signed by
	// the log's key (another process writing a history of its own), is
	// a fork: the log's checkpoint at that size fails loudly.
	ctx := context.Background()
	k := newKeys(t, "audit")
	st := memstore.New()
	l := newLog(t, auditlog.Config{Store: st, Origin: origin, Signers: []note.Signer{k.signer}, Plaintext: true})
	if _, err := l.Append(ctx, auditlog.Event{Type: "t"}); err != nil {
		t.Fatal(err)
	}
	other, err := auditlog.SignCheckpoint(auditlog.Checkpoint{Origin: origin, Size: 1, Root: auditlog.Hash{7}}, k.signer)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AddCheckpoint(ctx, other); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Checkpoint(ctx); !errors.Is(err, auditlog.ErrFork) {
		t.Fatalf("Checkpoint over a stored fork = %v, want ErrFork", err)
	}
	if err := l.Close(); !errors.Is(err, auditlog.ErrFork) {
		t.Fatalf("Close over a stored fork = %v, want ErrFork", err)
	}
}
