package evidence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"path"
	"strings"
	"sync"
	"time"
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

// limitBeforeWAFChecks: "A per-IP rate-limit rule caps abusive traffic
// before it reaches the application": the limit runs before the WAF, so
// a client sending attacks is limited (and a blocked request costs more
// than a passing one), and a deny-listed client never reaches the WAF.
func limitBeforeWAFChecks() []Check {
	return []Check{
		{Row: RowWAF, Local: true, Name: "the per-IP limit runs before the WAF and counts blocked requests: an attacking client reaches 429 first",
			Run: func(ctx context.Context, f *Fixture) (string, error) {
				from := Header{"X-Forwarded-For": "198.51.100.66"}
				codes := map[int]int{}
				for i := 0; i < 1000; i++ {
					// Path traversal (CRS attack-lfi): a family no other
					// check's proof removes, so only the order decides here.
					r, err := f.Do(ctx, "GET", f.Target.Gateway+"/v1/accounts?file=../../../../etc/passwd", nil, from)
					if err != nil {
						return "", err
					}
					codes[r.Status]++
					if r.Status != http.StatusTooManyRequests {
						continue
					}
					// The pass's system allows 300 passing requests a
					// minute per address: limited within a third of that,
					// each blocked request cost the client several.
					obs := fmt.Sprintf("attacks from one address → %v: limited at request %d (the budget allows 300 passing ones a minute); Retry-After=%s",
						codes, i+1, r.Header.Get("Retry-After"))
					if i+1 > 100 || r.Header.Get("Retry-After") == "" {
						return obs, errors.New("blocked requests did not count more than passing ones")
					}
					return obs, nil
				}
				return fmt.Sprintf("1000 attacks → %v", codes), errors.New("blocked requests were never limited")
			}},
		{Row: RowWAF, Local: true, Name: "a deny-listed client is refused by the reputation list before the WAF inspects it",
			Run: func(ctx context.Context, f *Fixture) (string, error) {
				r, err := f.Do(ctx, "GET", f.Target.Gateway+"/v1/accounts?q=%3Cscript%3Ealert(1)%3C/script%3E", nil, Header{"X-Forwarded-For": DenyListed})
				if err != nil {
					return "", err
				}
				typ := JSONString(r.Body, "type")
				obs := fmt.Sprintf("an attack from %s → %d %s", DenyListed, r.Status, typ)
				if r.Status != http.StatusForbidden || strings.HasSuffix(typ, "waf-blocked") {
					return obs, errors.New("the WAF answered: the reputation list did not run first")
				}
				return obs, nil
			}},
		{Row: RowWAF, Name: "oversized request shapes (2000 cookies, 200 query arguments, a 3000-byte URL) are refused before inspection",
			Run: func(ctx context.Context, f *Fixture) (string, error) {
				var cookies, args strings.Builder
				for i := 0; i < 2000; i++ {
					fmt.Fprintf(&cookies, "c%d=v; ", i)
				}
				for i := 0; i < 200; i++ {
					fmt.Fprintf(&args, "a%d=v&", i)
				}
				var got []string
				bad := false
				for _, tc := range []struct {
					what   string
					path   string
					h      Header
					status int
				}{
					{"2000 cookies", "/healthz", Header{"Cookie": cookies.String()}, http.StatusRequestHeaderFieldsTooLarge},
					{"200 arguments", "/healthz?" + args.String(), nil, http.StatusBadRequest},
					{"3000-byte URL", "/healthz?x=" + strings.Repeat("a", 3000), nil, http.StatusRequestURITooLong},
				} {
					start := time.Now()
					r, err := f.Do(ctx, "GET", f.Target.Gateway+tc.path, nil, tc.h)
					if err != nil {
						return "", err
					}
					typ := JSONString(r.Body, "type")
					got = append(got, fmt.Sprintf("%s → %d %s in %s", tc.what, r.Status, typ[strings.LastIndex(typ, "#")+1:], time.Since(start).Round(time.Millisecond)))
					bad = bad || r.Status != tc.status || !strings.HasSuffix(typ, "request-too-large")
				}
				obs := strings.Join(got, "; ")
				if bad {
					return obs, errors.New("an oversized shape was not refused by the shape limits")
				}
				return obs, nil
			}},
		{Row: RowWAF, Local: true, Name: "inspection is capped: a burst of 24 concurrent 12 KiB posts from one address gets 503 + Retry-After for the excess, not a queue",
			Run: func(ctx context.Context, f *Fixture) (string, error) {
				// The burst depends on timing (24 posts must meet in the
				// WAF within one inspection), so a run that saw no
				// refusal tries again, with new keys, up to three times;
				// a WAF without the cap refuses none in any of them.
				var tries []string
				for attempt := 1; attempt <= 3; attempt++ {
					obs, ok := wafBurst(ctx, f, attempt)
					tries = append(tries, obs)
					if ok {
						return strings.Join(tries, "; then "), nil
					}
				}
				return strings.Join(tries, "; then "), errors.New("no bounded refusal: the excess waited for inspection")
			}},
	}
}

// gatedReader reads r (n bytes) once gate is closed.
type gatedReader struct {
	gate <-chan struct{}
	r    io.Reader
	n    int
}

func (g *gatedReader) Len() int { return g.n }

func (g *gatedReader) Read(p []byte) (int, error) {
	<-g.gate
	return g.r.Read(p)
}

// waitGroup waits for wg, or at most d.
func waitGroup(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// wafBurst sends 24 concurrent 12 KiB posts from one address and reports
// whether the excess was refused at once with 503 + Retry-After.
func wafBurst(ctx context.Context, f *Fixture, attempt int) (string, bool) {
	body := fmt.Sprintf(`{"from":%q,"to":%q,"amount":1,"memo":%q}`, f.Alice.Account, f.Bob.Account, strings.Repeat("lorem ipsum ", 1000))
	type answer struct {
		status      int
		retry, kind string
	}
	out := make(chan answer, 24)
	// A burst arrives at once: each post's body is held until all 24
	// have connected and sent their headers, so the connections'
	// handshakes do not spread them out over more than one inspection's
	// time.
	gate := make(chan struct{})
	var sent sync.WaitGroup
	sent.Add(24)
	go func() {
		waitGroup(&sent, 10*time.Second)
		close(gate)
	}()
	var wg sync.WaitGroup
	for i := 0; i < 24; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var once sync.Once
			done := func() { once.Do(sent.Done) }
			defer done() // a post that failed before its headers
			tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: done})
			r, err := f.Do(tctx, "POST", f.Target.Gateway+"/v1/transfers", &gatedReader{gate: gate, r: strings.NewReader(body), n: len(body)},
				f.Alice.Auth().With("Content-Type", "application/json").With("X-Forwarded-For", "198.51.100.67").With("Idempotency-Key", f.Key(fmt.Sprintf("burst-%d-%d", attempt, i))))
			if err != nil {
				out <- answer{status: -1}
				return
			}
			var p struct{ Type string }
			_ = json.Unmarshal(r.Body, &p)
			out <- answer{r.Status, r.Header.Get("Retry-After"), p.Type}
		}()
	}
	wg.Wait()
	close(out)
	codes := map[int]int{}
	kinds := map[string]int{}
	busy, withRetry := 0, 0
	for a := range out {
		codes[a.status]++
		if a.kind != "" {
			kinds[path.Base(a.kind)]++
		}
		if a.status == http.StatusServiceUnavailable {
			busy++
			if a.retry != "" {
				withRetry++
			}
		}
	}
	obs := fmt.Sprintf("24 concurrent posts → %v (problem types %v); %d of the 503s carry Retry-After", codes, kinds, withRetry)
	return obs, busy > 0 && withRetry == busy
}
