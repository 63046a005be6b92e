package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/malai-sec/malai/examples/malai/internal/pki"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
)

// TestInternalListenersRequireAComponentCertificate attacks identity's
// and the ledger's internal listeners of a running system directly,
// skipping the gateway: without a client certificate the TLS handshake
// fails (the server's alert, not an HTTP answer); with a certificate of
// another CA likewise; with a certificate of the system CA naming the
// wrong component every route it may not call answers 403
// caller-not-allowed, and /metrics admits only the monitor.
func TestInternalListenersRequireAComponentCertificate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system")
	}
	sys, err := Start(context.Background(), Options{Addr: "127.0.0.1:0", DataDir: t.TempDir(), PerIP: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Close() })

	for _, name := range []string{platform.Identity, platform.Ledger} {
		host := strings.TrimPrefix(sys.URLs[name], "https://")
		t.Run(name+" without a client certificate", func(t *testing.T) {
			err := handshake(host, &tls.Config{RootCAs: sys.CA.Pool(), ServerName: "localhost"})
			if err == nil {
				t.Fatal("the handshake completed and a request was read without a client certificate")
			}
			// The server refuses at the handshake (TLS 1.3: the alert
			// arrives on the client's first read), it does not answer.
			if !strings.Contains(err.Error(), "certificate required") && !strings.Contains(err.Error(), "bad certificate") {
				t.Fatalf("not a handshake refusal: %v", err)
			}
		})
		t.Run(name+" with another CA's certificate", func(t *testing.T) {
			other, err := pki.NewCA(nil)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := other.Issue(platform.Gateway)
			if err != nil {
				t.Fatal(err)
			}
			err = handshake(host, &tls.Config{RootCAs: sys.CA.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{cert}})
			if err == nil || !strings.Contains(err.Error(), "certificate") {
				t.Fatalf("a certificate of another CA was not refused at the handshake: %v", err)
			}
		})
		t.Run(name+" with the right certificate", func(t *testing.T) {
			cert, err := sys.CA.Issue(platform.Monitor)
			if err != nil {
				t.Fatal(err)
			}
			if err := handshake(host, &tls.Config{RootCAs: sys.CA.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{cert}}); err != nil {
				t.Fatalf("control: a certificate of the system CA failed: %v", err)
			}
		})
	}

	for _, tc := range []struct {
		caller, component, method, path string
		want                            int
	}{
		// The gateway may not run jobs; only the worker may.
		{platform.Gateway, platform.Ledger, "POST", "/internal/v1/transfers", http.StatusForbidden},
		// The worker may not call user routes or read the audit internals.
		{platform.Worker, platform.Ledger, "GET", "/v1/accounts", http.StatusForbidden},
		{platform.Worker, platform.Ledger, "GET", "/internal/v1/audit/replay", http.StatusForbidden},
		// The ledger may not mint tokens or register keys at identity.
		{platform.Ledger, platform.Identity, "POST", "/oauth2/token", http.StatusForbidden},
		{platform.Ledger, platform.Identity, "POST", "/internal/v1/clients", http.StatusForbidden},
		// Only the web backend forwards sign-ins.
		{platform.Worker, platform.Identity, "POST", "/v1/sessions", http.StatusForbidden},
		// /metrics: the monitor only.
		{platform.Gateway, platform.Ledger, "GET", "/metrics", http.StatusForbidden},
		{platform.Worker, platform.Identity, "GET", "/metrics", http.StatusForbidden},
		{platform.Monitor, platform.Ledger, "GET", "/metrics", http.StatusOK},
		{platform.Monitor, platform.Identity, "GET", "/metrics", http.StatusOK},
		// Controls: a right caller reaches the route's own checks (the
		// token check answers 401, not the caller check's 403).
		{platform.Worker, platform.Ledger, "POST", "/internal/v1/transfers", http.StatusUnauthorized},
		{platform.Ledger, platform.Identity, "GET", "/.well-known/jwks.json", http.StatusOK},
	} {
		t.Run(tc.caller+" "+tc.method+" "+tc.component+tc.path, func(t *testing.T) {
			c, err := sys.ComponentClient(tc.caller)
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest(tc.method, sys.URLs[tc.component]+tc.path, strings.NewReader("{}"))
			req.Header.Set("Content-Type", "application/json")
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.want)
			}
			if tc.want == http.StatusForbidden {
				var p struct{ Type string }
				if json.NewDecoder(res.Body).Decode(&p) != nil || !strings.HasSuffix(p.Type, "caller-not-allowed") {
					t.Fatalf("refused by something other than the caller check: %q", p.Type)
				}
			}
		})
	}
}

// handshake dials addr with cfg, completes the handshake and sends one
// request, returning the first error: with TLS 1.3 a server that refuses
// the client's certificate says so in an alert the client reads after
// its side of the handshake is done.
func handshake(addr string, cfg *tls.Config) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	b := make([]byte, 64)
	n, err := conn.Read(b)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(b[:n]), "HTTP/1.1 ") {
		return errors.New("no HTTP answer: " + string(b[:n]))
	}
	return nil
}

// TestRestartKeepsTheCA: a client that saved the first start's ca.pem
// connects to the gateway and the internal listeners after a restart on
// the same data directory, and the CA key file stays 0600.
func TestRestartKeepsTheCA(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system twice")
	}
	data := t.TempDir()
	first, err := Start(context.Background(), Options{Addr: "127.0.0.1:0", DataDir: data})
	if err != nil {
		t.Fatal(err)
	}
	saved, err := os.ReadFile(first.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Logf("close: %v", err)
	}

	second, err := Start(context.Background(), Options{Addr: "127.0.0.1:0", DataDir: data})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { second.Close() })
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(saved) {
		t.Fatal("ca.pem holds no certificate")
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	res, err := c.Get(second.GatewayURL + "/healthz")
	if err != nil {
		t.Fatalf("the first start's ca.pem no longer verifies the gateway: %v", err)
	}
	res.Body.Close()
	// The internal listeners too, for a monitor holding the same file.
	cert, err := second.CA.Issue(platform.Monitor)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{platform.Identity, platform.Ledger} {
		host := strings.TrimPrefix(second.URLs[name], "https://")
		if err := handshake(host, &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{cert}}); err != nil {
			t.Fatalf("%s with the first start's ca.pem: %v", name, err)
		}
	}
	fi, err := os.Stat(filepath.Join(filepath.Dir(second.CA.CertFile()), pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode %v, want 0600", fi.Mode().Perm())
	}
}
