// Package pki is the reference system's development PKI: an ECDSA P-256
// certificate authority kept under the data directory, which issues each
// component one certificate naming it (subject common name = component)
// for both its internal listener and its calls to peers (mutual TLS).
//
// The CA is created on first start and reused on every later one, so a
// client holding the first start's ca.pem keeps trusting the system. The
// CA key is written 0600 beside it; component keys likewise. Leaves are
// renewed when less than a third of their lifetime is left, while the
// system runs. In split mode an operator's PKI provides the files instead
// ([LoadCerts]): the component then reloads its certificate when the files
// change and never needs the CA key.
//
// A production deployment keeps the CA key offline (or in a KMS/HSM) and
// issues the components' certificates with its own tooling; this package
// is the single-machine stand-in.
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
	"path/filepath"
	"sync"
	"time"

	"github.com/malai-sec/malai/examples/malai/internal/atomicfile"
)

// Lifetimes of what this package issues.
const (
	CALifetime   = 5 * 365 * 24 * time.Hour
	LeafLifetime = 30 * 24 * time.Hour
)

// File names under the PKI directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// DefaultHosts are the names every development leaf carries.
var DefaultHosts = []string{"localhost", "127.0.0.1", "::1"}

// CA is a certificate authority. It is safe for concurrent use.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	der  []byte
	dir  string
	now  func() time.Time
}

// NewCA creates an in-memory CA valid for CALifetime from now() (tests).
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
		NotAfter:              t.Add(CALifetime),
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

// LoadOrCreate returns the CA kept in dir, creating it (and dir, 0700) on
// first use. A CA within a tenth of its lifetime of expiry is an error: it
// must be replaced deliberately, since every client trusts it.
func LoadOrCreate(dir string, now func() time.Time) (*CA, error) {
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	certPEM, cerr := os.ReadFile(certPath)
	keyPEM, kerr := os.ReadFile(keyPath)
	switch {
	case cerr == nil && kerr == nil:
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("pki: %s: %w", dir, err)
		}
		key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("pki: %s: the CA key is not ECDSA", keyPath)
		}
		cert, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return nil, err
		}
		if !cert.IsCA {
			return nil, fmt.Errorf("pki: %s is not a CA certificate", certPath)
		}
		if fi, err := os.Stat(keyPath); err == nil && readableByOthers(fi) {
			return nil, fmt.Errorf("pki: %s is readable by others (mode %v); chmod 600 it", keyPath, fi.Mode().Perm())
		}
		if now().Add(CALifetime / 10).After(cert.NotAfter) {
			return nil, fmt.Errorf("pki: the CA in %s expires %s; replace it", dir, cert.NotAfter.Format(time.DateOnly))
		}
		return &CA{cert: cert, key: key, der: cert.Raw, dir: dir, now: now}, nil
	case errors.Is(cerr, os.ErrNotExist) && errors.Is(kerr, os.ErrNotExist):
		ca, err := NewCA(now)
		if err != nil {
			return nil, err
		}
		ca.dir = dir
		kb, err := x509.MarshalECPrivateKey(ca.key)
		if err != nil {
			return nil, err
		}
		if err := atomicfile.Write(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
			return nil, err
		}
		if err := atomicfile.Write(certPath, ca.PEM(), 0o644); err != nil {
			return nil, err
		}
		return ca, nil
	case cerr != nil && !errors.Is(cerr, os.ErrNotExist):
		return nil, cerr
	case kerr != nil && !errors.Is(kerr, os.ErrNotExist):
		return nil, kerr
	default:
		return nil, fmt.Errorf("pki: %s holds only one of %s and %s", dir, CACertFile, CAKeyFile)
	}
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

// Cert returns the CA certificate.
func (c *CA) Cert() *x509.Certificate { return c.cert }

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

// CertFile is the path of the CA certificate ("" for an in-memory CA).
func (c *CA) CertFile() string {
	if c.dir == "" {
		return ""
	}
	return filepath.Join(c.dir, CACertFile)
}

// WriteCert writes the CA certificate (public) to path.
func (c *CA) WriteCert(path string) error {
	return atomicfile.Write(path, c.PEM(), 0o644)
}

// Issue returns a leaf naming component (its common name) valid for
// LeafLifetime for both server and client authentication, with hosts as
// its DNS and IP subject alternative names.
func (c *CA) Issue(component string, hosts ...string) (tls.Certificate, error) {
	if component == "" {
		return tls.Certificate{}, errors.New("pki: a certificate names a component")
	}
	if len(hosts) == 0 {
		hosts = DefaultHosts
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	t := c.now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: component, Organization: []string{"Malai reference system"}},
		NotBefore:    t.Add(-time.Minute),
		NotAfter:     t.Add(LeafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, n := range hosts {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: issue %s: %w", component, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, c.der}, PrivateKey: key, Leaf: leaf}, nil
}

// Certs returns component's certificate source backed by this CA: the
// leaf kept in the CA's directory (<component>.pem, <component>-key.pem)
// is reused while it has more than a third of its lifetime left and
// re-issued (and saved) otherwise, at start and while the component runs.
// An in-memory CA issues in memory only.
func (c *CA) Certs(component string, hosts ...string) (*Certs, error) {
	if len(hosts) == 0 {
		hosts = DefaultHosts
	}
	s := &Certs{component: component, roots: c.Pool(), now: c.now}
	var certPath, keyPath string
	if c.dir != "" {
		certPath, keyPath = filepath.Join(c.dir, component+".pem"), filepath.Join(c.dir, component+"-key.pem")
	}
	s.load = func(current *tls.Certificate) (*tls.Certificate, error) {
		if current == nil && certPath != "" {
			if kept, err := readPair(certPath, keyPath); err == nil && c.issued(kept) && coversHosts(kept.Leaf, hosts) {
				current = kept
			}
		}
		if current != nil && !dueForRenewal(current.Leaf, c.now()) {
			return current, nil
		}
		fresh, err := c.Issue(component, hosts...)
		if err != nil {
			return nil, err
		}
		if certPath != "" {
			if err := savePair(certPath, keyPath, &fresh); err != nil {
				return nil, err
			}
		}
		return &fresh, nil
	}
	if _, err := s.Certificate(); err != nil {
		return nil, err
	}
	return s, nil
}

// issued reports whether cert was signed by this CA.
func (c *CA) issued(cert *tls.Certificate) bool {
	return cert.Leaf != nil && cert.Leaf.CheckSignatureFrom(c.cert) == nil
}

func coversHosts(leaf *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if leaf.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

// dueForRenewal: less than a third of the leaf's lifetime is left.
func dueForRenewal(leaf *x509.Certificate, now time.Time) bool {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return now.Add(life / 3).After(leaf.NotAfter)
}

// LoadCerts returns component's certificate source from files an
// operator provides: certFile (the leaf, optionally followed by its
// chain), keyFile, and caFile (the roots trusted for peers). The files are
// re-read when their modification time changes, so replacing them rotates
// the certificate without a restart. The leaf's common name must be
// component.
func LoadCerts(component, certFile, keyFile, caFile string) (*Certs, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("pki: %s holds no certificate", caFile)
	}
	s := &Certs{component: component, roots: roots, now: time.Now}
	var stamp time.Time
	s.load = func(current *tls.Certificate) (*tls.Certificate, error) {
		fi, err := os.Stat(certFile)
		if err != nil {
			if current != nil {
				return current, nil
			}
			return nil, err
		}
		if current != nil && fi.ModTime().Equal(stamp) {
			return current, nil
		}
		pair, err := readPair(certFile, keyFile)
		if err != nil {
			if current != nil {
				return current, nil // keep serving while an operator swaps the files
			}
			return nil, err
		}
		if pair.Leaf.Subject.CommonName != component {
			return nil, fmt.Errorf("pki: %s names %q, not %q", certFile, pair.Leaf.Subject.CommonName, component)
		}
		stamp = fi.ModTime()
		return pair, nil
	}
	if _, err := s.Certificate(); err != nil {
		return nil, err
	}
	return s, nil
}

func readPair(certPath, keyPath string) (*tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, err
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, err
		}
	}
	return &pair, nil
}

func savePair(certPath, keyPath string, c *tls.Certificate) error {
	kb, err := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		return err
	}
	if err := atomicfile.Write(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	var chain []byte
	for _, der := range c.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return atomicfile.Write(certPath, chain, 0o644)
}

// Certs is one component's TLS material: the roots it trusts for peers
// and its own certificate, renewed (or reloaded from files) when due. It
// is safe for concurrent use.
type Certs struct {
	component string
	roots     *x509.CertPool
	now       func() time.Time
	load      func(current *tls.Certificate) (*tls.Certificate, error)

	mu      sync.Mutex
	cur     *tls.Certificate
	checked time.Time
}

// Component is the name the certificate carries.
func (s *Certs) Component() string { return s.component }

// Roots is the pool peers' certificates must chain to.
func (s *Certs) Roots() *x509.CertPool { return s.roots }

// Certificate returns the current certificate, renewing or reloading it
// at most once a minute when due.
func (s *Certs) Certificate() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.cur != nil && now.Sub(s.checked) < time.Minute {
		return s.cur, nil
	}
	c, err := s.load(s.cur)
	if err != nil {
		if s.cur != nil {
			return s.cur, nil
		}
		return nil, err
	}
	s.cur, s.checked = c, now
	return c, nil
}

// ServerTLS is the internal listener's configuration: TLS 1.2+, AEAD
// suites, and a client certificate chaining to Roots required and
// verified at the handshake.
func (s *Certs) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		ClientCAs:      s.roots,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.Certificate() },
	}
}

// PublicTLS is the configuration of a public listener (the gateway's
// edge): no client certificate is asked for.
func (s *Certs) PublicTLS() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.Certificate() },
	}
}

// ClientTLS is the configuration for calls to peers: only Roots are
// trusted, and the component's certificate is presented.
func (s *Certs) ClientTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    s.roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.Certificate()
		},
	}
}
