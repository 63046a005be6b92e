package interop

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/malai-sec/malai/headers"
)

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "malai interop"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// strictSet is what the zero headers.Config sends on HTTPS.
var strictSet = map[string]string{
	headers.HeaderHSTS:                "max-age=31536000; includeSubDomains; preload",
	headers.HeaderCSP:                 headers.APIPolicy,
	headers.HeaderFrameOptions:        "DENY",
	headers.HeaderContentTypeOptions:  "nosniff",
	headers.HeaderReferrerPolicy:      "no-referrer",
	headers.HeaderCrossOriginOpener:   "same-origin",
	headers.HeaderCrossOriginResource: "same-origin",
	headers.HeaderPermissionsPolicy:   headers.DenyAllPermissionsPolicy,
	headers.HeaderCacheControl:        "no-store",
	headers.HeaderXSSProtection:       "0",
}

func checkStrict(t *testing.T, h http.Header) {
	t.Helper()
	for k, want := range strictSet {
		if got := h.Values(k); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if v := h.Values("Server"); len(v) > 0 {
		t.Errorf("Server %q survived", v)
	}
}

// The reference gateway's HTTP/3 wiring: a quic-go http3.Server on a UDP
// port serves the same middleware, whose AltSvc hook is that server's
// SetQUICHeaders. Over HTTP/3 the set is enforced too (a handler that
// weakens it loses), and Alt-Svc names the port the server listens on.
func TestHTTP3ServerAndAltSvc(t *testing.T) {
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := udp.LocalAddr().(*net.UDPAddr).Port
	h3 := &http3.Server{TLSConfig: http3.ConfigureTLSConfig(headers.TLSConfig(&tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}))}
	m, err := headers.New(headers.Config{AltSvc: h3.SetQUICHeaders})
	if err != nil {
		t.Fatal(err)
	}
	h3.Handler = m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(headers.HeaderHSTS, "max-age=0")
		w.Header().Set(headers.HeaderFrameOptions, "ALLOWALL")
		w.Header().Set("Server", "Apache/2.2.3")
		w.Header().Set("Alt-Svc", `h3=":1"`)
		io.WriteString(w, r.Proto)
	}))
	served := make(chan error, 1)
	go func() { served <- h3.Serve(udp) }()
	t.Cleanup(func() {
		h3.Close()
		<-served
	})

	tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // self-signed
	defer tr.Close()
	res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(fmt.Sprintf("https://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatalf("HTTP/3 request: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(body) != "HTTP/3.0" {
		t.Fatalf("served over %q", body)
	}
	checkStrict(t, res.Header)
	if got := res.Header.Values("Alt-Svc"); len(got) != 1 || got[0] != fmt.Sprintf(`h3=":%d"; ma=2592000`, port) {
		t.Fatalf("Alt-Svc %q", got)
	}

	// A server that listens nowhere yet: the hook fails and no Alt-Svc is
	// sent, the rest of the set is.
	m, err = headers.New(headers.Config{AltSvc: (&http3.Server{}).SetQUICHeaders})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	m.Handler(http.NotFoundHandler()).ServeHTTP(rec, httptest.NewRequest("GET", "https://example.com/", nil))
	if got := rec.Result().Header.Values("Alt-Svc"); len(got) != 0 {
		t.Fatalf("Alt-Svc %q without a port", got)
	}
	checkStrict(t, rec.Result().Header)
}
