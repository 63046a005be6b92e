package evidence

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/quic-go/quic-go/http3"
)

// tlsChecks: "Every origin is HTTPS-only with TLS 1.2 as the floor. HSTS
// is set with a one-year max-age and preload, and HTTP/2 plus HTTP/3 are
// negotiated where the client supports them."
func tlsChecks() []Check {
	hs := func(name string, cfg *tls.Config, succeed bool) Check {
		return Check{Row: RowTLS, Name: name, Run: func(ctx context.Context, f *Fixture) (string, error) {
			return handshake(ctx, f, cfg, succeed)
		}}
	}
	return []Check{
		hs("TLS 1.0 refused", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10}, false),
		hs("TLS 1.1 refused", &tls.Config{MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11}, false),
		hs("TLS 1.2 with a CBC suite refused", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA}}, false),
		hs("TLS 1.2 ECDHE AEAD accepted", &tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}}, true),
		hs("TLS 1.3 accepted, h2 negotiated", &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2", "http/1.1"}}, true),
		{Row: RowTLS, Name: "HTTP/3 request over QUIC succeeds; Alt-Svc advertises it", Run: http3Check},
		{Row: RowTLS, Name: "plain HTTP is redirected (308) to HTTPS; a foreign Host is not", Run: redirectCheck},
	}
}

func handshake(ctx context.Context, f *Fixture, base *tls.Config, succeed bool) (string, error) {
	u, err := url.Parse(f.Target.Gateway)
	if err != nil {
		return "", err
	}
	cfg := base.Clone()
	cfg.RootCAs = f.Target.CA
	cfg.ServerName = u.Hostname()
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		if succeed {
			return "", err
		}
		return "handshake refused: " + err.Error(), nil
	}
	defer conn.Close()
	st := conn.(*tls.Conn).ConnectionState()
	obs := fmt.Sprintf("negotiated %s %s alpn=%q", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.NegotiatedProtocol)
	if !succeed {
		return obs, errors.New("handshake succeeded")
	}
	if len(cfg.NextProtos) > 0 && st.NegotiatedProtocol != "h2" {
		return obs, errors.New("h2 not negotiated")
	}
	return obs, nil
}

func http3Check(ctx context.Context, f *Fixture) (string, error) {
	r, err := f.Do(ctx, "GET", f.Target.Gateway+"/healthz", nil, nil)
	if err != nil {
		return "", err
	}
	alt := r.Header.Get("Alt-Svc")
	tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: f.Target.CA}}
	defer tr.Close()
	r3, err := Send(ctx, &http.Client{Transport: tr, Timeout: 10 * time.Second}, "GET", f.Target.Gateway+"/healthz", nil, nil)
	if err != nil {
		return "Alt-Svc: " + alt, err
	}
	obs := fmt.Sprintf("Alt-Svc: %s; HTTP/3 GET /healthz → %d %s, HSTS %q", alt, r3.Status, r3.Proto, r3.Header.Get("Strict-Transport-Security"))
	if !strings.Contains(alt, "h3=") || r3.Status != 200 || r3.Proto != "HTTP/3.0" {
		return obs, errors.New("no working HTTP/3 advertised")
	}
	return obs, nil
}

func redirectCheck(ctx context.Context, f *Fixture) (string, error) {
	if f.Target.Redirect == "" {
		return "", NotApplicable("the deployment names no plain-HTTP origin")
	}
	plain := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 5 * time.Second}
	r, err := Send(ctx, plain, "GET", f.Target.Redirect+"/v1/accounts?x=1", nil, nil)
	if err != nil {
		return "", err
	}
	loc := r.Header.Get("Location")
	obs := fmt.Sprintf("%d Location: %s", r.Status, loc)
	foreign, err := Send(ctx, plain, "GET", f.Target.Redirect+"/", nil, Header{"Host": "evil.example"})
	if err != nil {
		return obs, err
	}
	obs += fmt.Sprintf("; Host: evil.example → %d Location: %q", foreign.Status, foreign.Header.Get("Location"))
	if r.Status != http.StatusPermanentRedirect || !strings.HasPrefix(loc, "https://") || !strings.HasSuffix(loc, "/v1/accounts?x=1") {
		return obs, errors.New("not a 308 to the same path over HTTPS")
	}
	if foreign.Status < 400 || foreign.Header.Get("Location") != "" {
		return obs, errors.New("a foreign Host was redirected (an open redirect)")
	}
	return obs, nil
}
