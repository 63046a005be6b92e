package evidence

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
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
		{Row: RowIdempotency, Name: "a body with duplicate or case-variant members is refused (400) before it is fingerprinted or run, sync and async", Run: func(ctx context.Context, f *Fixture) (string, error) {
			before, err := f.Balance(ctx, f.Alice)
			if err != nil {
				return "", err
			}
			var got, accepted []string
			bad := false
			for i, body := range []string{
				fmt.Sprintf(`{"from":%q,"to":%q,"amount":1000,"AMOUNT":3}`, f.Alice.Account, f.Bob.Account),
				fmt.Sprintf(`{"from":%q,"to":%q,"amount":3,"amount":1000}`, f.Alice.Account, f.Bob.Account),
			} {
				for _, path := range []string{"/v1/transfers", "/v1/transfers/async"} {
					r, err := f.Do(ctx, "POST", f.Target.Gateway+path, body,
						f.Alice.Auth().With("Idempotency-Key", f.Key(fmt.Sprintf("strict-%d-%s", i, path))).With("Content-Type", "application/json"))
					if err != nil {
						return "", err
					}
					got = append(got, fmt.Sprintf("%s %d", path, r.Status))
					bad = bad || r.Status != http.StatusBadRequest
					if loc := r.Header.Get("Location"); r.Status == http.StatusAccepted && strings.HasPrefix(loc, "/v1/jobs/") {
						accepted = append(accepted, loc)
					}
				}
			}
			// A job accepted in error runs later: wait for it, so that the
			// balance below includes it and no later check sees it land.
			for _, loc := range accepted {
				_, _ = Eventually(ctx, 20*time.Second, func() (bool, string, error) {
					r, err := f.Do(ctx, "GET", f.Target.Gateway+loc, nil, f.Alice.Auth())
					s := JSONString(r.Body, "status")
					return err == nil && r.Status == 200 && (s == "succeeded" || s == "failed"), r.String(), err
				})
			}
			after, err := f.Balance(ctx, f.Alice)
			if err != nil {
				return "", err
			}
			obs := fmt.Sprintf("%s; balance %d → %d", strings.Join(got, ", "), before, after)
			if bad || after != before {
				return obs, errors.New("an ambiguous body was accepted")
			}
			return obs, nil
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
		jobStatusCheck,
		timeoutCheck,
		restartKeyCheck,
	}
}

// timeoutCheck: clients that give up mid-transfer (their request context
// cancelled at random points of the append) must leave the balances equal
// to a replay of the chain, and each must learn its first outcome by
// retrying with the same key.
//
// Degrades: on a system where the guarantee fails, what it leaves behind
// (committed events the ledger never applied) can stop the ledger from
// writing at all, so it runs after every check that writes.
var timeoutCheck = Check{Row: RowIdempotency, Local: true, Effect: Degrades,
	Name: "clients timing out mid-transfer leave the balances equal to the chain, and each learns its outcome by retrying with the same key",
	Run: func(ctx context.Context, f *Fixture) (string, error) {
		// A customer of its own: the attempts and retries stay within one
		// principal's rate budget.
		const attempts = 100
		u, err := f.NewCustomer(ctx, "timeouts")
		if err != nil {
			return "", err
		}
		// A transfer's latency here, so the deadlines below land before
		// the gateway forwards, during the ledger's append and after it,
		// on a quiet machine as on a loaded one.
		var lat []time.Duration
		for i := 0; i < 5; i++ {
			t0 := time.Now()
			r, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/transfers", Transfer{From: u.Account, To: f.Bob.Account, Amount: 1},
				u.Auth().With("Idempotency-Key", f.Key(fmt.Sprintf("timeout-warm-%d", i))))
			if err != nil || r.Status != http.StatusCreated {
				return "", fmt.Errorf("warm-up transfer: %v %s", err, r)
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		typical := lat[len(lat)/2]
		before, err := f.Balance(ctx, u)
		if err != nil {
			return "", err
		}
		cut := 0
		for i := 0; i < attempts; i++ {
			// From 0.3 to 1.5 times the typical latency.
			d := typical*3/10 + typical*time.Duration(i)*12/(10*attempts)
			tctx, cancel := context.WithTimeout(ctx, d)
			_, err := f.Do(tctx, "POST", f.Target.Gateway+"/v1/transfers", Transfer{From: u.Account, To: f.Bob.Account, Amount: 1},
				u.Auth().With("Idempotency-Key", f.Key(fmt.Sprintf("timeout-%d", i))))
			cancel()
			if err != nil {
				cut++
			}
		}
		// Every key, retried without a deadline, gets one definite answer.
		applied, other := 0, map[int]int{}
		for i := 0; i < attempts; i++ {
			var r Response
			if obs, err := Eventually(ctx, 30*time.Second, func() (bool, string, error) {
				var err error
				r, err = f.Do(ctx, "POST", f.Target.Gateway+"/v1/transfers", Transfer{From: u.Account, To: f.Bob.Account, Amount: 1},
					u.Auth().With("Idempotency-Key", f.Key(fmt.Sprintf("timeout-%d", i))))
				// 409: the first attempt is still in flight; 429 and 503
				// (with Retry-After) say "busy, ask again". None is an
				// outcome.
				transient := r.Status == http.StatusConflict || r.Status == http.StatusTooManyRequests ||
					r.Status == http.StatusServiceUnavailable && r.Header.Get("Retry-After") != ""
				return err == nil && !transient, r.String(), err
			}); err != nil {
				return obs, fmt.Errorf("retry of key %d: %w", i, err)
			}
			if r.Status == http.StatusCreated && JSONString(r.Body, "transfer") != "" {
				applied++
			} else {
				other[r.Status]++
			}
		}
		after, err := f.Balance(ctx, u)
		if err != nil {
			return "", err
		}
		rep, err := f.auditReplay(ctx)
		if err != nil {
			return "", err
		}
		obs := fmt.Sprintf("%d transfers with client timeouts of 0.3–1.5× the typical %v, %d cut off; retried with the same keys: %d answered 201 with the transfer, others %v; balance %d → %d; replay of %d events match=%v",
			attempts, typical.Round(time.Microsecond), cut, applied, other, before, after, rep.Events, rep.Match)
		switch {
		case !rep.Match:
			return obs, errors.New("live balances differ from a replay of the chain")
		case applied != attempts:
			return obs, errors.New("a retry did not get the transfer's outcome")
		case before-after != int64(applied):
			return obs, errors.New("the money moved a different number of times than there were keys")
		}
		return obs, nil
	}}

// restartKeyCheck: a key's outcome survives a restart of the whole system.
var restartKeyCheck = Check{Row: RowIdempotency, Local: true, Effect: Restarts,
	Name: "an idempotency key survives a restart: the retry replays the first result and moves no more money",
	Run: func(ctx context.Context, f *Fixture) (string, error) {
		tr := Transfer{From: f.Alice.Account, To: f.Bob.Account, Amount: 7}
		h := func() Header { return f.Alice.Auth().With("Idempotency-Key", f.Key("restart")) }
		first, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/transfers", tr, h())
		if err != nil {
			return "", err
		}
		if first.Status != http.StatusCreated {
			return "", fmt.Errorf("first transfer: %s", first)
		}
		before, err := f.Balance(ctx, f.Alice)
		if err != nil {
			return "", err
		}
		if err := f.Restart(ctx); err != nil {
			return "", err
		}
		again, err := f.Do(ctx, "POST", f.Target.Gateway+"/v1/transfers", tr, h())
		if err != nil {
			return "", err
		}
		after, err := f.Balance(ctx, f.Alice)
		if err != nil {
			return "", err
		}
		obs := fmt.Sprintf("first %d; after a restart the retry → %d Idempotent-Replayed=%q same body=%v; balance %d → %d",
			first.Status, again.Status, again.Header.Get("Idempotent-Replayed"), bytes.Equal(first.Body, again.Body), before, after)
		if again.Status != first.Status || !bytes.Equal(first.Body, again.Body) || after != before {
			return obs, errors.New("the key was forgotten across the restart")
		}
		return obs, nil
	}}

// jobStatusCheck: an async transfer's outcome is visible to its owner at
// the job's Location, a failure as well as a success.
var jobStatusCheck = Check{Row: RowIdempotency,
	Name: "async: the job's outcome is visible at its Location (succeeded with the transfer; failed with the problem), to its owner only",
	Run: func(ctx context.Context, f *Fixture) (string, error) {
		u, err := f.NewCustomer(ctx, "jobs")
		if err != nil {
			return "", err
		}
		bal, err := f.Balance(ctx, u)
		if err != nil {
			return "", err
		}
		submit := func(amount int64, label string) (Response, error) {
			return f.Do(ctx, "POST", f.Target.Gateway+"/v1/transfers/async", Transfer{From: u.Account, To: f.Bob.Account, Amount: amount},
				u.Auth().With("Idempotency-Key", f.Key(label)))
		}
		wait := func(loc string) (Response, error) {
			var r Response
			_, err := Eventually(ctx, 20*time.Second, func() (bool, string, error) {
				var err error
				r, err = f.Do(ctx, "GET", f.Target.Gateway+loc, nil, u.Auth())
				s := JSONString(r.Body, "status")
				return err == nil && r.Status == 200 && (s == "succeeded" || s == "failed"), r.String(), err
			})
			return r, err
		}
		// Two jobs of 60 % each: the first succeeds; the second fails,
		// when it runs or already when it is accepted.
		part := bal * 3 / 5
		first, err := submit(part, "job-first")
		if err != nil {
			return "", err
		}
		second, err := submit(part, "job-second")
		if err != nil {
			return "", err
		}
		loc := first.Header.Get("Location")
		if first.Status != http.StatusAccepted || !strings.HasPrefix(loc, "/v1/jobs/") {
			return "", fmt.Errorf("async: %s Location %q", first, loc)
		}
		ok, err := wait(loc)
		if err != nil {
			return ok.String(), fmt.Errorf("job %s: %w", loc, err)
		}
		okRes := jobResult(ok.Body)
		obs := fmt.Sprintf("%s → %s (result %d)", loc, JSONString(ok.Body, "status"), okRes.Status)
		if JSONString(ok.Body, "status") != "succeeded" || okRes.Status != http.StatusCreated {
			return obs, errors.New("the successful job's outcome is not visible")
		}
		switch second.Status {
		case http.StatusAccepted:
			loc2 := second.Header.Get("Location")
			bad, err := wait(loc2)
			if err != nil {
				return bad.String(), fmt.Errorf("job %s: %w", loc2, err)
			}
			badRes := jobResult(bad.Body)
			obs += fmt.Sprintf("; %s → %s (result %d %s)", loc2, JSONString(bad.Body, "status"), badRes.Status, badRes.Type)
			if JSONString(bad.Body, "status") != "failed" || badRes.Status != http.StatusUnprocessableEntity {
				return obs, errors.New("the failed job's problem is not visible")
			}
		case http.StatusUnprocessableEntity:
			obs += fmt.Sprintf("; the overdrawing job was refused when accepted: %d %s", second.Status, JSONString(second.Body, "type"))
		default:
			return obs, fmt.Errorf("the second job: %s", second)
		}
		stranger, err := f.Do(ctx, "GET", f.Target.Gateway+loc, nil, f.Bob.Auth())
		if err != nil {
			return "", err
		}
		obs += fmt.Sprintf("; another user → %d", stranger.Status)
		if stranger.Status != http.StatusNotFound {
			return obs, errors.New("another user sees the job")
		}
		return obs, nil
	}}

type jobOutcome struct {
	Status int
	Type   string
}

func jobResult(b []byte) jobOutcome {
	var j struct {
		Result struct {
			Status int             `json:"status"`
			Body   json.RawMessage `json:"body"`
		} `json:"result"`
	}
	_ = json.Unmarshal(b, &j)
	return jobOutcome{Status: j.Result.Status, Type: JSONString(j.Result.Body, "type")}
}
