package faults

import (
	"crypto/tls"
	"errors"
	"net/http"
	"slices"
)

// Edge faults: what the gateway's public side stops doing.
const (
	// EdgeTLS10 and EdgeTLS11 accept a client that offers at most TLS 1.0
	// (1.1), with the CBC suites those versions need.
	EdgeTLS10 Fault = "edge-accepts-tls1.0"
	EdgeTLS11 Fault = "edge-accepts-tls1.1"
	// EdgeCBC lets a TLS 1.2 client choose a CBC suite.
	EdgeCBC Fault = "edge-accepts-tls1.2-cbc"
	// EdgeNoTLS12 refuses TLS 1.2 clients (TLS 1.3 only).
	EdgeNoTLS12 Fault = "edge-refuses-tls1.2"
	// EdgeNoH2 stops offering h2 in ALPN.
	EdgeNoH2 Fault = "edge-no-h2"
	// EdgeNoHTTP3 serves no HTTP/3 and advertises none.
	EdgeNoHTTP3 Fault = "edge-no-http3"
	// EdgeOpenRedirect redirects plain HTTP to whatever Host was asked.
	EdgeOpenRedirect Fault = "edge-open-redirect"
	// EdgeNoXFOOnHealthz, …On404, …On401, …On403 and …OnJWKS drop
	// X-Frame-Options from one kind of answer, outside the headers
	// middleware (as a misconfigured cache in front would).
	EdgeNoXFOOnHealthz Fault = "edge-no-xfo-on-healthz"
	EdgeNoXFOOn404     Fault = "edge-no-xfo-on-404"
	EdgeNoXFOOn401     Fault = "edge-no-xfo-on-401"
	EdgeNoXFOOn403     Fault = "edge-no-xfo-on-403"
	EdgeNoXFOOnJWKS    Fault = "edge-no-xfo-on-jwks"
	// EdgeWeakCSP replaces the CSP on /healthz with one that allows
	// inline and remote scripts.
	EdgeWeakCSP Fault = "edge-weak-csp"
	// EdgeNoReputation stops consulting the IP reputation list.
	EdgeNoReputation Fault = "edge-no-reputation"
	// WAFNoSQLi, WAFNoXSS and WAFNoJava remove the CRS rules of one
	// attack family; WAFFalsePositive blocks an ordinary search word.
	WAFNoSQLi        Fault = "waf-no-sqli-rules"
	WAFNoXSS         Fault = "waf-no-xss-rules"
	WAFNoJava        Fault = "waf-no-java-rules"
	WAFFalsePositive Fault = "waf-false-positive"
	// IdentityTrustsAnyForwardedFor makes identity believe the
	// X-Forwarded-For of any caller, not only the gateway's.
	IdentityTrustsAnyForwardedFor Fault = "identity-trusts-any-forwarded-for"
)

// cbcSuites are the CBC suites a TLS 1.0–1.2 client may offer.
var cbcSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
}

// EdgeTLS returns the gateway's TLS configuration with the set's TLS
// faults applied; without any it returns base.
func (s Set) EdgeTLS(base *tls.Config) *tls.Config {
	if !s.On(EdgeTLS10) && !s.On(EdgeTLS11) && !s.On(EdgeCBC) && !s.On(EdgeNoTLS12) && !s.On(EdgeNoH2) {
		return base
	}
	per := func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		if s.On(EdgeNoH2) {
			c.NextProtos = slices.DeleteFunc(slices.Clone(c.NextProtos), func(p string) bool { return p == "h2" })
		}
		maxV := slices.Max(hello.SupportedVersions)
		switch {
		case maxV == tls.VersionTLS10 && s.On(EdgeTLS10), maxV == tls.VersionTLS11 && s.On(EdgeTLS11):
			c.MinVersion, c.MaxVersion = maxV, maxV
			c.CipherSuites = append(slices.Clone(c.CipherSuites), cbcSuites...)
		case maxV == tls.VersionTLS12 && s.On(EdgeNoTLS12):
			return nil, errors.New("faults: TLS 1.2 refused")
		case maxV == tls.VersionTLS12 && s.On(EdgeCBC):
			c.CipherSuites = append(slices.Clone(c.CipherSuites), cbcSuites...)
		}
		return c, nil
	}
	c := base.Clone()
	c.MinVersion = tls.VersionTLS10
	c.GetConfigForClient = per
	return c
}

// RedirectHosts returns the hosts the plain-HTTP redirect may point to.
func (s Set) RedirectHosts(hosts []string) []string {
	if s.On(EdgeOpenRedirect) {
		return append(slices.Clone(hosts), "evil.example")
	}
	return hosts
}

// wafDirectives are extra rules appended after the CRS.
func (s Set) wafDirectives() string {
	var d string
	if s.On(WAFNoSQLi) {
		d += "SecRuleRemoveByTag attack-sqli\n"
	}
	if s.On(WAFNoXSS) {
		d += "SecRuleRemoveByTag attack-xss\n"
	}
	if s.On(WAFNoJava) {
		d += "SecRuleRemoveByTag language-java\nSecRuleRemoveByTag attack-rce\n"
	}
	if s.On(WAFFalsePositive) {
		d += `SecRule ARGS "@contains ordinary" "id:9990001,phase:2,deny,status:403,log,msg:'faults: false positive'"` + "\n"
	}
	return d
}

// EdgeHandler wraps the gateway's outermost handler with the set's header
// faults; without any it returns h.
func (s Set) EdgeHandler(h http.Handler) http.Handler {
	if !s.On(EdgeNoXFOOnHealthz) && !s.On(EdgeNoXFOOn404) && !s.On(EdgeNoXFOOn401) && !s.On(EdgeNoXFOOn403) && !s.On(EdgeNoXFOOnJWKS) && !s.On(EdgeWeakCSP) {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&headerFault{ResponseWriter: w, r: r, s: s}, r)
	})
}

type headerFault struct {
	http.ResponseWriter
	r       *http.Request
	s       Set
	written bool
}

func (w *headerFault) WriteHeader(code int) {
	if !w.written {
		w.written = true
		h := w.Header()
		path := w.r.URL.Path
		if w.s.On(EdgeNoXFOOnHealthz) && path == "/healthz" && code == http.StatusOK ||
			w.s.On(EdgeNoXFOOn404) && code == http.StatusNotFound ||
			w.s.On(EdgeNoXFOOn401) && code == http.StatusUnauthorized ||
			w.s.On(EdgeNoXFOOn403) && code == http.StatusForbidden ||
			w.s.On(EdgeNoXFOOnJWKS) && path == "/.well-known/jwks.json" {
			h.Del("X-Frame-Options")
		}
		if w.s.On(EdgeWeakCSP) && path == "/healthz" {
			h.Set("Content-Security-Policy", "default-src *; script-src * 'unsafe-inline' 'unsafe-eval'; frame-ancestors 'none'")
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *headerFault) Write(b []byte) (int, error) {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *headerFault) Unwrap() http.ResponseWriter { return w.ResponseWriter }
