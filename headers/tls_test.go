package headers

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"slices"
	"testing"
	"time"
)

// selfSigned returns a certificate for 127.0.0.1 with the given key.
func selfSigned(t *testing.T, key any, pub any) tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "malai test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func testCerts(t *testing.T) []tls.Certificate {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return []tls.Certificate{selfSigned(t, ec, &ec.PublicKey), selfSigned(t, rk, &rk.PublicKey)}
}

// listen serves TLS handshakes with cfg on 127.0.0.1 until the test ends.
func listen(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
			}()
		}
	}()
	return ln.Addr().String()
}

func TestTLSConfigFloorAndSuites(t *testing.T) {
	certs := testCerts(t)
	hardened := listen(t, TLSConfig(&tls.Config{Certificates: certs}))
	// The control server accepts everything the clients below offer, so a
	// refusal from the hardened server is the config's doing.
	permissive := listen(t, &tls.Config{Certificates: certs, MinVersion: tls.VersionTLS10,
		CipherSuites: append(TLSCipherSuites(),
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_RSA_WITH_AES_128_GCM_SHA256)})
	cbc := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}

	tests := []struct {
		name      string
		client    *tls.Config
		accept    bool
		wantSuite uint16
		wantVer   uint16
		wantALPN  string
	}{
		{"TLS 1.0", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10}, false, 0, 0, ""},
		{"TLS 1.1", &tls.Config{MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11}, false, 0, 0, ""},
		{"TLS 1.2 CBC only", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: cbc}, false, 0, 0, ""},
		{"TLS 1.2 RSA key exchange", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}}, false, 0, 0, ""},
		{"TLS 1.2 ECDHE-ECDSA AES-GCM", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, NextProtos: []string{"h2", "http/1.1"}},
			true, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.VersionTLS12, "h2"},
		{"TLS 1.2 ECDHE-RSA ChaCha20", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}},
			true, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, tls.VersionTLS12, ""},
		{"TLS 1.3", &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}}, true, 0, tls.VersionTLS13, "h2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dial := func(addr string) (tls.ConnectionState, error) {
				cfg := tc.client.Clone()
				cfg.InsecureSkipVerify = true // self-signed; the handshake parameters are under test
				c, err := tls.Dial("tcp", addr, cfg)
				if err != nil {
					return tls.ConnectionState{}, err
				}
				defer c.Close()
				return c.ConnectionState(), nil
			}
			if !tc.accept {
				if _, err := dial(permissive); err != nil {
					t.Fatalf("control server refused too (test proves nothing): %v", err)
				}
			}
			st, err := dial(hardened)
			if (err == nil) != tc.accept {
				t.Fatalf("handshake err = %v, want accepted=%v", err, tc.accept)
			}
			if !tc.accept {
				return
			}
			if st.Version != tc.wantVer || (tc.wantSuite != 0 && st.CipherSuite != tc.wantSuite) || st.NegotiatedProtocol != tc.wantALPN {
				t.Fatalf("negotiated %s %s ALPN %q", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.NegotiatedProtocol)
			}
		})
	}
}

func TestTLSConfigKeepsBaseAndRaisesFloor(t *testing.T) {
	base := &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11, ServerName: "x",
		CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}}
	c := TLSConfig(base)
	if c.MinVersion != tls.VersionTLS12 || c.MaxVersion != 0 || c.ServerName != "x" ||
		!slices.Equal(c.CipherSuites, TLSCipherSuites()) || !slices.Equal(c.NextProtos, []string{"h2", "http/1.1"}) {
		t.Fatalf("hardened config: %+v", c)
	}
	if base.MinVersion != tls.VersionTLS10 || len(base.CipherSuites) != 1 {
		t.Fatal("TLSConfig modified its argument")
	}
	if c := TLSConfig(&tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"acme-tls/1"}}); c.MinVersion != tls.VersionTLS13 || c.NextProtos[0] != "acme-tls/1" {
		t.Fatalf("higher floor or ALPN lost: %+v", c)
	}
	for _, id := range TLSCipherSuites() {
		for _, s := range tls.InsecureCipherSuites() {
			if s.ID == id {
				t.Fatalf("insecure suite %s allowed", s.Name)
			}
		}
	}
}
