package auditlog

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// sliceStore is a minimal in-memory Store (memstore imports this package).
type sliceStore struct {
	mu   sync.Mutex
	rows []Record
	cps  [][]byte
}

func (s *sliceStore) Append(_ context.Context, recs []Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var last Hash
	if n := len(s.rows); n > 0 {
		last = s.rows[n-1].Hash
	}
	if recs[0].Seq != uint64(len(s.rows)) || recs[0].PrevHash != last {
		return ErrConflict
	}
	s.rows = append(s.rows, recs...)
	return nil
}

func (s *sliceStore) Head(context.Context) (Head, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.rows) == 0 {
		return Head{}, nil
	}
	return Head{Size: uint64(len(s.rows)), Last: s.rows[len(s.rows)-1].Hash}, nil
}

func (s *sliceStore) Scan(_ context.Context, from uint64, fn func(Record) error) error {
	s.mu.Lock()
	rows := s.rows[:len(s.rows):len(s.rows)]
	s.mu.Unlock()
	for i := from; i < uint64(len(rows)); i++ {
		if err := fn(rows[i]); err != nil {
			return err
		}
	}
	return nil
}

func (s *sliceStore) AddCheckpoint(_ context.Context, b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cps = append(s.cps, b)
	return nil
}

func (s *sliceStore) Checkpoints(_ context.Context, fn func([]byte) error) error {
	s.mu.Lock()
	cps := s.cps[:len(s.cps):len(s.cps)]
	s.mu.Unlock()
	for _, c := range cps {
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}

func (s *sliceStore) Rekey(context.Context, []Rekeyed) error { return nil }
func (s *sliceStore) Close() error                           { return nil }

// gateStore holds the first Append until released, then fails it,
// before or after writing.
type gateStore struct {
	Store
	entered chan struct{}
	release chan struct{}
	after   bool // fail after the rows were written (a lost acknowledgement)
	once    sync.Once
}

var errGate = errors.New("injected failure")

func (g *gateStore) Append(ctx context.Context, recs []Record) error {
	first := false
	g.once.Do(func() { first = true })
	if !first {
		return g.Store.Append(ctx, recs)
	}
	close(g.entered)
	<-g.release
	if g.after {
		if err := g.Store.Append(ctx, recs); err != nil {
			return err
		}
	}
	return errGate
}

// TestPipelinedBatchRebuiltAfterFailure: the batch collected (and built)
// while the first one is in the store was built on a head that does not
// come to pass when the first fails; it must be rebuilt, so the chain
// stays linear and every acknowledged event is present exactly once.
func TestPipelinedBatchRebuiltAfterFailure(t *testing.T) {
	for _, after := range []bool{false, true} {
		t.Run(map[bool]string{false: "clean failure", true: "lost acknowledgement"}[after], func(t *testing.T) {
			ctx := context.Background()
			skey, _, _ := note.GenerateKey(nil, "k")
			signer, _ := note.NewSigner(skey)
			st := &sliceStore{}
			g := &gateStore{Store: st, entered: make(chan struct{}), release: make(chan struct{}), after: after}
			l, err := New(Config{Store: g, Origin: "o", Signers: []note.Signer{signer}, Plaintext: true, CheckpointInterval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			first := make(chan error, 1)
			go func() { _, err := l.Append(ctx, Event{Type: "first"}); first <- err }()
			<-g.entered
			// Eight more requests, handed straight to the committer; once the
			// channel is empty it has received them all, and it places (and
			// builds) each before it looks at the first batch's result.
			var rest []*request
			for range 8 {
				req, err := l.newRequest([]Event{{Type: "second"}})
				if err != nil {
					t.Fatal(err)
				}
				l.reqs <- req
				rest = append(rest, req)
			}
			deadline := time.Now().Add(10 * time.Second)
			for len(l.reqs) > 0 {
				if time.Now().After(deadline) {
					t.Fatal("later requests never reached the committer")
				}
				time.Sleep(time.Millisecond)
			}
			close(g.release)
			if err := <-first; !errors.Is(err, errGate) {
				t.Fatalf("first append = %v, want the injected failure", err)
			}
			seen := map[uint64]bool{}
			for _, req := range rest {
				<-req.done
				if req.err != nil {
					t.Fatalf("an append queued behind the failed one failed: %v", req.err)
				}
				seen[req.receipts[0].Seq] = true
			}
			head, err := Replay(ctx, st, nil, nil)
			if err != nil {
				t.Fatalf("chain after the failure does not verify: %v", err)
			}
			want := uint64(8)
			if after {
				want = 9 // the first event was written; its acknowledgement was lost
			}
			if head.Size != want || len(seen) != 8 || l.Head() != head {
				t.Fatalf("store holds %d rows (want %d), %d distinct receipts, log head %+v vs %+v", head.Size, want, len(seen), l.Head(), head)
			}
		})
	}
}
