package evidence

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// idempotencyChecks: "Synchronous and asynchronous write paths take an
// Idempotency-Key header. Replaying a mutation inside a 24-hour window
// returns the original result instead of a second side-effect. The same
// key is honoured across retries from clients, queues and back-pressured
// workers."
func idempotencyChecks() []Check {
	return []Check{
		{Row: RowIdempotency, Name: "a write without Idempotency-Key is refused (400)", Run: func(ctx context.Context, f *Fixture) (string, error) {
			r, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/transfers", Transfer{From: f.Alice.Account, To: f.Bob.Account, Amount: 1}, f.Alice.Auth())
			return Expect(r, err, http.StatusBadRequest)
		}},
		{Row: RowIdempotency, Name: "a replayed transfer returns the original result and moves the money once", Run: func(ctx context.Context, f *Fixture) (string, error) {
			before, err := f.Balance(ctx, f.Alice)
			if err != nil {
				return "", err
			}
			tr := Transfer{From: f.Alice.Account, To: f.Bob.Account, Amount: 125}
			h := f.Alice.Auth().With("Idempotency-Key", f.Key("replay"))
			first, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/transfers", tr, h)
			if err != nil {
				return "", err
			}
			if first.Status != http.StatusCreated {
				return "", fmt.Errorf("first transfer: %s", first)
			}
			again, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/transfers", tr, h)
			if err != nil {
				return "", err
			}
			after, err := f.Balance(ctx, f.Alice)
			if err != nil {
				return "", err
			}
			obs := fmt.Sprintf("first %d, replay %d Idempotent-Replayed=%q, same body=%v; balance %d → %d", first.Status, again.Status,
				again.Header.Get("Idempotent-Replayed"), bytes.Equal(first.Body, again.Body), before, after)
			if again.Status != first.Status || !bytes.Equal(first.Body, again.Body) || again.Header.Get("Idempotent-Replayed") != "true" {
				return obs, errors.New("not replayed")
			}
			if after != before-tr.Amount {
				return obs, errors.New("the money did not move exactly once")
			}
			return obs, nil
		}},
		{Row: RowIdempotency, Name: "the same key with another payload is refused (422)", Run: func(ctx context.Context, f *Fixture) (string, error) {
			h := f.Alice.Auth().With("Idempotency-Key", f.Key("changed"))
			first, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/transfers", Transfer{From: f.Alice.Account, To: f.Bob.Account, Amount: 3}, h)
			if err != nil {
				return "", err
			}
			if first.Status != http.StatusCreated {
				return "", fmt.Errorf("first transfer: %s", first)
			}
			r, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/transfers", Transfer{From: f.Alice.Account, To: f.Bob.Account, Amount: 9}, h)
			return Expect(r, err, http.StatusUnprocessableEntity)
		}},
		{Row: RowIdempotency, Name: "async: queue, worker and a later synchronous retry with the same key make one transfer", Run: func(ctx context.Context, f *Fixture) (string, error) {
			before, err := f.Balance(ctx, f.Alice)
			if err != nil {
				return "", err
			}
			tr := Transfer{From: f.Alice.Account, To: f.Bob.Account, Amount: 100}
			h := f.Alice.Auth().With("Idempotency-Key", f.Key("async"))
			r, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/transfers/async", tr, h)
			if err != nil {
				return "", err
			}
			if r.Status != http.StatusAccepted {
				return "", fmt.Errorf("async: %s", r)
			}
			want := before - tr.Amount
			var bal int64
			if obs, err := Eventually(ctx, 20*time.Second, func() (bool, string, error) {
				bal, err = f.Balance(ctx, f.Alice)
				return bal == want, fmt.Sprintf("balance %d", bal), err
			}); err != nil {
				return obs, fmt.Errorf("the worker did not post the transfer (want balance %d): %w", want, err)
			}
			sync, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/transfers", tr, h)
			if err != nil {
				return "", err
			}
			after, err := f.Balance(ctx, f.Alice)
			if err != nil {
				return "", err
			}
			obs := fmt.Sprintf("async %d; the worker posted it (balance %d → %d); sync retry with the same key → %d Idempotent-Replayed=%q; balance after %d",
				r.Status, before, bal, sync.Status, sync.Header.Get("Idempotent-Replayed"), after)
			if sync.Header.Get("Idempotent-Replayed") != "true" || after != want {
				return obs, errors.New("a second side effect")
			}
			return obs, nil
		}},
	}
}
