package platform

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/malai-sec/malai/examples/malai/internal/pki"
	"github.com/malai-sec/malai/examples/malai/internal/queue"
	"github.com/malai-sec/malai/headers"
	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/keyring"
)

// Start is the contract every component implements: run with what Env
// provides until the returned stop function is called.
type Start func(ctx context.Context, env *Env) (stop func() error, err error)

// Env is everything a component gets from the process that runs it, in
// the all-in-one composition and in a single-component command alike.
// The composition fills it; a component reads it and never reaches for
// globals, flags or another component's memory.
type Env struct {
	// Name is the component's own name ([Gateway], [Ledger], …), the
	// common name of its certificate.
	Name string
	// Certs is the component's TLS material: its certificate (internal
	// listener and calls to peers) and the roots it trusts.
	Certs *pki.Certs
	// Telemetry is the component's logs, traces, metrics and alarm.
	Telemetry *Telemetry
	// Listener is the component's internal listener (plain TCP; [Serve]
	// wraps it in mutual TLS). Every component has one: /metrics and
	// /healthz live there.
	Listener net.Listener
	// Peers maps component names to their internal base URLs
	// ("https://127.0.0.1:7001").
	Peers map[string]string
	// Issuer is the "iss" of every token identity issues (the system's
	// stable public URL); verifiers check it. Origins are the public
	// origins browsers may send state-changing requests from.
	Issuer  string
	Origins []string
	// Credentials returns a token source for this component's own service
	// token with scopes (private_key_jwt with a key of its own, registered
	// over its certificate). Nil: the component cannot call service
	// routes.
	Credentials func(ctx context.Context, scopes ...string) (oauth2.TokenSource, error)

	// Redis, when not nil, holds limits, idempotency records and the
	// queue (a redis.UniversalClient: a single node, Sentinel or Cluster).
	// Nil: the embedded stores under DataDir.
	Redis redis.UniversalClient
	// RedisPrefix starts every key the component writes in Redis
	// (default "malai:"; see [Env.RedisKey]).
	RedisPrefix string
	// Postgres, when its URL is set, holds the component's system of
	// record (the ledger's audit chain, identity's users).
	Postgres Postgres
	// WitnessDir is the ledger's witness store, a file store one process
	// holds at a time (each ledger replica has its own). Empty:
	// <DataDir>/witness.
	WitnessDir string
	// Queue carries asynchronous work from the ledger to the worker. The
	// composition sets it when both run in one process on the embedded
	// queue; otherwise a component builds its own from Redis.
	Queue queue.Queue

	// DataDir is the component's data directory (keys, embedded stores,
	// encrypted logs).
	DataDir string
	// Keys is the key file (the stand-in for a KMS) and Ring the data
	// keys unwrapped from it, newest current.
	Keys *KeyFile
	Ring *keyring.Ring

	// Edge configures the gateway (the only component with a public
	// listener); other components ignore it.
	Edge Edge

	// OnReload registers a function run on SIGHUP (policy, deny list).
	// Nil: no reload.
	OnReload func(func() error)
	// Export, when set, receives the component's service handle after it
	// starts (the all-in-one composition keeps it for in-process tools
	// and tests). Nil in single-component commands.
	Export func(any)

	// Auditor registers the evidence pass's privileged client (the
	// ledger's audit routes) at identity. Only the evidence command sets
	// it: an ordinary run has no such client.
	Auditor bool

	// Faults, in tests only, switch features off to prove that a check
	// can fail (an internal/faults.Set, which no flag or file can set and
	// which the composition refuses outside a test binary). A component
	// applies what it knows through the methods of the Set it asserts;
	// Switches are the platform-level ones the composition resolved. Nil
	// and zero: nothing is switched off.
	Faults   any
	Switches Switches
}

// Switches are platform-level faults (tests only; see Env.Faults).
type Switches struct {
	// NoMetrics: internal listeners serve no /metrics.
	NoMetrics bool
	// NoReputation: the gateway checks no IP reputation list.
	NoReputation bool
	// TrustAnyForwardedFor: identity believes any caller's
	// X-Forwarded-For.
	TrustAnyForwardedFor bool
	// OptionalClientCerts: internal listeners accept a handshake without
	// a client certificate.
	OptionalClientCerts bool
}

// RedisKey is name under the system's Redis prefix.
func (e *Env) RedisKey(name string) string {
	if e.RedisPrefix == "" {
		return "malai:" + name
	}
	return e.RedisPrefix + name
}

// Postgres says where a component's PostgreSQL data lives.
type Postgres struct {
	// URL is the application role's connection URL ("" : embedded
	// stores). Use sslmode=verify-full with sslrootcert in production.
	URL string
	// PasswordFile, when set, holds the role's password, re-read for
	// every new connection (rotation without restart).
	PasswordFile string
	// Schema holds the component's tables.
	Schema string
}

// Edge is the gateway's public side.
type Edge struct {
	// Listener is the HTTPS listener (TCP); PacketConn the HTTP/3 socket
	// on the same port; Redirect the plain-HTTP redirect listener (nil:
	// none).
	Listener   net.Listener
	PacketConn net.PacketConn
	Redirect   net.Listener
	// Routes are the public route tables of the components behind the
	// gateway, by component name, as data (no handlers).
	Routes map[string]Table
	// PerIP and PerPrincipal are requests per minute (0: the gateway's
	// defaults).
	PerIP, PerPrincipal int
	// InspectionRate is the WAF's inspection-time budget per client
	// network and second (0: the WAF's default; negative: none).
	InspectionRate time.Duration
	// DenyList is an IP reputation file.
	DenyList string
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// AllowedHosts are the Host names and addresses the gateway (HTTPS
	// and redirect) answers for. Default: localhost, 127.0.0.1 and ::1.
	AllowedHosts []string
	// Web serves the rows of Routes[Web] in the gateway's process (the
	// customer web app); HeaderApps and SelectHeaders give its pages their
	// own header profile (headers.Config.Apps and Select).
	Web           http.Handler
	HeaderApps    map[string]headers.App
	SelectHeaders func(*http.Request) string
}

// Transport returns a transport for calls to peers: mutual TLS with the
// component's certificate, trusting only the system's roots.
func (e *Env) Transport() *http.Transport {
	return &http.Transport{
		TLSClientConfig:     e.Certs.ClientTLS(),
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 5 * time.Second,
	}
}

// Peer returns the internal base URL of component, or an error naming the
// missing peer flag.
func (e *Env) Peer(component string) (string, error) {
	u := e.Peers[component]
	if u == "" {
		return "", fmt.Errorf("%s: no URL for peer %s (-%s-url)", e.Name, component, component)
	}
	return u, nil
}

// Verifier returns a JWT verifier for identity's tokens of audience aud,
// fetching the key set from identity's internal listener over mutual TLS.
// It waits up to ten seconds for the first key set; past that it returns
// the verifier anyway (it keeps fetching, and refuses tokens with 503
// until keys arrive), so a component can start before identity.
func (e *Env) Verifier(aud string) (*jwtverify.Verifier, error) {
	idURL, err := e.Peer(Identity)
	if err != nil {
		return nil, err
	}
	return e.VerifierVia(aud, idURL+"/.well-known/jwks.json", &http.Client{Transport: e.Transport(), Timeout: 5 * time.Second})
}

// VerifierVia is Verifier with the key set fetched from jwksURL with c
// (identity verifies its own tokens through an in-process client).
func (e *Env) VerifierVia(aud, jwksURL string, c *http.Client) (*jwtverify.Verifier, error) {
	if e.Issuer == "" {
		return nil, errors.New(e.Name + ": no token issuer configured")
	}
	v, err := jwtverify.New(jwtverify.Config{
		Issuers: []jwtverify.Issuer{{
			Issuer: e.Issuer, JWKSURL: jwksURL, Algorithms: []string{"ES256"},
			Audiences: []string{aud}, MaxLifetime: 15 * time.Minute,
			// identity states token_class on every token it issues.
			RequireClassClaim: true,
		}},
		HTTPClient: c,
		CacheSize:  10_000,
		Realm:      "malai",
	})
	if err != nil {
		return nil, err
	}
	select {
	case <-v.Ready():
	case <-time.After(10 * time.Second):
		if e.Telemetry != nil {
			e.Telemetry.Logger.Warn("no token key set yet; tokens are refused until one arrives", "jwks", jwksURL)
		}
	}
	return v, nil
}

// PeerComponent is the component named by the verified client
// certificate of r's TLS connection, or "" when there is none.
func PeerComponent(r *http.Request) string {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return ""
	}
	return r.TLS.VerifiedChains[0][0].Subject.CommonName
}

// ForwardsClient reports whether r comes from a component that forwards
// an end client's request (the gateway, the web backend), whose
// X-Forwarded-For and correlation id are therefore believed.
func ForwardsClient(r *http.Request) bool {
	switch PeerComponent(r) {
	case Gateway, Web:
		return true
	}
	return false
}

// TrustedHop reports whether r's correlation id may be kept: it comes from
// one of the system's components (every internal caller proves it with its
// certificate).
func TrustedHop(r *http.Request) bool {
	switch PeerComponent(r) {
	case Gateway, Web, Worker, Ledger, Identity:
		return true
	}
	return false
}
