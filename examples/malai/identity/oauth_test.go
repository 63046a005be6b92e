package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/malai-sec/malai/examples/malai/identity/clientauth"
)

// peerTransport plays a component's mutual-TLS identity: the harness's
// PeerComponent reads X-Test-Peer.
type peerTransport struct {
	peer string
	base http.RoundTripper
}

func (p peerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if p.peer != "" {
		r.Header.Set("X-Test-Peer", p.peer)
	}
	return p.base.RoundTrip(r)
}

func (h *harness) server() *httptest.Server {
	srv := httptest.NewServer(h.svc.Handler())
	h.t.Cleanup(srv.Close)
	return srv
}

func componentClient(peer string) *http.Client {
	return &http.Client{Transport: peerTransport{peer: peer, base: http.DefaultTransport}, Timeout: 10 * time.Second}
}

func (h *harness) source(srv *httptest.Server, peer string, scopes ...string) *clientauth.Source {
	h.t.Helper()
	src, err := clientauth.New(context.Background(), clientauth.Config{IdentityURL: srv.URL, HTTPClient: componentClient(peer), Scopes: scopes, Now: h.clock.Now})
	if err != nil {
		h.t.Fatal(err)
	}
	return src
}

// tokenForm posts a token request.
func (h *harness) tokenForm(form url.Values, opts ...reqOpt) (int, TokenError, http.Header) {
	h.t.Helper()
	w := h.do(http.MethodPost, TokenPath, "application/x-www-form-urlencoded", form.Encode(), opts...)
	var e TokenError
	_ = json.Unmarshal(w.Body.Bytes(), &e)
	if w.Header().Get("Cache-Control") != "no-store" {
		h.t.Fatalf("token endpoint answer %d is cacheable", w.Code)
	}
	return w.Code, e, w.Header()
}

func assertionForm(a string) url.Values {
	return url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {AssertionType}, "client_assertion": {a}}
}

func TestPrivateKeyJWT(t *testing.T) {
	h := newHarness(t, nil)
	srv := h.server()
	src := h.source(srv, "worker", "ledger:transfer")
	tok, err := src.Token()
	if err != nil {
		t.Fatal(err)
	}
	c := claimsOf(t, Secret(tok.AccessToken))
	if c["sub"] != "worker" || c["client_id"] != "worker" || fmt.Sprint(c["aud"]) != "["+AudienceService+"]" || c[ClaimTokenClass] != ClassService || c["scope"] != "ledger:transfer" {
		t.Fatalf("service token claims %v", c)
	}
	if again, _ := src.Token(); again.AccessToken != tok.AccessToken {
		t.Fatal("a valid token was not reused")
	}
	// A second task of the same component has its own key.
	other := h.source(srv, "worker")
	if other.KeyID() == src.KeyID() {
		t.Fatal("two tasks share a key")
	}
	if types := h.auditTypes(); !contains(types, AuditClientKeyAdded) {
		t.Fatalf("registration not audited: %v", types)
	}
}

// TestSharedSecretsRefused: every client_secret method is refused with
// RFC 6749 §5.2 invalid_client, no-store, and a Basic challenge when the
// client tried Basic.
func TestSharedSecretsRefused(t *testing.T) {
	h := newHarness(t, nil)
	form := url.Values{"grant_type": {"client_credentials"}}
	code, e, hdr := h.tokenForm(form, func(r *http.Request) { r.SetBasicAuth("worker", "s3cret-s3cret-s3cret") })
	if code != 401 || e.Error != "invalid_client" || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("client_secret_basic: %d %+v %v", code, e, hdr)
	}
	form.Set("client_id", "worker")
	form.Set("client_secret", "s3cret-s3cret-s3cret")
	if code, e, _ := h.tokenForm(form); code != 401 || e.Error != "invalid_client" {
		t.Fatalf("client_secret_post: %d %+v", code, e)
	}
	// client_secret_jwt: an HMAC assertion.
	hs := "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsifQ.eyJpc3MiOiJ3b3JrZXIifQ.c2ln"
	if code, e, _ := h.tokenForm(assertionForm(hs)); code != 401 || e.Error != "invalid_client" {
		t.Fatalf("client_secret_jwt: %d %+v", code, e)
	}
	if code, e, _ := h.tokenForm(url.Values{"grant_type": {"client_credentials"}}); code != 401 || e.Error != "invalid_client" {
		t.Fatalf("no authentication: %d %+v", code, e)
	}
}

// TestAssertionReplayRefused: an intercepted assertion cannot be used
// again, and an assertion is checked for its audience, lifetime, client,
// key and caller.
func TestAssertionReplayRefused(t *testing.T) {
	h := newHarness(t, nil)
	key, err := clientauth.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.RegisterClientKey(context.Background(), "worker", key.PublicJWK()); err != nil {
		t.Fatal(err)
	}
	aud := testIssuer + TokenPath
	a, _ := key.Assertion("worker", aud, h.clock.Now())
	peer := withHeader("X-Test-Peer", "worker")
	if code, e, _ := h.tokenForm(assertionForm(a), peer); code != 200 {
		t.Fatalf("first use: %d %+v", code, e)
	}
	if code, e, _ := h.tokenForm(assertionForm(a), peer); code != 401 || e.Error != "invalid_client" || !strings.Contains(e.ErrorDescription, "already used") {
		t.Fatalf("replay: %d %+v", code, e)
	}
	// The replay is refused after a restart too: the jti is stored.
	b, _ := key.Assertion("worker", aud, h.clock.Now())
	if code, _, _ := h.tokenForm(assertionForm(b), peer); code != 200 {
		t.Fatal("second assertion refused")
	}
	h.restart()
	if code, e, _ := h.tokenForm(assertionForm(b), peer); code != 401 || e.Error != "invalid_client" {
		t.Fatalf("replay after restart: %d %+v", code, e)
	}

	tests := []struct {
		name string
		a    func() string
		opts []reqOpt
	}{
		{"audience is the issuer", func() string { x, _ := key.Assertion("worker", testIssuer, h.clock.Now()); return x }, []reqOpt{peer}},
		{"audience is another server", func() string {
			x, _ := key.Assertion("worker", "https://evil.example/oauth2/token", h.clock.Now())
			return x
		}, []reqOpt{peer}},
		{"expired", func() string { x, _ := key.Assertion("worker", aud, h.clock.Now().Add(-2*time.Minute)); return x }, []reqOpt{peer}},
		{"issued in the future", func() string { x, _ := key.Assertion("worker", aud, h.clock.Now().Add(2*time.Minute)); return x }, []reqOpt{peer}},
		{"another client's name", func() string { x, _ := key.Assertion("evidence", aud, h.clock.Now()); return x }, []reqOpt{withHeader("X-Test-Peer", "evidence")}},
		{"unknown client", func() string { x, _ := key.Assertion("ledger", aud, h.clock.Now()); return x }, nil},
		{"from another component's connection", func() string { x, _ := key.Assertion("worker", aud, h.clock.Now()); return x }, []reqOpt{withHeader("X-Test-Peer", "gateway")}},
		{"unregistered key", func() string {
			k2, _ := clientauth.NewKey()
			x, _ := k2.Assertion("worker", aud, h.clock.Now())
			return x
		}, []reqOpt{peer}},
		{"an access token as the assertion", func() string {
			h.signUp("alice", strongPW)
			return h.signInOK(creds("alice", strongPW)).token.Reveal()
		}, []reqOpt{peer}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if code, e, _ := h.tokenForm(assertionForm(tc.a()), tc.opts...); code != 401 || e.Error != "invalid_client" {
				t.Fatalf("%d %+v", code, e)
			}
		})
	}
	// Scope and grant rules.
	x, _ := key.Assertion("worker", aud, h.clock.Now())
	f := assertionForm(x)
	f.Set("scope", "ledger:audit")
	if code, e, _ := h.tokenForm(f, peer); code != 400 || e.Error != "invalid_scope" {
		t.Fatalf("scope beyond the client's: %d %+v", code, e)
	}
	x, _ = key.Assertion("worker", aud, h.clock.Now())
	f = assertionForm(x)
	f.Set("grant_type", "password")
	if code, e, _ := h.tokenForm(f, peer); code != 400 || e.Error != "unauthorized_client" {
		t.Fatalf("password grant: %d %+v", code, e)
	}
	if code, e, _ := h.tokenForm(url.Values{"client_assertion": {x, x}}, peer); code != 400 || e.Error != "invalid_request" {
		t.Fatalf("repeated parameter: %d %+v", code, e)
	}
	w := h.do(http.MethodPost, TokenPath+"?client_assertion="+x, "application/x-www-form-urlencoded", "")
	if w.Code != 400 {
		t.Fatalf("assertion in the query: %d", w.Code)
	}
}

// TestRevokeOneComponentKey: revoking the worker's key refuses the worker
// at once and nobody else.
func TestRevokeOneComponentKey(t *testing.T) {
	h := newHarness(t, nil)
	srv := h.server()
	worker := h.source(srv, "worker")
	auditor := h.source(srv, "evidence")
	secondWorker := h.source(srv, "worker")
	if _, err := worker.Token(); err != nil {
		t.Fatal(err)
	}
	n, err := h.svc.RevokeClientKeys(context.Background(), "worker", worker.KeyID())
	if err != nil || n != 1 {
		t.Fatalf("revoke: %d %v", n, err)
	}
	// The worker's cached token is its last; a fresh request is refused.
	h.clock.Advance(DefaultAccessTokenTTL)
	if _, err := worker.Token(); !errors.Is(err, clientauth.ErrRefused) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("revoked worker: %v", err)
	}
	if _, err := auditor.Token(); err != nil {
		t.Fatalf("another component after the revocation: %v", err)
	}
	if _, err := secondWorker.Token(); err != nil {
		t.Fatalf("another worker task after the revocation: %v", err)
	}
	if !contains(h.auditTypes(), AuditClientKeysRevoked) {
		t.Fatal("revocation not audited")
	}
	// Revoking every key of the component refuses all its tasks.
	if n, _ := h.svc.RevokeClientKeys(context.Background(), "worker", ""); n != 1 {
		t.Fatalf("revoke all: %d", n)
	}
	h.clock.Advance(DefaultAccessTokenTTL)
	if _, err := secondWorker.Token(); err == nil {
		t.Fatal("a worker task survived revoking every worker key")
	}
	if _, err := auditor.Token(); err != nil {
		t.Fatalf("the auditor after revoking the worker: %v", err)
	}
}

func TestKeyRegistration(t *testing.T) {
	h := newHarness(t, nil)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pubJWK := func(raw any) string {
		k, err := jwk.FromRaw(raw)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(k)
		return string(b)
	}
	register := func(body string, opts ...reqOpt) int {
		return h.do(http.MethodPost, ClientsPath, "application/json", body, opts...).Code
	}
	worker := withHeader("X-Test-Peer", "worker")
	good := `{"jwk":` + pubJWK(&ec.PublicKey) + `}`
	if c := register(good); c != http.StatusForbidden {
		t.Fatalf("registration without a certificate: %d", c)
	}
	if c := register(good, withHeader("X-Test-Peer", "gateway")); c != http.StatusForbidden {
		t.Fatalf("registration by a component that is no client: %d", c)
	}
	if c := register(good, worker); c != http.StatusCreated {
		t.Fatalf("registration: %d", c)
	}
	if c := register(good, worker); c != http.StatusCreated {
		t.Fatalf("registering the same key again: %d", c)
	}
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	if c := register(`{"jwk":`+pubJWK(edPriv.Public())+`}`, worker); c != http.StatusCreated {
		t.Fatalf("Ed25519 key: %d", c)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, body := range map[string]string{
		"a private key":     `{"jwk":` + pubJWK(ec) + `}`,
		"a P-384 key":       `{"jwk":` + pubJWK(p384.Public()) + `}`,
		"an HMAC key":       `{"jwk":{"kty":"oct","k":"c2VjcmV0"}}`,
		"duplicate members": `{"jwk":{"kty":"EC","kty":"oct"}}`,
		"two members":       `{"jwk":` + pubJWK(&ec.PublicKey) + `,"scope":"ledger:audit"}`,
		"not an object":     `{"jwk":"x"}`,
		"trailing data":     good + `{}`,
		"duplicate outer":   `{"jwk":{},"jwk":` + pubJWK(&ec.PublicKey) + `}`,
	} {
		if c := register(body, worker); c != http.StatusBadRequest {
			t.Fatalf("%s: %d", name, c)
		}
	}
	if c := h.do(http.MethodPost, ClientsPath, "text/plain", good, worker).Code; c != http.StatusUnsupportedMediaType {
		t.Fatalf("wrong media type: %d", c)
	}
}

// TestRevokeRoute: the operator's revocation route.
func TestRevokeRoute(t *testing.T) {
	h := newHarness(t, nil)
	key, _ := clientauth.NewKey()
	info, err := h.svc.RegisterClientKey(context.Background(), "worker", key.PublicJWK())
	if err != nil {
		t.Fatal(err)
	}
	for _, peer := range []string{"", "worker", "gateway"} {
		wantProblem(t, h.postJSON(ClientsPath+"/worker/revoke", map[string]string{"kid": info.KeyID}, withHeader("X-Test-Peer", peer)), http.StatusForbidden, "forbidden")
	}
	operator := withHeader("X-Test-Peer", "operator")
	w := h.postJSON(ClientsPath+"/worker/revoke", map[string]string{"kid": info.KeyID}, operator)
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"revoked":1`) {
		t.Fatalf("revoke: %d %s", w.Code, w.Body)
	}
	wantProblem(t, h.postJSON(ClientsPath+"/nobody/revoke", map[string]string{}, operator), http.StatusBadRequest, "invalid-client")
	if _, err := h.svc.RegisterClientKey(context.Background(), "worker", key.PublicJWK()); !errors.Is(err, ErrInvalidClient) {
		t.Fatalf("re-registering a revoked key: %v", err)
	}
}
