// Package storetest is the conformance suite every [idempotency.Store]
// passes. An implementation's test calls [Run] with a constructor that
// returns a fresh, empty store:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) idempotency.Store { ... })
//	}
//
// The suite drives the store with its own clock values (the now argument),
// so it checks that liveness follows the record's timestamps, not the
// store's clock.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/malai-sec/malai/idempotency"
)

const (
	lease     = 30 * time.Second
	retention = 24 * time.Hour
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// claim builds an in-flight record for owner o at now.
func claim(o byte, fp byte, now time.Time) idempotency.Record {
	r := idempotency.Record{
		State:      idempotency.StateInFlight,
		Token:      1,
		CreatedAt:  now,
		LeaseUntil: now.Add(lease),
		ExpiresAt:  now.Add(retention),
	}
	r.Owner[0], r.Owner[15] = o, o
	r.Fingerprint[0] = fp
	return r
}

func completed(r idempotency.Record, now time.Time, res idempotency.Result) idempotency.Record {
	r.State = idempotency.StateCompleted
	r.LeaseUntil = time.Time{}
	r.ExpiresAt = now.Add(retention)
	r.Result = res
	return r
}

var sample = idempotency.Result{
	Status: http.StatusCreated,
	Header: http.Header{"Content-Type": {"application/json"}, "Location": {"/transfers/42"}},
	Body:   []byte(`{"id":42,"amount":"10.00"}`),
}

// Run runs the conformance suite. newStore must return a new, empty store
// for each subtest; Run closes it.
func Run(t *testing.T, newStore func(t *testing.T) idempotency.Store) {
	ctx := context.Background()
	open := func(t *testing.T) idempotency.Store {
		s := newStore(t)
		t.Cleanup(func() { s.Close() })
		return s
	}
	mustClaim := func(t *testing.T, s idempotency.Store, key string, rec idempotency.Record, now time.Time) idempotency.Record {
		t.Helper()
		got, ok, err := s.Claim(ctx, key, rec, now)
		if err != nil || !ok {
			t.Fatalf("Claim(%s) = claimed %v, %v; want a claim", key, ok, err)
		}
		return got
	}
	mustHeld := func(t *testing.T, s idempotency.Store, key string, rec idempotency.Record, now time.Time) idempotency.Record {
		t.Helper()
		got, ok, err := s.Claim(ctx, key, rec, now)
		if err != nil || ok {
			t.Fatalf("Claim(%s) = claimed %v, %v; want the existing record", key, ok, err)
		}
		return got
	}

	t.Run("FirstClaimWins", func(t *testing.T) {
		s := open(t)
		a := claim(1, 7, t0)
		got := mustClaim(t, s, "k", a, t0)
		if got.Token != 1 || got.Owner != a.Owner {
			t.Fatalf("claimed record token %d owner %x; want token 1 owner %x", got.Token, got.Owner, a.Owner)
		}
		held := mustHeld(t, s, "k", claim(2, 7, t0.Add(time.Second)), t0.Add(time.Second))
		if held.State != idempotency.StateInFlight || held.Owner != a.Owner || held.Fingerprint != a.Fingerprint {
			t.Fatalf("existing record = %v owner %x; want in-flight owner %x", held.State, held.Owner, a.Owner)
		}
		if !held.LeaseUntil.Equal(a.LeaseUntil) || !held.CreatedAt.Equal(a.CreatedAt) {
			t.Fatalf("existing record times %v/%v; want %v/%v", held.CreatedAt, held.LeaseUntil, a.CreatedAt, a.LeaseUntil)
		}
	})

	t.Run("KeysAreIndependent", func(t *testing.T) {
		s := open(t)
		mustClaim(t, s, "k1", claim(1, 1, t0), t0)
		mustClaim(t, s, "k2", claim(2, 1, t0), t0)
	})

	t.Run("CompleteThenReplay", func(t *testing.T) {
		s := open(t)
		a := mustClaim(t, s, "k", claim(1, 7, t0), t0)
		now := t0.Add(2 * time.Second)
		if err := s.Complete(ctx, "k", completed(a, now, sample), now); err != nil {
			t.Fatalf("Complete: %v", err)
		}
		got := mustHeld(t, s, "k", claim(2, 7, now), now.Add(time.Hour))
		if got.State != idempotency.StateCompleted {
			t.Fatalf("state %v; want completed", got.State)
		}
		if diff := cmp.Diff(sample, got.Result); diff != "" {
			t.Fatalf("replayed result (-want +got):\n%s", diff)
		}
		if !got.ExpiresAt.Equal(now.Add(retention)) {
			t.Fatalf("ExpiresAt %v; want %v", got.ExpiresAt, now.Add(retention))
		}
		// A second completion of the same claim is refused: the record is
		// no longer in flight.
		if err := s.Complete(ctx, "k", completed(a, now, idempotency.Result{Status: 200}), now); !errors.Is(err, idempotency.ErrLeaseLost) {
			t.Fatalf("second Complete = %v; want ErrLeaseLost", err)
		}
	})

	t.Run("NotReplayable", func(t *testing.T) {
		s := open(t)
		a := mustClaim(t, s, "k", claim(1, 7, t0), t0)
		rec := completed(a, t0, idempotency.Result{Status: http.StatusOK})
		rec.State = idempotency.StateNotReplayable
		if err := s.Complete(ctx, "k", rec, t0); err != nil {
			t.Fatalf("Complete: %v", err)
		}
		got := mustHeld(t, s, "k", claim(2, 7, t0), t0.Add(time.Minute))
		if got.State != idempotency.StateNotReplayable || got.Result.Status != http.StatusOK {
			t.Fatalf("got %v status %d; want not-replayable 200", got.State, got.Result.Status)
		}
	})

	t.Run("FenceRejectsOthers", func(t *testing.T) {
		s := open(t)
		a := mustClaim(t, s, "k", claim(1, 7, t0), t0)
		wrongOwner := a
		wrongOwner.Owner[3] ^= 0xff
		wrongToken := a
		wrongToken.Token++
		for name, r := range map[string]idempotency.Record{"owner": wrongOwner, "token": wrongToken} {
			if err := s.Complete(ctx, "k", completed(r, t0, sample), t0); !errors.Is(err, idempotency.ErrLeaseLost) {
				t.Errorf("Complete with wrong %s = %v; want ErrLeaseLost", name, err)
			}
			ext := r
			ext.LeaseUntil = t0.Add(time.Hour)
			if err := s.Extend(ctx, "k", ext, t0); !errors.Is(err, idempotency.ErrLeaseLost) {
				t.Errorf("Extend with wrong %s = %v; want ErrLeaseLost", name, err)
			}
			if err := s.Release(ctx, "k", r); !errors.Is(err, idempotency.ErrLeaseLost) {
				t.Errorf("Release with wrong %s = %v; want ErrLeaseLost", name, err)
			}
		}
		// The rightful holder is unaffected.
		if err := s.Complete(ctx, "k", completed(a, t0, sample), t0); err != nil {
			t.Fatalf("holder's Complete: %v", err)
		}
		// Nothing to fence on a missing key.
		if err := s.Complete(ctx, "missing", completed(a, t0, sample), t0); !errors.Is(err, idempotency.ErrLeaseLost) {
			t.Fatalf("Complete on a missing key = %v; want ErrLeaseLost", err)
		}
	})

	t.Run("TakeoverAfterLeaseFencesLateHolder", func(t *testing.T) {
		s := open(t)
		a := mustClaim(t, s, "k", claim(1, 7, t0), t0)
		// Still leased one second before the end.
		mustHeld(t, s, "k", claim(2, 7, t0), a.LeaseUntil.Add(-time.Second))
		later := a.LeaseUntil
		b := mustClaim(t, s, "k", claim(2, 7, later), later)
		if b.Token != a.Token+1 {
			t.Fatalf("takeover token %d; want %d", b.Token, a.Token+1)
		}
		if err := s.Complete(ctx, "k", completed(a, later, sample), later); !errors.Is(err, idempotency.ErrLeaseLost) {
			t.Fatalf("late holder's Complete = %v; want ErrLeaseLost", err)
		}
		if err := s.Release(ctx, "k", a); !errors.Is(err, idempotency.ErrLeaseLost) {
			t.Fatalf("late holder's Release = %v; want ErrLeaseLost", err)
		}
		res := idempotency.Result{Status: 201, Body: []byte("second")}
		if err := s.Complete(ctx, "k", completed(b, later, res), later); err != nil {
			t.Fatalf("new holder's Complete: %v", err)
		}
		got := mustHeld(t, s, "k", claim(3, 7, later), later.Add(time.Minute))
		if got.Token != b.Token || string(got.Result.Body) != "second" {
			t.Fatalf("record token %d body %q; want the new holder's (token %d, \"second\")", got.Token, got.Result.Body, b.Token)
		}
	})

	t.Run("ExtendKeepsTheClaim", func(t *testing.T) {
		s := open(t)
		a := mustClaim(t, s, "k", claim(1, 7, t0), t0)
		now := t0.Add(20 * time.Second)
		ext := a
		ext.LeaseUntil = now.Add(time.Minute)
		if err := s.Extend(ctx, "k", ext, now); err != nil {
			t.Fatalf("Extend: %v", err)
		}
		// Past the original lease, inside the extended one.
		got := mustHeld(t, s, "k", claim(2, 7, t0), a.LeaseUntil.Add(time.Second))
		if !got.LeaseUntil.Equal(ext.LeaseUntil) {
			t.Fatalf("LeaseUntil %v; want %v", got.LeaseUntil, ext.LeaseUntil)
		}
		b := mustClaim(t, s, "k", claim(2, 7, ext.LeaseUntil), ext.LeaseUntil)
		if b.Token != 2 {
			t.Fatalf("takeover token %d; want 2", b.Token)
		}
		if err := s.Extend(ctx, "k", ext, ext.LeaseUntil); !errors.Is(err, idempotency.ErrLeaseLost) {
			t.Fatalf("late Extend = %v; want ErrLeaseLost", err)
		}
	})

	t.Run("RetentionFollowsCallerClock", func(t *testing.T) {
		s := open(t)
		a := mustClaim(t, s, "k", claim(1, 7, t0), t0)
		if err := s.Complete(ctx, "k", completed(a, t0, sample), t0); err != nil {
			t.Fatal(err)
		}
		got := mustHeld(t, s, "k", claim(2, 7, t0), t0.Add(23*time.Hour))
		if got.State != idempotency.StateCompleted || !bytes.Equal(got.Result.Body, sample.Body) {
			t.Fatalf("after 23 h: %v %q; want the completed record", got.State, got.Result.Body)
		}
		late := t0.Add(25 * time.Hour)
		b := mustClaim(t, s, "k", claim(2, 9, late), late)
		if b.Fingerprint[0] != 9 {
			t.Fatalf("after 25 h the key must be new; got fingerprint %x", b.Fingerprint[:1])
		}
	})

	t.Run("ReleaseFreesTheKey", func(t *testing.T) {
		s := open(t)
		a := mustClaim(t, s, "k", claim(1, 7, t0), t0)
		if err := s.Release(ctx, "k", a); err != nil {
			t.Fatalf("Release: %v", err)
		}
		mustClaim(t, s, "k", claim(2, 8, t0), t0.Add(time.Second))
		if err := s.Release(ctx, "k", a); !errors.Is(err, idempotency.ErrLeaseLost) {
			t.Fatalf("Release after another claim = %v; want ErrLeaseLost", err)
		}
	})

	t.Run("ConcurrentClaimsOneWinner", func(t *testing.T) {
		s := open(t)
		oneWinner(t, 50, func(i int) (bool, error) {
			_, ok, err := s.Claim(ctx, "k", claim(byte(i+1), 7, t0), t0)
			return ok, err
		})
	})

	t.Run("ConcurrentTakeoversOneWinner", func(t *testing.T) {
		s := open(t)
		mustClaim(t, s, "k", claim(1, 7, t0), t0)
		later := t0.Add(time.Hour)
		oneWinner(t, 20, func(i int) (bool, error) {
			_, ok, err := s.Claim(ctx, "k", claim(byte(i+2), 7, later), later)
			return ok, err
		})
	})

	t.Run("CancelledContext", func(t *testing.T) {
		s := open(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, ok, err := s.Claim(cctx, "k", claim(1, 7, t0), t0); err == nil || ok {
			t.Fatalf("Claim with a cancelled context = %v, %v; want an error", ok, err)
		}
		mustClaim(t, s, "k", claim(1, 7, t0), t0)
	})

	t.Run("ManyKeys", func(t *testing.T) {
		s := open(t)
		for i := range 100 {
			mustClaim(t, s, fmt.Sprintf("key-%d", i), claim(1, byte(i), t0), t0)
		}
		for i := range 100 {
			got := mustHeld(t, s, fmt.Sprintf("key-%d", i), claim(2, byte(i), t0), t0)
			if got.Fingerprint[0] != byte(i) {
				t.Fatalf("key-%d holds fingerprint %x", i, got.Fingerprint[:1])
			}
		}
	})
}

// oneWinner runs try(0..n-1) concurrently and requires exactly one of them
// to win and none to fail.
func oneWinner(t *testing.T, n int, try func(i int) (bool, error)) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, errs := 0, []error(nil)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := try(i)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			if ok {
				wins++
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 || wins != 1 {
		t.Fatalf("%d winners, errors %v; want exactly 1 winner", wins, errs)
	}
}
