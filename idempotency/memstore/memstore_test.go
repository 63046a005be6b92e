package memstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/malai-sec/malai/idempotency"
	"github.com/malai-sec/malai/idempotency/memstore"
	"github.com/malai-sec/malai/idempotency/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) idempotency.Store {
		s, err := memstore.New(memstore.Config{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func rec(owner byte, now time.Time) idempotency.Record {
	r := idempotency.Record{State: idempotency.StateInFlight, Token: 1, CreatedAt: now,
		LeaseUntil: now.Add(time.Minute), ExpiresAt: now.Add(time.Hour)}
	r.Owner[0] = owner
	return r
}

func TestBoundedBytesRefusesNewClaims(t *testing.T) {
	ctx := context.Background()
	s, err := memstore.New(memstore.Config{MaxBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	n := 0
	for ; n < 1000; n++ {
		_, _, err := s.Claim(ctx, string(rune('a'+n%26))+string(rune(n)), rec(1, now), now)
		if errors.Is(err, memstore.ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if n == 0 || n == 1000 {
		t.Fatalf("store of 4096 bytes took %d claims; want a bound above 0", n)
	}
	// Once the records expire, the space is reclaimed.
	later := now.Add(2 * time.Hour)
	if _, ok, err := s.Claim(ctx, "fresh", rec(2, later), later); err != nil || !ok {
		t.Fatalf("claim after expiry = %v, %v; want space reclaimed", ok, err)
	}
	if got := s.Len(); got != 1 {
		t.Fatalf("Len after sweep = %d; want 1", got)
	}
}

func TestFullCompletionKeepsOutcome(t *testing.T) {
	ctx := context.Background()
	s, err := memstore.New(memstore.Config{MaxBytes: 2048})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	a, ok, err := s.Claim(ctx, "k", rec(1, now), now)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	done := a
	done.State = idempotency.StateCompleted
	done.Result = idempotency.Result{Status: 201, Body: make([]byte, 4096)}
	if err := s.Complete(ctx, "k", done, now); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	got, ok, err := s.Claim(ctx, "k", rec(2, now), now)
	if err != nil || ok {
		t.Fatal(ok, err)
	}
	if got.State != idempotency.StateNotReplayable || got.Result.Status != 201 || len(got.Result.Body) != 0 {
		t.Fatalf("got %v status %d body %d bytes; want not-replayable 201 without body", got.State, got.Result.Status, len(got.Result.Body))
	}
}

func TestClosed(t *testing.T) {
	s, err := memstore.New(memstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	now := time.Now()
	if _, _, err := s.Claim(context.Background(), "k", rec(1, now), now); !errors.Is(err, memstore.ErrClosed) {
		t.Fatalf("Claim after Close = %v; want ErrClosed", err)
	}
}

func TestNewRejectsNegative(t *testing.T) {
	if _, err := memstore.New(memstore.Config{MaxBytes: -1}); err == nil {
		t.Fatal("New accepted a negative MaxBytes")
	}
}

// With EvictCompleted a full store makes room by dropping the completed
// records that expire soonest; in-flight claims are never dropped, and a
// store full of them still refuses.
func TestEvictCompleted(t *testing.T) {
	ctx := context.Background()
	s, err := memstore.New(memstore.Config{MaxBytes: 8192, EvictCompleted: true})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	complete := func(key string, r idempotency.Record, at time.Time) {
		t.Helper()
		r.State = idempotency.StateCompleted
		r.LeaseUntil = time.Time{}
		r.ExpiresAt = at.Add(time.Hour)
		r.Result = idempotency.Result{Status: 201, Body: []byte(`{"ok":true}`)}
		if err := s.Complete(ctx, key, r, at); err != nil {
			t.Fatal(err)
		}
	}
	// Fill the store with completed records, oldest first.
	var keys []string
	for i := 0; ; i++ {
		at := now.Add(time.Duration(i) * time.Second)
		key := "done-" + string(rune('a'+i%26)) + string(rune('0'+i/26))
		r, ok, err := s.Claim(ctx, key, rec(1, at), at)
		if err != nil || !ok {
			t.Fatalf("claim %d: %v %v", i, ok, err)
		}
		complete(key, r, at)
		keys = append(keys, key)
		if s.Evicted() > 0 {
			break
		}
		if i > 1000 {
			t.Fatal("store never filled")
		}
	}
	// The oldest completed record went first; the newest is still there.
	first, ok, err := s.Claim(ctx, keys[0], rec(2, now.Add(time.Hour/2)), now.Add(time.Hour/2))
	if err != nil || !ok || first.Token != 1 {
		t.Fatalf("oldest record still held: claim = %v %v token %d", ok, err, first.Token)
	}
	last := keys[len(keys)-2]
	if got, ok, err := s.Claim(ctx, last, rec(3, now), now); err != nil || ok || got.State != idempotency.StateCompleted {
		t.Fatalf("a recent completed record was evicted: %v %v %v", ok, err, got.State)
	}

	// In-flight claims are never evicted: a store holding only claims is
	// full.
	s2, _ := memstore.New(memstore.Config{MaxBytes: 4096, EvictCompleted: true})
	held := 0
	for ; held < 1000; held++ {
		if _, _, err := s2.Claim(ctx, "inflight-"+string(rune(held+64)), rec(1, now), now); err != nil {
			if !errors.Is(err, memstore.ErrFull) {
				t.Fatal(err)
			}
			break
		}
	}
	if held == 0 || held == 1000 || s2.Evicted() != 0 {
		t.Fatalf("in-flight claims: %d held, %d evicted", held, s2.Evicted())
	}
	if _, ok, err := s2.Claim(ctx, "inflight-"+string(rune(64)), rec(9, now), now); err != nil || ok {
		t.Fatalf("an in-flight claim was evicted: %v %v", ok, err)
	}
}
