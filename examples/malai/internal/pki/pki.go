// Package pki is the reference system's development PKI: an ECDSA P-256
// certificate authority created in memory at start-up, which issues a
// short-lived server certificate to each component.
//
// Private keys never touch the disk (the security page promises no
// plaintext on disk at any layer); only the CA certificate, which is
// public, is written so that clients such as curl can trust the system.
// A production deployment replaces this package with its own PKI.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

// CA is an in-memory certificate authority. It is safe for concurrent use.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	der  []byte
	now  func() time.Time
}

// NewCA creates a CA valid for 30 days from now().
func NewCA(now func() time.Time) (*CA, error) {
	if now == nil {
		now = time.Now
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	t := now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Malai development CA", Organization: []string{"Malai reference system"}},
		NotBefore:             t.Add(-time.Minute),
		NotAfter:              t.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, der: der, now: now}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

// Pool returns a cert pool trusting only this CA.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.cert)
	return p
}

// PEM returns the CA certificate in PEM form.
func (c *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.der})
}

// WriteCert writes the CA certificate (public) to path.
func (c *CA) WriteCert(path string) error {
	return os.WriteFile(path, c.PEM(), 0o644)
}

// Issue returns a server certificate for the given DNS names and IPs,
// valid for 7 days.
func (c *CA) Issue(commonName string, names ...string) (tls.Certificate, error) {
	return c.issue(commonName, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, names)
}

// IssueClient returns a client certificate naming one component; services
// use it to recognise the gateway and the worker as trusted hops.
func (c *CA) IssueClient(component string) (tls.Certificate, error) {
	return c.issue(component, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, []string{component})
}

func (c *CA) issue(commonName string, usage []x509.ExtKeyUsage, names []string) (tls.Certificate, error) {
	if len(names) == 0 {
		return tls.Certificate{}, errors.New("pki: a certificate needs at least one name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	t := c.now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    t.Add(-time.Minute),
		NotAfter:     t.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: issue %s: %w", commonName, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, c.der}, PrivateKey: key, Leaf: leaf}, nil
}
