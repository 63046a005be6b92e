package platform

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/malai-sec/malai/examples/malai/internal/pki"
)

// startInternal serves table as component name on a loopback listener
// and returns its URL and the CA.
func startInternal(t *testing.T, name string, table Table) (string, *pki.CA) {
	t.Helper()
	ca, err := pki.NewCA(nil)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ca.Certs(name)
	if err != nil {
		t.Fatal(err)
	}
	tele, err := NewTelemetry(TelemetryConfig{Component: name, TrustIncoming: TrustedHop})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tele.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	env := &Env{Name: name, Certs: certs, Telemetry: tele, Listener: ln}
	stop, err := Serve(env, table, ServeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() })
	return URL(ln), ca
}

func clientAs(t *testing.T, ca *pki.CA, component string) *http.Client {
	t.Helper()
	cfg := &tls.Config{RootCAs: ca.Pool()}
	if component != "" {
		cert, err := ca.Issue(component)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
}

func TestInternalListenerAdmitsOnlyTheTablesCallers(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "served") })
	url, ca := startInternal(t, Ledger, Table{
		{Pattern: "GET /v1/public", Public: true, Callers: []string{Web}, Handler: ok},
		{Pattern: "POST /internal/v1/job", Callers: []string{Worker}, Handler: ok},
	})
	for _, tc := range []struct {
		caller, method, path string
		want                 int
	}{
		{Gateway, "GET", "/v1/public", 200},
		{Web, "GET", "/v1/public", 200},
		{Worker, "GET", "/v1/public", 403},
		{Worker, "POST", "/internal/v1/job", 200},
		{Gateway, "POST", "/internal/v1/job", 403},
		{Evidence, "POST", "/internal/v1/job", 403},
		{"stranger", "POST", "/internal/v1/job", 403},
		{Gateway, "GET", "/metrics", 403},
		{Monitor, "GET", "/metrics", 200},
		{Monitor, "POST", "/internal/v1/job", 403},
		{Worker, "GET", "/healthz", 200},
		{Worker, "GET", "/nowhere", 404},
		{Worker, "DELETE", "/internal/v1/job", 405},
	} {
		t.Run(tc.caller+" "+tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, url+tc.path, nil)
			res, err := clientAs(t, ca, tc.caller).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.want)
			}
			if res.StatusCode >= 400 {
				var p struct{ Type string }
				if ct := res.Header.Get("Content-Type"); ct != "application/problem+json" || json.NewDecoder(res.Body).Decode(&p) != nil || p.Type == "" {
					t.Fatalf("refusal is not problem+json: %s", ct)
				}
			}
		})
	}
	t.Run("no client certificate fails at the handshake", func(t *testing.T) {
		_, err := clientAs(t, ca, "").Get(url + "/healthz")
		if err == nil {
			t.Fatal("served without a client certificate")
		}
	})
	t.Run("another CA's certificate fails at the handshake", func(t *testing.T) {
		other, _ := pki.NewCA(nil)
		c := clientAs(t, other, Worker)
		c.Transport.(*http.Transport).TLSClientConfig.RootCAs = ca.Pool()
		if _, err := c.Get(url + "/healthz"); err == nil {
			t.Fatal("served a certificate of another CA")
		}
	})
}

func TestTableValidation(t *testing.T) {
	h := http.NotFoundHandler()
	for name, tab := range map[string]Table{
		"no method":                {{Pattern: "/v1/x", Public: true, Handler: h}},
		"twice":                    {{Pattern: "GET /x", Public: true, Handler: h}, {Pattern: "GET /x", Public: true, Handler: h}},
		"scope without token":      {{Pattern: "GET /x", Scope: "a", Public: true, Handler: h}},
		"public service route":     {{Pattern: "GET /x", Token: ServiceToken, Public: true, Handler: h}},
		"internal without callers": {{Pattern: "GET /x", Token: ServiceToken, Handler: h}},
		"unknown caller":           {{Pattern: "GET /x", Callers: []string{"wroker"}, Handler: h}},
		"no handler":               {{Pattern: "GET /x", Public: true}},
	} {
		if err := tab.Validate(true); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	good := Table{{Pattern: "GET /x", Token: UserToken, Scope: "s", Public: true, Callers: []string{Web}, Handler: h}}
	if err := good.Validate(true); err != nil {
		t.Fatal(err)
	}
	if pub := good.Public(); len(pub) != 1 || pub[0].Handler != nil {
		t.Fatal("Public() must drop handlers")
	}
}
