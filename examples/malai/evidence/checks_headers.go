package evidence

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/malai-sec/malai/headers/observatory"
)

// mandatoryHeaders are what "HSTS, a per-app Content-Security-Policy,
// X-Frame-Options: DENY and X-Content-Type-Options: nosniff are stamped on
// every response" means, value for value.
var mandatoryHeaders = map[string]string{
	"Strict-Transport-Security": "max-age=31536000; includeSubDomains; preload",
	"X-Frame-Options":           "DENY",
	"X-Content-Type-Options":    "nosniff",
}

// headerChecks: the headers on every kind of answer (success, and an error
// from each layer that can answer on its own), and Observatory's grade.
func headerChecks() []Check {
	// on checks the headers of the answer of one layer: status is the
	// answer that layer gives, and the check fails on another (an answer
	// from elsewhere says nothing about that layer's headers).
	on := func(what, path string, status int, h Header) Check {
		return Check{Row: RowHeaders, Name: "mandatory headers on " + what, Run: func(ctx context.Context, f *Fixture) (string, error) {
			r, err := f.Do(ctx, "GET", f.Target.Gateway+path, nil, h)
			if err != nil {
				return "", err
			}
			if r.Status != status {
				return fmt.Sprintf("HTTP %d", r.Status), fmt.Errorf("want HTTP %d from that layer", status)
			}
			if status == http.StatusUnauthorized && f.Local != nil {
				// JWT check #1's own answer: the ledger never saw it.
				if _, seen := f.Local.TraceID("ledger", r.Header.Get("X-Request-ID")); seen {
					return fmt.Sprintf("HTTP %d", r.Status), errors.New("the 401 came from the ledger, not from the gateway's JWT check #1")
				}
			}
			var bad []string
			for k, v := range mandatoryHeaders {
				if got := r.Header.Get(k); got != v {
					bad = append(bad, fmt.Sprintf("%s=%q", k, got))
				}
			}
			if r.Header.Get("Content-Security-Policy") == "" {
				bad = append(bad, "no Content-Security-Policy")
			}
			sort.Strings(bad)
			obs := fmt.Sprintf("HTTP %d, CSP %q", r.Status, r.Header.Get("Content-Security-Policy"))
			if len(bad) > 0 {
				return obs, fmt.Errorf("wrong headers: %s", strings.Join(bad, ", "))
			}
			return obs, nil
		}}
	}
	return []Check{
		on("200 from the gateway", "/healthz", http.StatusOK, nil),
		on("404 from the mux", "/no/such/route", http.StatusNotFound, nil),
		on("401 from JWT check #1", "/v1/accounts", http.StatusUnauthorized, nil),
		on("403 from the WAF", "/v1/accounts?id=1'%20OR%201=1--", http.StatusForbidden, nil),
		on("200 proxied from identity (JWKS)", "/.well-known/jwks.json", http.StatusOK, nil),
		{Row: RowHeaders, Name: "Mozilla Observatory rules (offline scorer) grade the gateway's headers A+", Run: func(ctx context.Context, f *Fixture) (string, error) {
			r, err := f.Do(ctx, "GET", f.Target.Gateway+"/healthz", nil, nil)
			if err != nil {
				return "", err
			}
			res := observatory.Score(r.Header, true)
			obs := fmt.Sprintf("score %d, grade %s", res.Score, res.Grade)
			if res.Grade != "A+" {
				return obs, errors.New("below A+")
			}
			return obs, nil
		}},
	}
}
