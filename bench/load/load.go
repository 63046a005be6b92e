// Package load drives an HTTP server over loopback from many keep-alive
// connections and reports what a capacity plan needs: requests per
// second, latency percentiles and the server's CPU time per request
// (from /proc, so it counts every thread of the server process). It is
// the engine of the whole-chain load benchmark (bench/cmd/chainload).
package load

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Request builds the n-th request of worker w.
type Request func(ctx context.Context, w, n int) (*http.Request, error)

// Config is one load run.
type Config struct {
	Conns    int           // concurrent keep-alive connections, one worker each
	Duration time.Duration // measured time
	Warmup   time.Duration // unmeasured time first (connections, caches)
	TLS      *tls.Config
	Request  Request
	Want     int   // expected status; others count as errors
	PIDs     []int // server processes whose CPU time is measured
	// MaxAnswers, when set, ends the measured time early once that many
	// answers (of any status) were measured.
	MaxAnswers int
}

// Result of one run.
type Result struct {
	// Requests answered with the expected status; the rates, percentiles
	// and CPU per request count these only.
	Requests, Errors int
	Elapsed          time.Duration
	P50, P99         time.Duration
	CPUPerReq        time.Duration // server CPU (user+system) per request
	Statuses         map[int]int
	FirstError       string
}

// RPS is requests per second.
func (r Result) RPS() float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

// Run runs the load and returns what it measured.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Conns < 1 || cfg.Duration <= 0 || cfg.Request == nil {
		return Result{}, errors.New("load: Conns, Duration and Request are required")
	}
	var (
		measuring atomic.Bool
		stop      atomic.Bool
		mu        sync.Mutex
		lat       []time.Duration
		res       = Result{Statuses: map[int]int{}}
		wg        sync.WaitGroup
		answers   atomic.Int64
		enough    = make(chan struct{})
		once      sync.Once
	)
	for w := range cfg.Conns {
		tr := &http.Transport{TLSClientConfig: cfg.TLS, MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1,
			ForceAttemptHTTP2: false, DisableCompression: true}
		client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer tr.CloseIdleConnections()
			var mine []time.Duration
			statuses := map[int]int{}
			var errs int
			var first string
			for n := 0; !stop.Load(); n++ {
				req, err := cfg.Request(ctx, w, n)
				if err != nil {
					first = err.Error()
					break
				}
				t0 := time.Now()
				resp, err := client.Do(req)
				code := 0
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				d := time.Since(t0)
				if !measuring.Load() {
					continue
				}
				statuses[code]++
				if cfg.MaxAnswers > 0 && answers.Add(1) == int64(cfg.MaxAnswers) {
					once.Do(func() { close(enough) })
				}
				if code == cfg.Want {
					mine = append(mine, d)
				} else {
					errs++
					if first == "" {
						if err != nil {
							first = err.Error()
						} else {
							first = "HTTP " + strconv.Itoa(code)
						}
					}
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			for k, v := range statuses {
				res.Statuses[k] += v
			}
			res.Errors += errs
			if res.FirstError == "" {
				res.FirstError = first
			}
			mu.Unlock()
		}()
	}
	select {
	case <-time.After(cfg.Warmup):
	case <-ctx.Done():
	}
	cpu0, err := cpuTime(cfg.PIDs)
	if err != nil {
		stop.Store(true)
		wg.Wait()
		return Result{}, err
	}
	start := time.Now()
	measuring.Store(true)
	select {
	case <-time.After(cfg.Duration):
	case <-enough:
	case <-ctx.Done():
	}
	measuring.Store(false)
	elapsed := time.Since(start)
	cpu1, err := cpuTime(cfg.PIDs)
	stop.Store(true)
	wg.Wait()
	if err != nil {
		return Result{}, err
	}
	res.Requests, res.Elapsed = len(lat), elapsed
	if len(lat) > 0 {
		slices.Sort(lat)
		res.P50 = lat[len(lat)*50/100]
		res.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
		res.CPUPerReq = (cpu1 - cpu0) / time.Duration(len(lat))
	}
	return res, nil
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat's CPU times; Linux
// fixes it at 100 for user space.
const clockTick = 10 * time.Millisecond

// cpuTime sums user and system CPU time of the processes, all threads,
// children that exited included.
func cpuTime(pids []int) (time.Duration, error) {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return 0, fmt.Errorf("load: cpu time of %d: %w", pid, err)
		}
		// comm may hold spaces: fields start after the last ')'
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		// after ')': state(1) ... utime is field 14 of the line, i.e. f[11]
		if len(f) < 15 {
			return 0, fmt.Errorf("load: /proc/%d/stat: short", pid)
		}
		for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
			v, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("load: /proc/%d/stat: %w", pid, err)
			}
			total += time.Duration(v) * clockTick
		}
	}
	return total, nil
}
