package pki

import (
	"bytes"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestIssuedCertificateServesTLS(t *testing.T) {
	ca, err := NewCA(nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue("gateway", "localhost", "127.0.0.1", "::1")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatalf("client trusting only the CA: %v", err)
	}
	resp.Body.Close()

	other, _ := NewCA(nil)
	c2 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: other.Pool()}}}
	if _, err := c2.Get(srv.URL); err == nil {
		t.Fatal("a client trusting another CA accepted the certificate")
	}
}

func TestWriteCertIsPublicOnly(t *testing.T) {
	ca, _ := NewCA(func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) })
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := ca.WriteCert(p); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if len(b) == 0 || string(b[:27]) != "-----BEGIN CERTIFICATE-----" {
		t.Fatalf("unexpected file: %q", b)
	}
	for _, bad := range []string{"PRIVATE KEY", "EC PRIVATE"} {
		if bytes.Contains(b, []byte(bad)) {
			t.Fatalf("private key material written to disk")
		}
	}
	if _, err := ca.Issue("x"); err == nil {
		t.Fatal("certificate without names issued")
	}
}
