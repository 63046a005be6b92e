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
