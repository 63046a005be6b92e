package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/malai-sec/malai/internal/fakeclock"
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
	if cert.Leaf.Subject.CommonName != "gateway" {
		t.Fatalf("common name %q", cert.Leaf.Subject.CommonName)
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
	if _, err := ca.Issue(""); err == nil {
		t.Fatal("a certificate naming no component was issued")
	}
}

func TestCAIsKeptAcrossRestarts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	first, err := LoadOrCreate(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	certs1, err := first.Certs("ledger")
	if err != nil {
		t.Fatal(err)
	}
	leaf1, _ := certs1.Certificate()
	fi, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode %v, want 0600", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(filepath.Join(dir, "ledger-key.pem")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("leaf key mode %v, want 0600", fi.Mode().Perm())
	}
	pub, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	for _, bad := range []string{"PRIVATE KEY"} {
		if bytes.Contains(pub, []byte(bad)) {
			t.Fatal("private key material in ca.pem")
		}
	}

	second, err := LoadOrCreate(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !second.Cert().Equal(first.Cert()) {
		t.Fatal("a restart replaced the CA")
	}
	certs2, err := second.Certs("ledger")
	if err != nil {
		t.Fatal(err)
	}
	leaf2, _ := certs2.Certificate()
	if !leaf2.Leaf.Equal(leaf1.Leaf) {
		t.Fatal("a restart re-issued a leaf that was not due")
	}
	// A client holding the first start's ca.pem trusts the second start's
	// certificates.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pub)
	if _, err := leaf2.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatal(err)
	}
}

func TestHalfAPKIIsRefused(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreate(dir, nil); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, CAKeyFile))
	if _, err := LoadOrCreate(dir, nil); err == nil {
		t.Fatal("a CA certificate without its key was accepted (a new CA would silently replace it)")
	}
}

func TestLeafRenewedBeforeExpiry(t *testing.T) {
	clk := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ca, err := LoadOrCreate(t.TempDir(), clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ca.Certs("worker")
	if err != nil {
		t.Fatal(err)
	}
	first, _ := certs.Certificate()
	clk.Advance(LeafLifetime / 2)
	same, _ := certs.Certificate()
	if !same.Leaf.Equal(first.Leaf) {
		t.Fatal("renewed with two thirds of the lifetime left... or less than a third: check the window")
	}
	clk.Advance(LeafLifetime/3 - time.Hour + time.Minute)
	renewed, _ := certs.Certificate()
	if renewed.Leaf.Equal(first.Leaf) {
		t.Fatal("not renewed with less than a third of the lifetime left")
	}
	if !renewed.Leaf.NotAfter.After(clk.Now().Add(LeafLifetime / 2)) {
		t.Fatalf("renewed leaf expires %v", renewed.Leaf.NotAfter)
	}
	// A restart picks up the renewed leaf from disk.
	again, err := ca.Certs("worker")
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := again.Certificate(); !c.Leaf.Equal(renewed.Leaf) {
		t.Fatal("the renewed leaf was not kept")
	}
}

func TestLoadCertsReloadsAndChecksTheName(t *testing.T) {
	ca, err := LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	write := func(name string) *tls.Certificate {
		c, err := ca.Issue(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := savePair(certFile, keyFile, &c); err != nil {
			t.Fatal(err)
		}
		return &c
	}
	write("identity")
	if _, err := LoadCerts("ledger", certFile, keyFile, ca.CertFile()); err == nil {
		t.Fatal("a certificate naming another component was loaded")
	}
	first := write("ledger")
	certs, err := LoadCerts("ledger", certFile, keyFile, ca.CertFile())
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := certs.Certificate(); !c.Leaf.Equal(first.Leaf) {
		t.Fatal("not the file's certificate")
	}
	second := write("ledger")
	future := time.Now().Add(time.Hour)
	os.Chtimes(certFile, future, future)
	clk := fakeclock.New(time.Now().Add(2 * time.Minute))
	certs.now = clk.Now
	if c, _ := certs.Certificate(); !c.Leaf.Equal(second.Leaf) {
		t.Fatal("a replaced certificate file was not reloaded")
	}
}

func TestMutualTLSRequiresAClientCertificate(t *testing.T) {
	ca, _ := NewCA(nil)
	server, _ := ca.Certs("ledger")
	client, _ := ca.Certs("worker")
	var mu sync.Mutex
	var peer string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		peer = r.TLS.VerifiedChains[0][0].Subject.CommonName
		mu.Unlock()
	}))
	srv.TLS = server.ServerTLS()
	// httptest puts its own certificate in Certificates when empty, which
	// wins over GetCertificate for a client dialling an IP address.
	srv.TLS.Certificates = []tls.Certificate{mustCert(t, server)}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	if _, err := noCert.Get(srv.URL); err == nil {
		t.Fatal("a client without a certificate got through")
	}
	other, _ := NewCA(nil)
	stranger, _ := other.Certs("worker")
	foreign := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{mustCert(t, stranger)}}}}
	if _, err := foreign.Get(srv.URL); err == nil {
		t.Fatal("a certificate of another CA got through")
	}
	ok := &http.Client{Transport: &http.Transport{TLSClientConfig: client.ClientTLS()}}
	res, err := ok.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	if peer != "worker" {
		t.Fatalf("server saw %q", peer)
	}
}

func mustCert(t *testing.T, c *Certs) tls.Certificate {
	t.Helper()
	cert, err := c.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	return *cert
}
