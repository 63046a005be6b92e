// Command chainload is the whole-chain load benchmark: it measures
// requests per second, p50, p99 and server CPU per request for
// GET /v1/accounts/{id} and POST /v1/transfers through
//
//   - malai:  the reference system (gateway → ledger, every check on),
//     started from a binary built from examples/malai;
//   - anchor: the same chain built from the usual libraries
//     (bench/load.Serve "anchor");
//   - bare:   the same handlers with no middleware.
//
// The three run in one invocation, interleaved round by round, each its
// own process, on loopback over TLS with keep-alive connections. The
// medians of the rounds are printed as a Markdown table.
//
//	go build -o /tmp/malai ./examples/malai
//	cd bench && go run ./cmd/chainload -malai /tmp/malai -c 16 -d 10s -rounds 3
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/malai-sec/malai/bench/load"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		if err := serve(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "chainload serve:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "chainload:", err)
		os.Exit(1)
	}
}

// serve runs one bench server in this process and prints its target as
// one JSON line; it stops when stdin closes.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	mode := fs.String("mode", "bare", "bare or anchor")
	dir := fs.String("data", "", "data directory")
	fs.Parse(args)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t, stop, err := load.Serve(ctx, *mode, *dir)
	if err != nil {
		return err
	}
	defer stop()
	if err := json.NewEncoder(os.Stdout).Encode(t); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

type target struct {
	name string
	load.Target
	tls  *tls.Config
	stop func()
}

func run(args []string) error {
	fs := flag.NewFlagSet("chainload", flag.ExitOnError)
	malaiBin := fs.String("malai", "", "examples/malai binary (empty: bare and anchor only)")
	malaiArgs := fs.String("malai-args", "", "extra flags for \"malai run\" (space-separated), e.g. the raised limits")
	conns := fs.Int("c", 16, "concurrent keep-alive connections")
	dur := fs.Duration("d", 10*time.Second, "measured time per run")
	warm := fs.Duration("warmup", 2*time.Second, "unmeasured time before each run")
	rounds := fs.Int("rounds", 3, "rounds; each runs every target once per endpoint")
	only := fs.String("only", "", "run only these targets (comma-separated: malai,anchor,bare)")
	epFlag := fs.String("endpoints", "get,post", "endpoints to load (get, post)")
	fs.Parse(args)
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "chainload-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	var targets []*target
	want := func(n string) bool { return *only == "" || slices.Contains(strings.Split(*only, ","), n) }
	defer func() {
		for _, t := range targets {
			t.stop()
		}
	}()
	for _, mode := range []string{"bare", "anchor"} {
		if !want(mode) {
			continue
		}
		t, err := startBench(mode, filepath.Join(dir, mode))
		if err != nil {
			return err
		}
		targets = append(targets, t)
	}
	if *malaiBin != "" && want("malai") {
		t, err := startMalai(ctx, *malaiBin, filepath.Join(dir, "malai"), strings.Fields(*malaiArgs))
		if err != nil {
			return err
		}
		targets = append(targets, t)
	}
	type key struct{ target, endpoint string }
	results := map[key][]load.Result{}
	var endpoints []string
	for _, e := range strings.Split(*epFlag, ",") {
		switch e {
		case "get":
			endpoints = append(endpoints, "GET /v1/accounts/{id}")
		case "post":
			endpoints = append(endpoints, "POST /v1/transfers")
		default:
			return fmt.Errorf("-endpoints: unknown %q", e)
		}
	}
	for round := range *rounds {
		for _, ep := range endpoints {
			for _, t := range targets {
				r, err := load.Run(ctx, load.Config{Conns: *conns, Duration: *dur, Warmup: *warm, TLS: t.tls,
					Request: requester(t, ep, round), Want: want200(ep), PIDs: []int{t.PID}})
				if err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "round %d %-7s %-22s %8.0f req/s p50 %-8v p99 %-8v cpu/req %-8v errors %d %v\n",
					round, t.name, ep, r.RPS(), r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond),
					r.CPUPerReq.Round(time.Microsecond), r.Errors, r.FirstError)
				results[key{t.name, ep}] = append(results[key{t.name, ep}], r)
			}
		}
	}
	fmt.Printf("\n%d connections, %v per run after %v warm-up, %d rounds, medians; load average at the end %s\n\n",
		*conns, *dur, *warm, *rounds, loadAvg())
	fmt.Println("| endpoint | chain | req/s | p50 | p99 | server CPU/req | errors | req/s vs anchor |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, ep := range endpoints {
		anchorRPS := median(results[key{"anchor", ep}], func(r load.Result) float64 { return r.RPS() })
		for _, t := range targets {
			rs := results[key{t.name, ep}]
			rps := median(rs, func(r load.Result) float64 { return r.RPS() })
			p50 := time.Duration(median(rs, func(r load.Result) float64 { return float64(r.P50) }))
			p99 := time.Duration(median(rs, func(r load.Result) float64 { return float64(r.P99) }))
			cpu := time.Duration(median(rs, func(r load.Result) float64 { return float64(r.CPUPerReq) }))
			errs := 0
			for _, r := range rs {
				errs += r.Errors
			}
			ratio := "—"
			if anchorRPS > 0 {
				ratio = fmt.Sprintf("%.2f×", rps/anchorRPS)
			}
			fmt.Printf("| `%s` | %s | %.0f | %v | %v | %v | %d | %s |\n", ep, t.name, rps, p50.Round(10*time.Microsecond),
				p99.Round(10*time.Microsecond), cpu.Round(time.Microsecond), errs, ratio)
		}
	}
	return nil
}

func want200(ep string) int {
	if strings.HasPrefix(ep, "POST") {
		return http.StatusCreated
	}
	return http.StatusOK
}

// requester builds the requests of one run. Each connection plays one
// client behind a proxy the gateways trust (loopback): X-Forwarded-For
// names an address of its own, so per-client limits and fairness apply
// per connection, as with real clients.
func requester(t *target, ep string, round int) load.Request {
	return func(ctx context.Context, w, n int) (*http.Request, error) {
		xff := "198.51.100." + strconv.Itoa(1+w%250)
		if strings.HasPrefix(ep, "GET") {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL+"/v1/accounts/"+t.From, nil)
			if err != nil {
				return nil, err
			}
			auth(req, t.Token)
			req.Header.Set("X-Forwarded-For", xff)
			return req, nil
		}
		body := `{"from":"` + t.From + `","to":"` + t.To + `","amount":1}`
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL+"/v1/transfers", strings.NewReader(body))
		if err != nil {
			return nil, err
		}
		auth(req, t.Token)
		req.Header.Set("X-Forwarded-For", xff)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", `"load-`+strconv.Itoa(round)+"-"+strconv.Itoa(w)+"-"+strconv.Itoa(n)+"-"+strconv.FormatInt(time.Now().UnixNano(), 36)+`"`)
		return req, nil
	}
}

func auth(r *http.Request, token string) {
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
}

func median(rs []load.Result, f func(load.Result) float64) float64 {
	if len(rs) == 0 {
		return 0
	}
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func tlsFor(caFile string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no CA certificate in " + caFile)
	}
	return &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}}, nil
}

// startBench starts "chainload serve -mode mode" as a child process.
func startBench(mode, dir string) (*target, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "serve", "-mode", mode, "-data", dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() { stdin.Close(); _ = cmd.Wait() }
	var t target
	if err := json.NewDecoder(bufio.NewReader(out)).Decode(&t.Target); err != nil {
		stop()
		return nil, fmt.Errorf("%s server: %w", mode, err)
	}
	t.name, t.stop = mode, stop
	if t.tls, err = tlsFor(t.CA); err != nil {
		stop()
		return nil, err
	}
	return &t, nil
}

// startMalai starts the reference system and prepares a funded customer:
// sign-up and sign-in through the gateway, two accounts, and a deposit by
// a teller (granted with a line in the ledger's policy file and SIGHUP).
func startMalai(ctx context.Context, bin, dir string, extra []string) (*target, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	args := append([]string{"run", "-addr", addr, "-http-addr", "", "-data", dir, "-quiet",
		"-trusted-proxies", "127.0.0.1/32,::1/128"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	t := &target{name: "malai"}
	t.URL, t.PID = "https://"+addr, cmd.Process.Pid
	t.stop = func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }
	fail := func(err error) (*target, error) { t.stop(); return nil, err }
	deadline := time.Now().Add(90 * time.Second)
	var c *http.Client
	for {
		if t.tls == nil {
			t.tls, _ = tlsFor(filepath.Join(dir, "pki", "ca.pem"))
		}
		if t.tls != nil {
			c = &http.Client{Transport: &http.Transport{TLSClientConfig: t.tls}, Timeout: 10 * time.Second}
			if resp, err := c.Get(t.URL + "/healthz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
		}
		if time.Now().After(deadline) {
			return fail(errors.New("the reference system did not become healthy"))
		}
		time.Sleep(200 * time.Millisecond) // polling a child process's start-up
	}
	call := func(method, path, token string, body any, hdr ...string) (int, []byte, error) {
		b, _ := json.Marshal(body)
		req, err := http.NewRequestWithContext(ctx, method, t.URL+path, bytes.NewReader(b))
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		auth(req, token)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		rb, err := io.ReadAll(resp.Body)
		return resp.StatusCode, rb, err
	}
	user := func(name string) (token, sub string, err error) {
		pw := "Quiet-Harbor-Lantern-" + strconv.Itoa(len(name)*7919) + "!"
		if st, b, err := call("POST", "/v1/users", "", map[string]string{"username": name, "password": pw}); err != nil || st != http.StatusCreated {
			return "", "", fmt.Errorf("sign-up %s: %d %s %v", name, st, b, err)
		}
		st, b, err := call("POST", "/v1/sessions", "", map[string]string{"username": name, "password": pw})
		var tr struct {
			AccessToken string `json:"access_token"`
		}
		if err != nil || st != http.StatusOK || json.Unmarshal(b, &tr) != nil || tr.AccessToken == "" {
			return "", "", fmt.Errorf("sign-in %s: %d %s %v", name, st, b, err)
		}
		parts := strings.Split(tr.AccessToken, ".")
		var claims struct {
			Sub string `json:"sub"`
		}
		if len(parts) != 3 {
			return "", "", errors.New("token is not a JWS")
		}
		p, _ := base64.RawURLEncoding.DecodeString(parts[1])
		if json.Unmarshal(p, &claims) != nil || claims.Sub == "" {
			return "", "", errors.New("token has no sub")
		}
		return tr.AccessToken, claims.Sub, nil
	}
	run := strconv.FormatInt(time.Now().Unix()%100000, 10)
	if t.Token, _, err = user("loadcustomer" + run); err != nil {
		return fail(err)
	}
	t.From, t.To = "acc-load-from-"+run, "acc-load-to-"+run
	for _, id := range []string{t.From, t.To} {
		if st, b, err := call("POST", "/v1/accounts", t.Token, map[string]string{"id": id}); err != nil || st != http.StatusCreated {
			return fail(fmt.Errorf("open account %s: %d %s %v", id, st, b, err))
		}
	}
	tellerToken, tellerSub, err := user("loadteller" + run)
	if err != nil {
		return fail(err)
	}
	pf, err := os.OpenFile(filepath.Join(dir, "ledger-policy.csv"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(pf, "g, %s, role:teller\n", tellerSub)
	pf.Close()
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return fail(err)
	}
	for i := 0; ; i++ {
		st, b, err := call("POST", "/v1/deposits", tellerToken, map[string]any{"account": t.From, "amount": int64(100_000_000)},
			"Idempotency-Key", `"load-fund-`+run+`"`)
		if err == nil && st == http.StatusCreated {
			break
		}
		if i == 50 {
			return fail(fmt.Errorf("deposit: %d %s %v", st, b, err))
		}
		time.Sleep(100 * time.Millisecond) // the policy reload is asynchronous to the signal
	}
	return t, nil
}
