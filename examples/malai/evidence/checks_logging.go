package evidence

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"
)

// loggingChecks: "Every request carries a correlation id that travels
// through traces, metrics and structured logs. Log streams are encrypted
// with managed keys, and an alarm fires when the error rate crosses a
// threshold. Traces, RED-method metrics and JSON logs are emitted by every
// service."
func loggingChecks() []Check {
	return []Check{
		{Row: RowLogging, Name: "a client-chosen X-Request-ID is replaced; every response carries an id", Run: func(ctx context.Context, f *Fixture) (string, error) {
			r, err := f.Do(ctx, "GET", f.Target.Gateway+"/healthz", nil, Header{"X-Request-ID": "attacker-chosen-id-0000"})
			if err != nil {
				return "", err
			}
			ids := r.Header.Values("X-Request-ID")
			obs := fmt.Sprintf("X-Request-ID: %q", ids)
			if len(ids) != 1 || ids[0] == "" || ids[0] == "attacker-chosen-id-0000" {
				return obs, errors.New("the inbound id was echoed, or not exactly one id came back")
			}
			return obs, nil
		}},
		{Row: RowLogging, Name: "one correlation id and one trace across gateway → ledger", Local: true, Run: func(ctx context.Context, f *Fixture) (string, error) {
			r, err := f.Do(ctx, "GET", f.Target.Gateway+"/v1/accounts", nil, f.Alice.Auth())
			if err != nil {
				return "", err
			}
			if r.Status != http.StatusOK {
				return "", fmt.Errorf("request: %s", r)
			}
			id := r.Header.Get("X-Request-ID")
			gw, _ := f.Local.TraceID("gateway", id)
			ld, _ := f.Local.TraceID("ledger", id)
			obs := fmt.Sprintf("id %s; trace at the gateway %q, at the ledger %q", id, gw, ld)
			if gw == "" || gw != ld {
				return obs, errors.New("id or trace not shared")
			}
			return obs, nil
		}},
		{Row: RowLogging, Name: "RED metrics exported in Prometheus form by the ledger", Local: true, Run: func(ctx context.Context, f *Fixture) (string, error) {
			// /metrics is served on internal listeners only, to the
			// monitor's certificate.
			c, err := f.ClientAs("monitor")
			if err != nil {
				return "", err
			}
			r, err := Send(ctx, c, "GET", f.Local.LedgerURL()+"/metrics", nil, nil)
			if err != nil {
				return "", err
			}
			var found, missing []string
			for _, m := range []string{"http_server_request_duration_seconds_bucket", "malai_alarm_firing"} {
				if bytes.Contains(r.Body, []byte(m)) {
					found = append(found, m)
				} else {
					missing = append(missing, m)
				}
			}
			obs := "found " + strings.Join(found, ", ")
			if len(missing) > 0 {
				return obs, fmt.Errorf("missing %s (HTTP %d)", strings.Join(missing, ", "), r.Status)
			}
			return obs, nil
		}},
		{Row: RowLogging, Name: "the error-rate alarm fires when the 5xx ratio crosses its threshold (ledger stopped)", Local: true, Effect: Degrades,
			Run: func(ctx context.Context, f *Fixture) (string, error) {
				// First, while this address has its budget: a user of its
				// own (identity only: a ledger an earlier check left unable
				// to write must not stop this one).
				u, err := f.SignUp(ctx, "alarm")
				if err != nil {
					return "", err
				}
				if err := f.SignIn(ctx, u, nil); err != nil {
					return "", err
				}
				// Earlier checks may have made it fire (the WAF's 503s of a
				// burst): healthy traffic must let it clear first.
				healthy := 0
				if obs, err := Eventually(ctx, 60*time.Second, func() (bool, string, error) {
					for i := 0; i < 50 && f.Local.AlarmFiring("gateway"); i++ {
						if _, err := f.Do(ctx, "GET", f.Target.Gateway+"/healthz", nil, nil); err != nil {
							return false, "", err
						}
						healthy++
					}
					return !f.Local.AlarmFiring("gateway"), fmt.Sprintf("alarm still firing after %d healthy requests", healthy), nil
				}); err != nil {
					return obs, err
				}
				if err := f.Local.StopComponent("ledger"); err != nil {
					return "", err
				}
				// However much traffic came before, enough failures in a row
				// must cross the threshold: send until it fires, bounded. An
				// alarm that just cleared holds that state for its minimum
				// hold (30 s by default) before it may fire again.
				codes := map[int]int{}
				n := 0
				until := time.Now().Add(time.Minute)
				for ; (n < 2000 || time.Now().Before(until)) && !f.Local.AlarmFiring("gateway"); n++ {
					r, err := f.Do(ctx, "GET", f.Target.Gateway+"/v1/accounts", nil, u.Auth().With("X-Forwarded-For", "198.51.100.90"))
					if err != nil {
						return "", err
					}
					codes[r.Status]++
				}
				obs := fmt.Sprintf("cleared after %d healthy requests; ledger stopped; %d requests through the gateway → %v; gateway alarm firing=%v", healthy, n, codes, f.Local.AlarmFiring("gateway"))
				if !f.Local.AlarmFiring("gateway") {
					return obs, errors.New("alarm did not fire")
				}
				return obs, nil
			}},
		{Row: RowLogging, Name: "every log stream on disk decrypts and verifies; gateway and ledger lines carry one correlation id", Local: true, Effect: Stops,
			Run: func(ctx context.Context, f *Fixture) (string, error) {
				// The fixture's account opening crossed gateway and ledger.
				id := f.LedgerRequestID
				if err := f.Shutdown(); err != nil {
					return "", fmt.Errorf("shutdown: %w", err)
				}
				found := map[string]bool{}
				streams := 0
				err := f.Local.LogStreams(func(name string, plain []byte) error {
					streams++
					if id != "" && bytes.Contains(plain, []byte(`"request_id":"`+id+`"`)) {
						found[strings.SplitN(name, "-", 2)[0]] = true
					}
					return nil
				})
				var in []string
				for c := range found {
					in = append(in, c)
				}
				sort.Strings(in)
				obs := fmt.Sprintf("%d streams decrypted and verified; id %s found in %v", streams, id, in)
				if err != nil {
					return obs, err
				}
				if streams < 4 || !found["gateway"] || !found["ledger"] {
					return obs, errors.New("streams or id missing")
				}
				return obs, nil
			}},
	}
}
