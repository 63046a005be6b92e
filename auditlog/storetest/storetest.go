// Package storetest is the conformance suite every [auditlog.Store]
// implementation runs: memstore, filestore and pgstore call
// storetest.Run(t, newStore).
package storetest

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
)

// Chain returns n consecutive, correctly hashed plaintext records starting
// at seq from after prev.
func Chain(from uint64, prev auditlog.Hash, n int) []auditlog.Record {
	out := make([]auditlog.Record, n)
	for i := range out {
		seq := from + uint64(i)
		r := auditlog.Record{
			Seq: seq, Time: int64(1_700_000_000_000_000_000 + seq), Type: "ledger.transfer",
			Actor: fmt.Sprintf("user-%d", seq%7), CorrelationID: fmt.Sprintf("req-%d", seq),
			Payload: []byte(fmt.Sprintf(`{"from":"a","to":"b","amount":%d}`, seq+1)), PrevHash: prev,
		}
		r.Hash = auditlog.LeafHash(&r, r.Payload)
		prev = r.Hash
		out[i] = r
	}
	return out
}

func scanAll(t *testing.T, s auditlog.Store, from uint64) []auditlog.Record {
	t.Helper()
	var out []auditlog.Record
	err := s.Scan(context.Background(), from, func(r auditlog.Record) error {
		r.Payload = bytes.Clone(r.Payload)
		out = append(out, r)
		return nil
	})
	if err != nil {
		t.Fatalf("Scan(%d): %v", from, err)
	}
	return out
}

// Run runs the suite. newStore returns a new, empty store; the suite
// closes it.
func Run(t *testing.T, newStore func(t *testing.T) auditlog.Store) {
	ctx := context.Background()
	open := func(t *testing.T) auditlog.Store {
		s := newStore(t)
		t.Cleanup(func() { s.Close() })
		return s
	}

	t.Run("EmptyHead", func(t *testing.T) {
		s := open(t)
		h, err := s.Head(ctx)
		if err != nil || h != (auditlog.Head{}) {
			t.Fatalf("Head = %+v, %v; want zero", h, err)
		}
		if got := scanAll(t, s, 0); len(got) != 0 {
			t.Fatalf("Scan on empty store returned %d rows", len(got))
		}
	})

	t.Run("AppendScanRoundTrip", func(t *testing.T) {
		s := open(t)
		want := Chain(0, auditlog.Hash{}, 10)
		want[3].Payload = nil // no payload
		want[3].Hash = auditlog.LeafHash(&want[3], nil)
		want = Relink(want)
		want[5].KeyID = "k1" // sealed-looking payloads are opaque bytes to a store
		if err := s.Append(ctx, want[:4]); err != nil {
			t.Fatal(err)
		}
		if err := s.Append(ctx, want[4:]); err != nil {
			t.Fatal(err)
		}
		got := scanAll(t, s, 0)
		if d := cmp.Diff(want, got, cmp.Comparer(bytes.Equal)); d != "" {
			t.Fatalf("rows differ (-want +got):\n%s", d)
		}
		if d := cmp.Diff(want[7:], scanAll(t, s, 7), cmp.Comparer(bytes.Equal)); d != "" {
			t.Fatalf("Scan(7) differs:\n%s", d)
		}
		if got := scanAll(t, s, 10); len(got) != 0 {
			t.Fatalf("Scan(10) = %d rows, want 0", len(got))
		}
		h, err := s.Head(ctx)
		if err != nil || h.Size != 10 || h.Last != want[9].Hash {
			t.Fatalf("Head = %+v, %v", h, err)
		}
	})

	t.Run("ScanStopsOnError", func(t *testing.T) {
		s := open(t)
		if err := s.Append(ctx, Chain(0, auditlog.Hash{}, 5)); err != nil {
			t.Fatal(err)
		}
		stop := errors.New("stop")
		n := 0
		err := s.Scan(ctx, 0, func(auditlog.Record) error { n++; return stop })
		if !errors.Is(err, stop) || n != 1 {
			t.Fatalf("Scan = %v after %d rows; want the callback's error after 1", err, n)
		}
	})

	t.Run("ConflictAppendsNothing", func(t *testing.T) {
		s := open(t)
		first := Chain(0, auditlog.Hash{}, 3)
		if err := s.Append(ctx, first); err != nil {
			t.Fatal(err)
		}
		cases := map[string][]auditlog.Record{
			"seq behind":     Chain(2, first[1].Hash, 2),
			"seq ahead":      Chain(4, first[2].Hash, 2),
			"wrong prev":     Chain(3, first[1].Hash, 2),
			"not contiguous": append(Chain(3, first[2].Hash, 1), Chain(5, first[2].Hash, 1)...),
		}
		for name, batch := range cases {
			if err := s.Append(ctx, batch); !errors.Is(err, auditlog.ErrConflict) {
				t.Errorf("%s: Append = %v, want ErrConflict", name, err)
			}
		}
		if h, _ := s.Head(ctx); h.Size != 3 || h.Last != first[2].Hash {
			t.Fatalf("Head after refused appends = %+v", h)
		}
		if got := scanAll(t, s, 0); len(got) != 3 {
			t.Fatalf("%d rows after refused appends, want 3", len(got))
		}
	})

	t.Run("Checkpoints", func(t *testing.T) {
		s := open(t)
		if lc, ok := s.(auditlog.LatestCheckpointer); ok {
			if c, err := lc.LatestCheckpoint(ctx); c != nil || err != nil {
				t.Fatalf("LatestCheckpoint on an empty store = %q, %v", c, err)
			}
		}
		// well-formed notes: a store may refuse other bytes (pgstore does)
		root := strings.Repeat("A", 43) + "="
		want := [][]byte{[]byte("a\n1\n" + root + "\n\n— k c2lnbmF0dXJl\n"), []byte("a\n2\n" + root + "\n\n— k c2lnbmF0dXJl\n")}
		for _, c := range want {
			if err := s.AddCheckpoint(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
		var got [][]byte
		if err := s.Checkpoints(ctx, func(c []byte) error { got = append(got, bytes.Clone(c)); return nil }); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Fatalf("checkpoints differ:\n%s", d)
		}
		if lc, ok := s.(auditlog.LatestCheckpointer); ok {
			if c, err := lc.LatestCheckpoint(ctx); !bytes.Equal(c, want[1]) || err != nil {
				t.Fatalf("LatestCheckpoint = %q, %v; want the newest", c, err)
			}
		}
	})

	t.Run("CheckpointOrder", func(t *testing.T) {
		s := open(t)
		cp := func(size uint64, root byte) []byte {
			r := auditlog.Hash{root}
			return []byte(fmt.Sprintf("a\n%d\n%s\n\n— k c2lnbmF0dXJl\n", size, base64.StdEncoding.EncodeToString(r[:])))
		}
		// the third: the same size and root under another signature
		kept := [][]byte{cp(2, 1), cp(5, 1), []byte(strings.Replace(string(cp(5, 1)), "c2lnbmF0dXJl", "b3RoZXI=", 1))}
		for _, c := range kept {
			if err := s.AddCheckpoint(ctx, c); err != nil {
				t.Fatalf("AddCheckpoint(%q) = %v", c, err)
			}
		}
		if err := s.AddCheckpoint(ctx, kept[2]); err != nil {
			t.Fatalf("AddCheckpoint of the newest again = %v, want nil", err)
		}
		if err := s.AddCheckpoint(ctx, cp(4, 1)); !errors.Is(err, auditlog.ErrStaleCheckpoint) {
			t.Errorf("AddCheckpoint of a smaller checkpoint = %v, want ErrStaleCheckpoint", err)
		}
		if err := s.AddCheckpoint(ctx, cp(5, 2)); !errors.Is(err, auditlog.ErrFork) {
			t.Errorf("AddCheckpoint of another root at the same size = %v, want ErrFork", err)
		}
		// Racing offers: whatever their timing, sizes never go down.
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				err := s.AddCheckpoint(ctx, cp(uint64(6+i), 1))
				if err != nil && !errors.Is(err, auditlog.ErrStaleCheckpoint) {
					t.Errorf("AddCheckpoint(size %d) = %v", 6+i, err)
				}
			})
		}
		wg.Wait()
		var got []uint64
		if err := s.Checkpoints(ctx, func(c []byte) error {
			p, err := auditlog.ParseSignedCheckpoint(c)
			got = append(got, p.Size)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if len(got) < 4 || !slices.Equal(got[:3], []uint64{2, 5, 5}) || got[3] <= 5 || !slices.IsSorted(got) {
			t.Fatalf("stored checkpoint sizes %v: want 2 5 5 and then ascending", got)
		}
	})

	t.Run("Rekey", func(t *testing.T) {
		s := open(t)
		rows := Chain(0, auditlog.Hash{}, 4)
		for i := range rows {
			rows[i].KeyID = "old"
		}
		if err := s.Append(ctx, rows); err != nil {
			t.Fatal(err)
		}
		err := s.Rekey(ctx, []auditlog.Rekeyed{
			{Seq: 1, OldKeyID: "old", KeyID: "new", Payload: []byte("sealed-1")},
			{Seq: 2, OldKeyID: "other", KeyID: "new", Payload: []byte("sealed-2")},
		})
		if !errors.Is(err, auditlog.ErrConflict) {
			t.Fatalf("Rekey with a stale key id = %v, want ErrConflict", err)
		}
		got := scanAll(t, s, 0)
		if got[1].KeyID != "new" || string(got[1].Payload) != "sealed-1" {
			t.Fatalf("row 1 after Rekey = %q %q", got[1].KeyID, got[1].Payload)
		}
		if got[2].KeyID != "old" || !bytes.Equal(got[2].Payload, rows[2].Payload) {
			t.Fatalf("row 2 changed despite the conflict")
		}
		for i := range got {
			if got[i].Hash != rows[i].Hash || got[i].PrevHash != rows[i].PrevHash || got[i].Seq != rows[i].Seq {
				t.Fatalf("Rekey changed row %d's chain fields", i)
			}
		}
	})

	t.Run("ConcurrentLogAppends", func(t *testing.T) {
		s := open(t)
		l := newLog(t, s)
		const workers, each = 16, 25
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					_, err := l.Append(ctx, auditlog.Event{Type: "t", Actor: fmt.Sprint(w), Payload: []byte(fmt.Sprint(i))})
					if err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		head, err := auditlog.Replay(ctx, s, nil, nil)
		if err != nil || head.Size != workers*each {
			t.Fatalf("Replay = %+v, %v; want %d rows in one chain", head, err, workers*each)
		}
	})

	t.Run("TwoLogsOneStore", func(t *testing.T) {
		s := open(t)
		a, b := newLog(t, s), newLog(t, s)
		for i := range 20 {
			l := a
			if i%3 == 0 {
				l = b
			}
			if _, err := l.Append(ctx, auditlog.Event{Type: "t", Payload: []byte(fmt.Sprint(i))}); err != nil {
				t.Fatalf("append %d: %v", i, err)
			}
		}
		a.Close()
		b.Close()
		head, err := auditlog.Replay(ctx, s, nil, nil)
		if err != nil || head.Size != 20 {
			t.Fatalf("Replay = %+v, %v; want 20 rows in one chain", head, err)
		}
	})
}

// Relink recomputes the chain links of rows after edits to their fields.
func Relink(rows []auditlog.Record) []auditlog.Record {
	var prev auditlog.Hash
	if len(rows) > 0 {
		prev = rows[0].PrevHash
	}
	for i := range rows {
		rows[i].PrevHash = prev
		rows[i].Hash = auditlog.LeafHash(&rows[i], rows[i].Payload)
		prev = rows[i].Hash
	}
	return rows
}

func newLog(t *testing.T, s auditlog.Store) *auditlog.Log {
	t.Helper()
	skey, _, err := note.GenerateKey(nil, "storetest")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	l, err := auditlog.New(auditlog.Config{Store: s, Origin: "storetest", Signers: []note.Signer{signer},
		Plaintext: true, Now: func() time.Time { return time.Unix(1_700_000_000, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
