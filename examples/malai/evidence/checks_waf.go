package evidence

import (
	"context"
	"errors"
	"fmt"
)

// DenyListed is an address the local system's reputation list denies
// (the driver writes 203.0.113.0/24 into its deny list).
const DenyListed = "203.0.113.7"

// wafChecks: "Public origins sit behind a managed WAF with the OWASP core
// rule set, the known-bad-inputs rule set and an IP reputation list. A
// per-IP rate-limit rule caps abusive traffic before it reaches the
// application."
func wafChecks() []Check {
	attack := func(name, path string, h Header, want int) Check {
		return Check{Row: RowWAF, Name: name, Run: func(ctx context.Context, f *Fixture) (string, error) {
			r, err := f.Do(ctx, "GET", f.Target.Gateway+path, nil, h)
			return Expect(r, err, want)
		}}
	}
	return []Check{
		attack("SQL injection refused (OWASP CRS)", "/v1/accounts?id=1'%20UNION%20SELECT%20password%20FROM%20users--", nil, 403),
		attack("XSS refused (OWASP CRS)", "/v1/accounts?q=%3Cscript%3Ealert(1)%3C/script%3E", nil, 403),
		attack("Log4Shell refused (known bad inputs)", "/healthz", Header{"X-Api-Version": "${jndi:ldap://127.0.0.1/x}"}, 403),
		attack("a benign request with ordinary words passes", "/healthz?q=ordinary+words+and+numbers+1234", nil, 200),
		{Row: RowWAF, Name: "a client on the reputation deny list is refused", Local: true, Run: func(ctx context.Context, f *Fixture) (string, error) {
			r, err := f.Do(ctx, "GET", f.Target.Gateway+"/healthz", nil, Header{"X-Forwarded-For": DenyListed})
			obs, err := Expect(r, err, 403)
			return "client " + DenyListed + " (deny list 203.0.113.0/24) → " + obs, err
		}},
	}
}

// rateLimitChecks run late: against a deployment they spend the pass's
// own per-IP budget.
func rateLimitChecks() []Check {
	return []Check{
		{Row: RowWAF, Name: "a client over its per-IP limit gets 429 with Retry-After and RateLimit headers; another client does not", Effect: Degrades,
			Run: func(ctx context.Context, f *Fixture) (string, error) {
				flooder, other := Header{"X-Forwarded-For": "198.51.100.77"}, Header{"X-Forwarded-For": "198.51.100.78"}
				if !f.Target.ForwardedFor {
					// Against a deployment the pass is one client: it
					// floods from its own address and cannot play another.
					flooder, other = nil, nil
				}
				var last Response
				for i := 0; i < 2000; i++ {
					r, err := f.Do(ctx, "GET", f.Target.Gateway+"/healthz", nil, flooder)
					if err != nil {
						return "", err
					}
					last = r
					if r.Status != 429 {
						continue
					}
					obs := fmt.Sprintf("429 after %d requests; Retry-After=%s RateLimit=%q RateLimit-Policy=%q", i, r.Header.Get("Retry-After"), r.Header.Get("RateLimit"), r.Header.Get("RateLimit-Policy"))
					if r.Header.Get("Retry-After") == "" || r.Header.Get("RateLimit") == "" {
						return obs, errors.New("Retry-After or RateLimit missing")
					}
					if other == nil {
						return obs, nil
					}
					o, err := f.Do(ctx, "GET", f.Target.Gateway+"/healthz", nil, other)
					if err != nil {
						return obs, err
					}
					if o.Status != 200 {
						return obs, fmt.Errorf("another client was limited too: %s", o)
					}
					return obs + "; another client still 200", nil
				}
				return last.String(), errors.New("never limited in 2000 requests")
			}},
	}
}
