package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/oauth2"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/correlation"
	"github.com/malai-sec/malai/examples/malai/gateway"
	"github.com/malai-sec/malai/examples/malai/identity"
	"github.com/malai-sec/malai/examples/malai/identity/clientauth"
	idstore "github.com/malai-sec/malai/examples/malai/identity/store"
	"github.com/malai-sec/malai/examples/malai/internal/faults"
	"github.com/malai-sec/malai/examples/malai/internal/pki"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
	"github.com/malai-sec/malai/examples/malai/internal/queue"
	"github.com/malai-sec/malai/examples/malai/ledger"
	"github.com/malai-sec/malai/examples/malai/web"
	"github.com/malai-sec/malai/examples/malai/worker"
)

// auditOrigin names the ledger's audit log in its signed checkpoints.
const auditOrigin = ledger.AuditOrigin

// component is one runtime component: its name, its Start, and its route
// table as data (the gateway mounts the public rows).
type component struct {
	name   string
	start  platform.Start
	routes platform.Table
}

// components are the runtime components in start order: identity first
// (every other component verifies its tokens), the gateway last (it
// forwards to the others).
func components() []component {
	return []component{
		{platform.Identity, identity.Start, identity.Table(nil)},
		{platform.Ledger, ledger.Start, ledger.Routes()},
		{platform.Worker, worker.Start, nil},
		{platform.Gateway, gateway.Start, nil},
	}
}

// publicRoutes are the route tables the gateway mounts, by component.
func publicRoutes() map[string]platform.Table {
	out := map[string]platform.Table{}
	for _, c := range components() {
		if pub := c.routes.Public(); len(pub) > 0 {
			out[c.name] = pub
		}
	}
	return out
}

// Options configure one run of the system's components in this process:
// all of them (the default), or the ones Components names, reaching the
// others at Peers.
type Options struct {
	// Components are the components this process runs (platform.Gateway,
	// Identity, Ledger, Worker). Empty: all of them.
	Components []string
	// Peers are the internal base URLs of the components that run in
	// other processes, by name.
	Peers map[string]string
	// Addr is the gateway's HTTPS address (TCP for TLS, UDP for HTTP/3).
	Addr string
	// HTTPAddr serves the HTTP→HTTPS redirect. Empty: none.
	HTTPAddr string
	// Listen are the components' internal listen addresses by name;
	// missing ones get a free loopback port.
	Listen map[string]string
	// DataDir holds the PKI, the key file, the audit chain and witness,
	// the policy and the encrypted logs.
	DataDir string
	// RedisURL, when set, puts rate limits, idempotency records and the
	// queue in Redis; otherwise they are embedded.
	RedisURL string
	// RedisPrefix starts every key the system writes in Redis. Default
	// "malai:".
	RedisPrefix string
	// Postgres, when its URL is set, keeps the audit chain in PostgreSQL,
	// connected as the least-privileged application role created by
	// "malai migrate"; otherwise it is a file store under DataDir. The
	// witness always keeps its checkpoints in a separate file store.
	Postgres platform.Postgres
	// IdentityPostgres, when its URL is set, keeps identity's accounts,
	// sessions, keys and security events in PostgreSQL (as the role
	// "malai migrate" created); otherwise bbolt and a file store under
	// DataDir.
	IdentityPostgres platform.Postgres
	// WitnessDir is the ledger's witness store (one process at a time:
	// each ledger replica has its own). Default <DataDir>/witness.
	WitnessDir string
	// CertFiles, when set, give each component its certificate from an
	// operator's files instead of the development CA under DataDir.
	CertFiles *CertFiles
	// LogMirror also receives the plaintext JSON logs (the terminal).
	LogMirror io.Writer
	// AlarmHook receives every component's error-rate alarm changes (a
	// webhook, a command) besides the log line and the gauge.
	AlarmHook platform.AlarmHook
	// Alarm tunes every component's error-rate alarm (zero: the
	// defaults, see platform.TelemetryConfig.Alarm).
	Alarm correlation.AlarmConfig
	// OTLPEndpoint, when set, exports every component's spans to an
	// OpenTelemetry collector over OTLP/HTTP; otherwise they stay in each
	// component's bounded ring.
	OTLPEndpoint string
	// PerIP and PerPrincipal limit requests per minute per client network
	// and per signed-in principal at the gateway (0: its defaults).
	PerIP, PerPrincipal int
	// InspectionRate is the WAF inspection time per second one client
	// network may use for requests with a body (0: a quarter of a core;
	// negative: no budget).
	InspectionRate time.Duration
	// DenyList is an IP reputation file (one address or CIDR per line).
	DenyList string
	// TrustedProxies are the peers whose X-Forwarded-For the gateway
	// believes (a load balancer in front of it). Empty, the default: the
	// client is the TCP peer, whatever it sends.
	TrustedProxies []netip.Prefix
	// Issuer is the "iss" of every token and identity's issuer
	// identifier: the system's stable public URL. Default: the gateway's
	// URL (https://localhost:<port> when it listens on every or a
	// loopback address).
	Issuer string
	// AllowedHosts are the Host names and addresses the gateway (HTTPS
	// and redirect) answers for. Default: localhost, 127.0.0.1 and ::1.
	AllowedHosts []string
	// RotateKeysEvery rotates the data and checkpoint signing keys on this
	// schedule while the system runs; 0: only on demand ("malai
	// rotate-keys", which also rotates identity's token-signing key).
	// KeyReload is how often the key file is re-read (default
	// platform.DefaultKeyReload): a rotation reaches the running
	// components within it.
	RotateKeysEvery, KeyReload time.Duration
	// KeyWrapper wraps the data and signing keys in the key file: a KMS.
	// Default: platform.LocalKEK under DataDir.
	KeyWrapper platform.KeyWrapper
	// Auditor registers the evidence pass's auditor client (scope
	// ledger:audit) at identity; without it no such client exists.
	Auditor bool
	// Faults switch features off to build a deliberately broken system
	// (tests only: Start refuses them outside a test binary).
	Faults faults.Set
}

// CertFiles are an operator's certificate files for the components of a
// process (PEM; pki.LoadCerts re-reads them when they change).
type CertFiles struct {
	// Cert and Key are the component's leaf (common name = component)
	// and key; CA the roots it trusts for peers and clients.
	Cert, Key, CA string
	// WebCert and WebKey are the web backend's leaf (common name "web"),
	// which runs in the gateway's process.
	WebCert, WebKey string
}

// System is the reference system's components running in this process.
type System struct {
	GatewayURL  string
	RedirectURL string
	// URLs are the components' internal base URLs.
	URLs                   map[string]string
	IdentityURL, LedgerURL string
	DataDir                string
	// CA is the development CA (nil with operator certificate files);
	// CAFile the roots' file either way.
	CA        *pki.CA
	CAFile    string
	Keys      *platform.KeyFile
	Ring      *correlation.KeyRing
	Telemetry map[string]*platform.Telemetry
	Origin    string
	AuditKey  note.Verifier
	// Handles the components exported, for in-process tools and tests.
	Identity *identity.Service
	// IdentityStore is identity's store (accounts, sessions, keys).
	IdentityStore idstore.Store
	Ledger        *ledger.Service
	Audit         *auditlog.Log
	// Web is the customer web app the gateway serves at "/".
	Web *web.App

	mu      sync.Mutex
	stops   map[string]func() error
	closers []func() error
	reloads []func() error
}

// Close stops everything, newest first.
func (s *System) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	s.closers = nil
	return errors.Join(errs...)
}

func (s *System) onClose(f func() error) { s.closers = append(s.closers, f) }

// Stop stops one component now (the rest keep running); later calls and
// Close do nothing more for it.
func (s *System) Stop(name string) error {
	s.mu.Lock()
	stop := s.stops[name]
	s.stops[name] = func() error { return nil }
	s.mu.Unlock()
	if stop == nil {
		return fmt.Errorf("no component %q", name)
	}
	return stop()
}

// Reload runs every reload hook (SIGHUP): policy, deny list.
func (s *System) Reload() error {
	var errs []error
	for _, f := range s.reloads {
		errs = append(errs, f())
	}
	return errors.Join(errs...)
}

// Loopback is every loopback address, for TrustedProxies when a proxy (or
// the evidence pass, playing many clients) runs on this machine.
func Loopback() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

// Start runs the components o names (default: every one) in this
// process, each on its own listener, talking to each other and to the
// components of other processes over mutual TLS.
func Start(ctx context.Context, o Options) (_ *System, err error) {
	if err := o.Faults.Check(); err != nil {
		return nil, err
	}
	runs := func(name string) bool { return len(o.Components) == 0 || slices.Contains(o.Components, name) }
	for _, name := range o.Components {
		if !slices.ContainsFunc(components(), func(c component) bool { return c.name == name }) {
			return nil, fmt.Errorf("no component %q", name)
		}
	}
	s := &System{Telemetry: map[string]*platform.Telemetry{}, URLs: map[string]string{}, stops: map[string]func() error{}, Origin: auditOrigin, DataDir: o.DataDir}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return nil, err
	}
	names := []string{}
	for _, c := range components() {
		if runs(c.name) {
			names = append(names, c.name)
		}
	}
	if runs(platform.Gateway) {
		names = append(names, platform.Web)
	}
	certs, err := s.bootstrap(o, names)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err == nil {
			s.watchKeys(o, names)
		}
	}()

	rdb, err := openRedis(ctx, o.RedisURL)
	if err != nil {
		return nil, err
	}
	if rdb != nil {
		s.onClose(rdb.Close)
	}
	var q queue.Queue
	if rdb == nil && runs(platform.Ledger) && runs(platform.Worker) {
		// Ledger and worker share the embedded queue in this process.
		q = queue.NewMemory(queue.Options{MinIdle: 5 * time.Second, Block: 200 * time.Millisecond}, nil)
	}

	// Every listener first, so every peer URL is known before anything
	// starts.
	listeners := map[string]net.Listener{}
	for _, c := range components() {
		if !runs(c.name) {
			continue
		}
		addr := o.Listen[c.name]
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s listen %s: %w", c.name, addr, err)
		}
		s.onClose(func() error { ln.Close(); return nil })
		listeners[c.name] = ln
		s.URLs[c.name] = platform.URL(ln)
	}
	for name, u := range o.Peers {
		if s.URLs[name] == "" && u != "" {
			s.URLs[name] = u
		}
	}
	s.IdentityURL, s.LedgerURL = s.URLs[platform.Identity], s.URLs[platform.Ledger]
	issuer := o.Issuer
	var edge edgeListeners
	if runs(platform.Gateway) {
		if edge, err = listenEdge(o); err != nil {
			return nil, err
		}
		s.onClose(edge.close)
		s.GatewayURL = platform.URL(edge.Listener)
		if edge.Redirect != nil {
			s.RedirectURL = "http://" + edge.Redirect.Addr().String()
		}
		if issuer == "" {
			issuer = publicURL(edge.Listener.Addr().(*net.TCPAddr))
		}
		edge.Routes = publicRoutes()
		edge.PerIP, edge.PerPrincipal, edge.DenyList, edge.TrustedProxies, edge.AllowedHosts = o.PerIP, o.PerPrincipal, o.DenyList, o.TrustedProxies, o.AllowedHosts
		edge.InspectionRate = o.InspectionRate
	}
	if issuer == "" && (runs(platform.Identity) || runs(platform.Ledger)) {
		return nil, errors.New("no token issuer: set -issuer to the gateway's public URL")
	}
	origins := []string{issuer}
	if s.GatewayURL != "" && s.GatewayURL != issuer {
		origins = append(origins, s.GatewayURL)
	}

	for _, c := range components() {
		if !runs(c.name) {
			continue
		}
		t, err := platform.NewTelemetry(platform.TelemetryConfig{
			Component: c.name, LogDir: o.Faults.LogDir(filepath.Join(o.DataDir, "logs")), Ring: s.Ring, Mirror: o.LogMirror,
			TrustIncoming: o.Faults.TrustIncoming(platform.TrustedHop),
			AlarmHook:     o.AlarmHook, OTLPEndpoint: o.OTLPEndpoint, Alarm: o.Alarm,
		})
		if err != nil {
			return nil, err
		}
		s.Telemetry[c.name] = t
		s.onClose(t.Close)
		env := &platform.Env{
			Name: c.name, Certs: certs[c.name], Telemetry: t, Listener: listeners[c.name], Peers: s.URLs, Issuer: issuer, Origins: origins,
			Redis: rdb, RedisPrefix: o.RedisPrefix, Queue: q, DataDir: o.DataDir, Keys: s.Keys, Ring: s.Ring,
			OnReload: func(f func() error) { s.reloads = append(s.reloads, f) },
			Export:   s.export,
			Auditor:  o.Auditor,
		}
		if len(o.Faults) > 0 {
			env.Faults = o.Faults
			env.Switches = platform.Switches{NoMetrics: o.Faults.On(faults.NoMetrics), NoReputation: o.Faults.On(faults.EdgeNoReputation),
				TrustAnyForwardedFor: o.Faults.On(faults.IdentityTrustsAnyForwardedFor), OptionalClientCerts: o.Faults.On(faults.InternalCertOptional)}
		}
		env.Credentials = credentials(env)
		switch c.name {
		case platform.Ledger:
			env.Postgres, env.WitnessDir = o.Postgres, o.WitnessDir
		case platform.Identity:
			env.Postgres = o.IdentityPostgres
		case platform.Gateway:
			env.Edge = edge.Edge
			stopWeb, err := withWeb(env, certs[platform.Web])
			if err != nil {
				return nil, err
			}
			s.onClose(stopWeb)
		}
		stop, err := c.start(ctx, env)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
		s.stops[c.name] = stop
		name := c.name
		s.onClose(func() error { return s.Stop(name) })
	}
	return s, nil
}

// bootstrap loads (or, on first start, creates) the key file and the
// development CA under the data directory, and the certificates of the
// named components: from the operator's files when o.CertFiles is set,
// else issued by that CA. Processes sharing one data directory (split
// mode on one machine) serialise this on a lock file, so the first
// creates the keys and the CA and the others load them.
func (s *System) bootstrap(o Options, names []string) (map[string]*pki.Certs, error) {
	unlock, err := platform.LockFile(filepath.Join(o.DataDir, "bootstrap.lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	if s.Keys, err = openKeys(o); err != nil {
		return nil, err
	}
	if s.Ring, err = s.Keys.Ring(); err != nil {
		return nil, err
	}
	if _, s.AuditKey, err = s.Keys.Signer(); err != nil {
		return nil, err
	}
	certs := map[string]*pki.Certs{}
	if f := o.CertFiles; f != nil {
		s.CAFile = f.CA
		for _, name := range names {
			cert, key := f.Cert, f.Key
			if name == platform.Web {
				cert, key = f.WebCert, f.WebKey
			}
			if cert == "" || key == "" {
				return nil, fmt.Errorf("%s: no certificate file given", name)
			}
			if certs[name], err = pki.LoadCerts(name, cert, key, f.CA); err != nil {
				return nil, fmt.Errorf("%s certificate: %w", name, err)
			}
		}
		return certs, nil
	}
	if s.CA, err = pki.LoadOrCreate(filepath.Join(o.DataDir, "pki"), nil); err != nil {
		return nil, err
	}
	s.CAFile = s.CA.CertFile()
	for _, name := range names {
		if certs[name], err = s.CA.Certs(name); err != nil {
			return nil, err
		}
	}
	return certs, nil
}

func (s *System) export(v any) {
	switch h := v.(type) {
	case *identity.Service:
		s.Identity = h
	case idstore.Store:
		s.IdentityStore = h
	case *ledger.Service:
		s.Ledger = h
		s.Audit = h.Audit()
	case *web.App:
		s.Web = h
	}
}

// edgeListeners are the gateway's public sockets.
type edgeListeners struct{ platform.Edge }

func (e edgeListeners) close() error {
	for _, c := range []io.Closer{e.Listener, e.PacketConn, e.Redirect} {
		if c != nil {
			c.Close()
		}
	}
	return nil
}

// listenEdge opens the gateway's HTTPS listener, the HTTP/3 socket on the
// same port, and the redirect listener.
func listenEdge(o Options) (e edgeListeners, err error) {
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return e, fmt.Errorf("gateway listen %s: %w", o.Addr, err)
	}
	e.Listener = ln
	tcp := ln.Addr().(*net.TCPAddr)
	if !o.Faults.On(faults.EdgeNoHTTP3) {
		if e.PacketConn, err = net.ListenPacket("udp", net.JoinHostPort(tcp.IP.String(), strconv.Itoa(tcp.Port))); err != nil {
			ln.Close()
			return e, fmt.Errorf("gateway http/3 listen: %w", err)
		}
	}
	if o.HTTPAddr != "" {
		if e.Redirect, err = net.Listen("tcp", o.HTTPAddr); err != nil {
			e.close()
			return e, fmt.Errorf("redirect listen %s: %w", o.HTTPAddr, err)
		}
	}
	return e, nil
}

// publicURL is the gateway's https URL for a listening address.
func publicURL(a *net.TCPAddr) string {
	host := a.IP.String()
	if a.IP.IsUnspecified() || a.IP.IsLoopback() {
		host = "localhost"
	}
	return "https://" + net.JoinHostPort(host, strconv.Itoa(a.Port))
}

// credentials gives a component its own service tokens: a key pair made
// in memory at start, registered with identity over the component's
// certificate, and private_key_jwt assertions (no shared secret).
func credentials(env *platform.Env) func(context.Context, ...string) (oauth2.TokenSource, error) {
	return func(ctx context.Context, scopes ...string) (oauth2.TokenSource, error) {
		idURL, err := env.Peer(platform.Identity)
		if err != nil {
			return nil, err
		}
		cfg := clientauth.Config{IdentityURL: idURL, Scopes: scopes,
			HTTPClient: &http.Client{Transport: correlation.Transport(env.Transport(), env.Telemetry.Tracer), Timeout: 5 * time.Second}}
		var src *clientauth.Source
		err = waitForPeer(ctx, peerWait, env.Telemetry.Logger, "identity", func() error {
			src, err = clientauth.New(ctx, cfg)
			return err
		})
		return src, err
	}
}

// peerWait is how long a component waits at start for a peer it cannot
// start without (the worker's service credentials from identity): in a
// split deployment the components may start in any order.
const peerWait = time.Minute

// waitForPeer calls try until it succeeds, with a doubling pause from
// 250 ms to 5 s, for at most wait. A refusal (clientauth.ErrRefused: the
// peer answered and said no) is a configuration error and ends the wait
// at once; so does ctx.
func waitForPeer(ctx context.Context, wait time.Duration, log *slog.Logger, peer string, try func() error) error {
	deadline := time.Now().Add(wait)
	pause := 250 * time.Millisecond
	for {
		err := try()
		if err == nil || errors.Is(err, clientauth.ErrRefused) || ctx.Err() != nil {
			return err
		}
		if time.Now().Add(pause).After(deadline) {
			return fmt.Errorf("%s not reachable within %s: %w", peer, wait, err)
		}
		log.WarnContext(ctx, "waiting for a peer", "peer", peer, "retry_in", pause.String(), "error", err.Error())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// openRedis connects to url ("" : none).
func openRedis(ctx context.Context, url string) (redis.UniversalClient, error) {
	if url == "" {
		return nil, nil
	}
	ro, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	rdb := redis.NewClient(ro)
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis: %w", err)
	}
	return rdb, nil
}

// HTTPClient returns a client that trusts the system CA and presents no
// certificate (an outside client of the gateway).
func (s *System) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.CA.Pool()}, ForceAttemptHTTP2: true}, Timeout: 15 * time.Second}
}

// ComponentClient returns a client that presents a certificate naming
// component, issued by the system CA (tests and the evidence pass play a
// component or a privileged client with it).
func (s *System) ComponentClient(component string) (*http.Client, error) {
	cert, err := s.CA.Issue(component)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{RootCAs: s.CA.Pool(), Certificates: []tls.Certificate{cert}}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}, Timeout: 15 * time.Second}, nil
}
