package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The flood benchmark (BENCHMARKS.md, "examples/malai/gateway"):
//
//	go test -run '^$' -bench 'BenchmarkFlood|BenchmarkShapeCost' -benchtime 1x ./examples/malai/gateway/
//
// BenchmarkFlood: one address (127.0.0.2) floods the gateway with 16
// concurrent 12 KiB JSON posts, or with posts the WAF blocks, while a
// second address (127.0.0.1) sends GET /healthz one at a time; the
// victim's p50/p99 under the flood against its unloaded ones, with the
// WAF's concurrency cap, inspection-time budget and held refusals (the
// default), without the held refusals, with the cap alone, and with none
// of them (Faults.NoWAFCap, the state before the cap). The
// per-IP limit is lifted so that only the WAF's admission is measured;
// the victim is measured from the flood's third second on.
// The clients run in the benchmark's process over plain HTTP/1.1, so
// cpu-ms/attack counts the process's CPU (server and clients) per attacker
// request answered, of any status: an upper bound on the server's;
// cpu-cores is that CPU per second of the flood.
func BenchmarkFlood(b *testing.B) {
	// victimSamples: the p99 of 500 is the 5th-worst answer, not the
	// 2nd-worst of 200, which one GC pause decides.
	const victimSamples = 500
	memo := strings.Repeat("lorem ipsum ", 1024) // 12 KiB
	for _, attack := range []struct{ name, body string }{
		{"12KiB JSON posts", fmt.Sprintf(`{"from":"acc_1","to":"acc_2","amount":1,"memo":%q}`, memo)},
		{"WAF-blocked posts", fmt.Sprintf(`{"from":"acc_1","to":"acc_2","amount":1,"memo":%q}`, memo[:2048]+"<script>alert(document.cookie)</script>")},
	} {
		for _, adm := range []struct {
			name                 string
			capped, budget, held bool
		}{{"capped+budget+held", true, true, true}, {"capped+budget", true, true, false}, {"capped", true, false, false}, {"uncapped (before)", false, false, false}} {
			b.Run(attack.name+"/"+adm.name, func(b *testing.B) {
				e := newEdge(b, func(c *Config) {
					c.PerIP = 10_000_000
					c.Faults.NoWAFCap = !adm.capped
					if !adm.budget {
						c.WAF.InspectionRate = -1
					}
					if !adm.held {
						c.WAF.RefusalDelay = -1
					}
				})
				url := serveHTTP(b, e.h)
				victim := client("127.0.0.1")
				for range 20 { // warm-up
					get(victim, url+"/healthz")
				}
				base := victimLatencies(victim, url, victimSamples)
				var stop atomic.Bool
				var attacks atomic.Int64
				statuses := sync.Map{}
				var wg sync.WaitGroup
				cpu0, floodStart := cpuTime(), time.Now()
				for range 16 {
					wg.Go(func() {
						c := client("127.0.0.2")
						for !stop.Load() {
							req, _ := http.NewRequest("POST", url+"/v1/transfers", strings.NewReader(attack.body))
							req.Header.Set("Content-Type", "application/json")
							req.Header.Set("Authorization", "Bearer "+e.userToken)
							req.Header.Set("User-Agent", "flood/1.0")
							req.Header.Set("Accept", "application/json")
							code := 0
							if resp, err := c.Do(req); err == nil {
								_, _ = io.Copy(io.Discard, resp.Body)
								resp.Body.Close()
								code = resp.StatusCode
							}
							attacks.Add(1)
							n, _ := statuses.LoadOrStore(code, new(atomic.Int64))
							n.(*atomic.Int64).Add(1)
						}
					})
				}
				// A sustained flood: past the budget's 2 s burst, which
				// a flood at one core fills in under 3 s.
				time.Sleep(3 * time.Second)
				loaded := victimLatencies(victim, url, victimSamples)
				stop.Store(true)
				wg.Wait()
				cpu, flood := cpuTime()-cpu0, time.Since(floodStart)
				codes := map[int]int64{}
				statuses.Range(func(k, v any) bool { codes[k.(int)] = v.(*atomic.Int64).Load(); return true })
				b.ReportMetric(ms(pct(base, 50)), "victim-unloaded-p50-ms")
				b.ReportMetric(ms(pct(base, 99)), "victim-unloaded-p99-ms")
				b.ReportMetric(ms(pct(loaded, 50)), "victim-p50-ms")
				b.ReportMetric(ms(pct(loaded, 99)), "victim-p99-ms")
				b.ReportMetric(float64(pct(loaded, 99))/float64(pct(base, 99)), "p99-ratio")
				b.ReportMetric(ms(cpu)/float64(attacks.Load()), "cpu-ms/attack")
				b.ReportMetric(cpu.Seconds()/flood.Seconds(), "cpu-cores")
				b.Logf("attacker answers %v", codes)
			})
		}
	}
}

// BenchmarkShapeCost is the CPU per request of the most expensive shapes
// one request can have: the largest the shape caps admit, and (before
// the caps, Faults.NoShapeLimits) a few larger ones, one at a time.
func BenchmarkShapeCost(b *testing.B) {
	cookies := func(n int) string {
		var s strings.Builder
		for i := range n {
			fmt.Fprintf(&s, "c%d=%d; ", i, i)
		}
		return strings.TrimSuffix(s.String(), "; ")
	}
	// members is a JSON object of about size bytes in n members (n 0:
	// as many tiny ones as fit).
	members := func(size, n int) string {
		var s strings.Builder
		s.WriteString("{")
		for i := 0; s.Len() < size-16 && (n == 0 || i < n); i++ {
			v := "1"
			if n > 0 {
				v = `"` + strings.Repeat("lorem ipsum ", (size/n-12)/12) + `"`
			}
			fmt.Fprintf(&s, `"m%d":%s,`, i, v)
		}
		return strings.TrimSuffix(s.String(), ",") + "}"
	}
	bigHeaders := map[string]string{}
	for i := range 60 {
		bigHeaders[fmt.Sprintf("X-H%02d", i)] = strings.Repeat("v", 250)
	}
	type shape struct {
		name, method, target, body string
		hdr                        map[string]string
	}
	query := "/v1/accounts?" + strings.TrimSuffix(strings.Repeat("a=1&", 63), "&")
	admitted := []shape{
		{"benign GET", "GET", "/v1/accounts", "", nil},
		{"32 cookies (the cap)", "GET", "/v1/accounts", "", map[string]string{"Cookie": cookies(32)}},
		{"60 headers of 250 B (under the caps)", "GET", "/v1/accounts", "", bigHeaders},
		{"63 query arguments", "GET", query, "", nil},
		{"16 KiB JSON string (ledger cap)", "POST", "/v1/transfers", `{"memo":"` + strings.Repeat("lorem ipsum ", 1360) + `"}`, nil},
		{"16 KiB JSON of 128 members (both caps)", "POST", "/v1/transfers", members(16<<10, 128), nil},
		{"4 KiB JSON of 128 members (identity caps)", "POST", "/v1/sessions", members(4<<10, 128), nil},
	}
	before := []shape{
		{"1000 cookies", "GET", "/v1/accounts", "", map[string]string{"Cookie": cookies(1000)}},
		{"16 KiB JSON of ~1500 members", "POST", "/v1/transfers", members(16<<10, 0), nil},
		{"64 KiB JSON of ~6000 members", "POST", "/v1/transfers", members(64<<10, 0), nil},
	}
	run := func(b *testing.B, e *edge, s shape, reps int) {
		hdr := map[string]string{"Authorization": "Bearer " + e.userToken}
		for k, v := range s.hdr {
			hdr[k] = v
		}
		e.do("192.0.2.99", s.method, s.target, s.body, hdr) // warm
		cpu0 := cpuTime()
		code := 0
		for range reps {
			code = e.do("192.0.2.99", s.method, s.target, s.body, hdr).Code
		}
		b.ReportMetric(ms(cpuTime()-cpu0)/float64(reps), "cpu-ms/req")
		b.Logf("%s → %d", s.name, code)
	}
	for _, s := range admitted {
		b.Run("after/"+s.name, func(b *testing.B) {
			run(b, newEdge(b, func(c *Config) { c.PerIP = 10_000_000 }), s, 20)
		})
	}
	for _, s := range before {
		b.Run("after/"+s.name, func(b *testing.B) {
			run(b, newEdge(b, func(c *Config) { c.PerIP = 10_000_000 }), s, 20)
		})
		b.Run("before/"+s.name, func(b *testing.B) {
			run(b, newEdge(b, func(c *Config) {
				c.PerIP = 10_000_000
				c.Faults.NoShapeLimits = true
				c.WAF.BodyLimit = 128 << 10 // the WAF's body limit before the route caps
			}), s, 2)
		})
	}
}

func serveHTTP(b *testing.B, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	return "http://localhost:" + fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

// client dials from the loopback address from, one keep-alive connection.
func client(from string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, strings.Replace(addr, "localhost", "127.0.0.1", 1))
	}, MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}
	return &http.Client{Transport: tr, Timeout: time.Minute}
}

func get(c *http.Client, url string) (time.Duration, int) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("User-Agent", "victim/1.0")
	req.Header.Set("Accept", "text/plain")
	t0 := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return time.Since(t0), 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return time.Since(t0), resp.StatusCode
}

// victimLatencies sends n GET /healthz, one every 10 ms; an answer
// other than 200 counts as a minute.
func victimLatencies(c *http.Client, url string, n int) []time.Duration {
	var lat []time.Duration
	for range n {
		d, code := get(c, url+"/healthz")
		if code != http.StatusOK {
			d = time.Minute
		}
		lat = append(lat, d)
		time.Sleep(10 * time.Millisecond)
	}
	slices.Sort(lat)
	return lat
}

func pct(sorted []time.Duration, p int) time.Duration {
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
