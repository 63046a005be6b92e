package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/pgstore"
	"github.com/malai-sec/malai/auditlog/storetest"
)

// replica is one ledger process's view of a shared chain: its own pool
// and its own Log, with the keys every replica shares. Errors it reports
// in the background are appended to reported.
func replica(t *testing.T, e *env, f *storetest.Fixture, reported *[]error) (*pgstore.Store, *auditlog.Log) {
	t.Helper()
	s := e.store(t)
	var mu sync.Mutex
	l, err := auditlog.New(auditlog.Config{Store: s, Origin: f.Origin, Signers: []note.Signer{f.Signer}, Ring: f.Ring,
		OnError: func(err error) { mu.Lock(); *reported = append(*reported, err); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return s, l
}

// twoReplicas is the fixture's chain (12 rows) opened by two replicas.
func twoReplicas(t *testing.T) (f *storetest.Fixture, s *pgstore.Store, a, b *auditlog.Log, reported *[]error) {
	t.Helper()
	e := setup(t)
	f = storetest.NewFixture(t, e.store(t))
	reported = new([]error)
	s, a = replica(t, e, f, reported)
	_, b = replica(t, e, f, reported)
	return f, s, a, b, reported
}

// closeBoth closes both replicas and fails on any error either returned
// or reported.
func closeBoth(t *testing.T, a, b *auditlog.Log, reported *[]error) {
	t.Helper()
	if err := errors.Join(a.Close(), b.Close()); err != nil {
		t.Fatal(err)
	}
	if len(*reported) != 0 {
		t.Fatalf("errors reported: %v", *reported)
	}
}

func checkpointSizes(t *testing.T, s auditlog.Store) []uint64 {
	t.Helper()
	var sizes []uint64
	if err := s.Checkpoints(context.Background(), func(n []byte) error {
		c, err := auditlog.ParseSignedCheckpoint(n)
		sizes = append(sizes, c.Size)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return sizes
}

// TestStaleReplicaCheckpointDoesNotLand: a replica that has not read the
// other's latest rows offers a checkpoint smaller than the stored one; it
// is not stored, and the replica reports no error for it.
func TestStaleReplicaCheckpointDoesNotLand(t *testing.T) {
	ctx := context.Background()
	f, sa, a, b, reported := twoReplicas(t)
	if _, err := b.Append(ctx, storetest.Transfer("b", "x", "y", 1)); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := a.Append(ctx, storetest.Transfer("a", "x", "y", int64(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	newest, err := a.Checkpoint(ctx)
	if err != nil || newest.Size != 15 {
		t.Fatalf("replica A's checkpoint = size %d, %v; want 15", newest.Size, err)
	}
	before := checkpointSizes(t, sa)
	// B still sees 13 rows: it has not read A's two.
	if h := b.Head(); h.Size != 13 {
		t.Fatalf("replica B's head is %d, want the stale 13", h.Size)
	}
	got, err := b.Checkpoint(ctx)
	if err != nil {
		t.Fatalf("stale replica's checkpoint = %v, want a silent skip", err)
	}
	if got.Size > 13 {
		t.Fatalf("stale replica returned a checkpoint of size %d past its view", got.Size)
	}
	after := checkpointSizes(t, sa)
	if len(after) != len(before) || after[len(after)-1] != 15 {
		t.Fatalf("checkpoint sizes %v after the stale replica's attempt, %v before", after, before)
	}
	// Once B's own append has caught up, its checkpoint lands on top.
	if _, err := b.Append(ctx, storetest.Transfer("b", "y", "x", 1)); err != nil {
		t.Fatal(err)
	}
	if cp, err := b.Checkpoint(ctx); err != nil || cp.Size != 16 {
		t.Fatalf("replica B's checkpoint after catching up = size %d, %v; want 16", cp.Size, err)
	}
	closeBoth(t, a, b, reported)
	for _, fd := range f.Verify(t, sa, f.Trusted, nil, nil).Findings {
		t.Errorf("finding: %+v", fd)
	}
}

// TestReplicasKeepCheckpointsInOrder: two Logs on one PostgreSQL chain
// append and checkpoint interleaved (each from several goroutines); the
// store's checkpoints only grow, and the offline verifier finds nothing.
func TestReplicasKeepCheckpointsInOrder(t *testing.T) {
	ctx := context.Background()
	f, s, a, b, reported := twoReplicas(t)
	const rounds = 20
	// In turn: each appends, then the one that appended last checkpoints
	// first, so the other's view is behind when it checkpoints.
	for r := range rounds {
		first, second := a, b
		if r%2 == 1 {
			first, second = b, a
		}
		if _, err := first.Append(ctx, storetest.Transfer("first", "x", "y", 1)); err != nil {
			t.Fatal(err)
		}
		if _, err := second.Append(ctx, storetest.Transfer("second", "y", "x", 1)); err != nil {
			t.Fatal(err)
		}
		for _, l := range []*auditlog.Log{second, first} {
			if _, err := l.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Then at once, from several goroutines each.
	var wg sync.WaitGroup
	fail := make(chan error, 4)
	for i, l := range []*auditlog.Log{a, b} {
		for g := range 2 {
			wg.Go(func() {
				for r := range rounds {
					if _, err := l.Append(ctx, storetest.Transfer(fmt.Sprintf("r%d", i), "x", "y", int64(r+1))); err != nil {
						fail <- err
						return
					}
					if (r+g)%2 == 0 {
						if _, err := l.Checkpoint(ctx); err != nil {
							fail <- err
							return
						}
					}
				}
			})
		}
	}
	wg.Wait()
	close(fail)
	for err := range fail {
		t.Fatal(err)
	}
	closeBoth(t, a, b, reported)
	sizes := checkpointSizes(t, s)
	for i := 1; i < len(sizes); i++ {
		if sizes[i] < sizes[i-1] {
			t.Fatalf("checkpoint %d of size %d stored after size %d: %v", i, sizes[i], sizes[i-1], sizes)
		}
	}
	const total = 12 + 2*rounds + 2*2*rounds
	if last := sizes[len(sizes)-1]; last != total {
		t.Fatalf("newest checkpoint covers %d rows, want all %d (sizes %v)", last, total, sizes)
	}
	rep := f.Verify(t, s, f.Trusted, nil, nil)
	for _, fd := range rep.Findings {
		t.Errorf("finding: %+v", fd)
	}
}

// TestForgedLargerCheckpointIsLoud: a well-formed note past the chain,
// inserted by whoever holds the app role, would hold back every later
// checkpoint: the log reports that, it does not skip silently.
func TestForgedLargerCheckpointIsLoud(t *testing.T) {
	ctx := context.Background()
	e := setup(t)
	s := e.store(t)
	f := storetest.NewFixture(t, s)
	_, l := replica(t, e, f, new([]error))
	mkey, _, _ := note.GenerateKey(nil, f.Signer.Name())
	mallory, _ := note.NewSigner(mkey)
	forged, err := auditlog.SignCheckpoint(auditlog.Checkpoint{Origin: f.Origin, Size: 99}, mallory)
	if err != nil {
		t.Fatal(err)
	}
	tb := pgx.Identifier{e.pg.Schema, e.table + "_checkpoint"}.Sanitize()
	if _, err := s.Pool().Exec(ctx, "INSERT INTO "+tb+" (note) VALUES ($1)", forged); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, storetest.Transfer("u", "a", "b", 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Checkpoint(ctx); !errors.Is(err, auditlog.ErrCheckpoint) {
		t.Fatalf("Checkpoint after a forged larger one = %v, want ErrCheckpoint", err)
	}
	if err := l.Close(); !errors.Is(err, auditlog.ErrCheckpoint) {
		t.Fatalf("Close after a forged larger checkpoint = %v, want ErrCheckpoint", err)
	}
}
