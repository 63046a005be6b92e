package load

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func client(t *testing.T, tg Target) (*http.Client, *tls.Config) {
	t.Helper()
	pem, err := os.ReadFile(tg.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := &tls.Config{RootCAs: pool}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}, cfg
}

// TestServe: the bare server and the anchor chain answer the benchmark's
// two requests, and the anchor chain enforces its checks (no token, a
// replayed key with another body, an attack in the query).
func TestServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, mode := range []string{"bare", "anchor"} {
		t.Run(mode, func(t *testing.T) {
			tg, stop, err := Serve(ctx, mode, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			c, _ := client(t, tg)
			do := func(method, path, body, key, token string) int {
				t.Helper()
				req, _ := http.NewRequest(method, tg.URL+path, strings.NewReader(body))
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				if key != "" {
					req.Header.Set("Idempotency-Key", key)
				}
				req.Header.Set("Content-Type", "application/json")
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			transfer := `{"from":"` + tg.From + `","to":"` + tg.To + `","amount":1}`
			if got := do("GET", "/v1/accounts/"+tg.From, "", "", tg.Token); got != http.StatusOK {
				t.Fatalf("GET account = %d", got)
			}
			if got := do("POST", "/v1/transfers", transfer, `"k1"`, tg.Token); got != http.StatusCreated {
				t.Fatalf("POST transfer = %d", got)
			}
			if mode != "anchor" {
				return
			}
			if got := do("GET", "/v1/accounts/"+tg.From, "", "", ""); got != http.StatusUnauthorized {
				t.Fatalf("GET without a token = %d, want 401", got)
			}
			if got := do("POST", "/v1/transfers", strings.Replace(transfer, `"amount":1`, `"amount":2`, 1), `"k1"`, tg.Token); got != http.StatusUnprocessableEntity {
				t.Fatalf("key reused with another body = %d, want 422", got)
			}
			if got := do("GET", "/v1/accounts/"+tg.From+"?q=1'%20OR%20'1'='1", "", "", tg.Token); got != http.StatusForbidden {
				t.Fatalf("SQL injection in the query = %d, want the WAF's 403", got)
			}
		})
	}
}

// TestRun drives the bare server briefly and checks the accounting: every
// answer counted once, by status, and the server's CPU measured.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tg, stop, err := Serve(ctx, "bare", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	_, cfg := client(t, tg)
	// bounded by answers, not time: a loaded machine may be slow
	r, err := Run(ctx, Config{Conns: 2, Duration: time.Minute, MaxAnswers: 40, TLS: cfg, Want: http.StatusCreated, PIDs: []int{os.Getpid()},
		Request: func(ctx context.Context, w, n int) (*http.Request, error) {
			body := `{"from":"` + tg.From + `","to":"` + tg.To + `","amount":1}`
			if n%4 == 3 {
				body = `{"amount":0}` // refused: 400, counted as an error
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, tg.URL+"/v1/transfers", strings.NewReader(body))
			req.Header.Set("Idempotency-Key", strconv.Itoa(w)+"-"+strconv.Itoa(n))
			return req, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests == 0 || r.Errors == 0 || r.Statuses[http.StatusCreated] != r.Requests || r.Statuses[http.StatusBadRequest] != r.Errors {
		t.Fatalf("result %+v", r)
	}
	if r.P50 <= 0 || r.P99 < r.P50 || r.CPUPerReq < 0 {
		t.Fatalf("percentiles or CPU wrong: %+v", r)
	}
}
