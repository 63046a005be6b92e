package headers_test

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/malai-sec/malai/headers"
	"github.com/malai-sec/malai/headers/observatory"
)

// The reference gateway's wiring: one middleware outermost on every
// response, an API app (the strict default) and a web UI app with script
// nonces, the hardened TLS config on the HTTPS server and the redirect on
// the plain-HTTP port.
func Example() {
	mw, err := headers.New(headers.Config{
		Apps: map[string]headers.App{
			"web": {CSP: "default-src 'self'; script-src 'self' $NONCE; object-src 'none'; " +
				"base-uri 'self'; form-action 'self'; report-uri /csp-report"},
		},
		Select: headers.ByPathPrefix(map[string]string{"/app/": "web"}),
		// AltSvc: h3.SetQUICHeaders, with h3 the quic-go http3.Server on the same port.
	})
	if err != nil {
		panic(err)
	}
	reports, err := headers.NewReportHandler(headers.ReportConfig{})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /csp-report", reports)
	mux.HandleFunc("/app/", func(w http.ResponseWriter, r *http.Request) {
		nonce, _ := headers.NonceFromContext(r.Context())
		fmt.Fprintf(w, `<script nonce="%s" src="/app.js"></script>`, nonce)
	})
	mux.HandleFunc("/api/accounts", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Frame-Options", "ALLOWALL") // a misconfigured handler
		w.Header().Set("Server", "legacy/1.0")
		fmt.Fprint(w, `[]`)
	})

	httpsServer := &http.Server{Handler: mw.Handler(mux), TLSConfig: headers.TLSConfig(&tls.Config{ /* Certificates */ })}
	redirect, err := headers.NewRedirect(headers.RedirectConfig{AllowedHosts: []string{"malai.example"}})
	if err != nil {
		panic(err)
	}
	httpServer := &http.Server{Handler: mw.Handler(redirect)}
	_, _ = httpsServer, httpServer

	for _, path := range []string{"/api/accounts", "/app/"} {
		rec := httptest.NewRecorder()
		httpsServer.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "https://malai.example"+path, nil))
		h := rec.Result().Header
		csp, _, _ := strings.Cut(h.Get("Content-Security-Policy"), ";")
		fmt.Printf("%s: XFO=%s Server=%q CSP starts %q grade=%s\n", path, h.Get("X-Frame-Options"),
			h.Get("Server"), csp, observatory.Score(h, true).Grade)
	}
	rec := httptest.NewRecorder()
	httpServer.Handler.ServeHTTP(rec, httptest.NewRequest("POST", "http://malai.example/api/transfers?x=1", nil))
	fmt.Println(rec.Code, rec.Header().Get("Location"))
	// Output:
	// /api/accounts: XFO=DENY Server="" CSP starts "default-src 'none'" grade=A+
	// /app/: XFO=DENY Server="" CSP starts "default-src 'self'" grade=A+
	// 308 https://malai.example/api/transfers?x=1
}

// A policy is checked before it can be deployed.
func ExampleParseCSP() {
	p, err := headers.ParseCSP("default-src 'self'; script-src 'self' 'unsafe-inline'")
	if err != nil {
		panic(err)
	}
	fmt.Println(p.Validate())
	// Output:
	// headers: unsafe Content-Security-Policy: script-src allows 'unsafe-inline'
}
