package gateway

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/malai-sec/malai/examples/malai/internal/pki"
)

// TestStopClosesIdleHTTP2 holds an HTTP/2 connection open (as an idle
// browser or scanner does) and stops the server: stop reports success
// and the connection is closed, rather than the stop failing with the
// grace period's deadline and the connection left open (a restart would
// then fail).
func TestStopClosesIdleHTTP2(t *testing.T) {
	ca, err := pki.NewCA(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("gateway", "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serverTLS := &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	stop := ServeTLS(ln, serverTLS, http.NotFoundHandler(), Deadlines{Idle: time.Minute}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatalf("stop with an idle HTTP/2 connection: %v", err)
	}
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	for {
		if _, err := fr.ReadFrame(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the connection is still open after stop")
			}
			return
		}
	}
}
