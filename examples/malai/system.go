package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/quic-go/quic-go/http3"
	"github.com/redis/go-redis/v9"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/oauth2"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
	"github.com/malai-sec/malai/auditlog/pgstore"
	"github.com/malai-sec/malai/clientip"
	"github.com/malai-sec/malai/correlation"
	"github.com/malai-sec/malai/examples/malai/gateway"
	"github.com/malai-sec/malai/examples/malai/identity"
	"github.com/malai-sec/malai/examples/malai/identity/clientauth"
	"github.com/malai-sec/malai/examples/malai/identity/store"
	"github.com/malai-sec/malai/examples/malai/identity/store/boltstore"
	"github.com/malai-sec/malai/examples/malai/internal/faults"
	"github.com/malai-sec/malai/examples/malai/internal/pki"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
	"github.com/malai-sec/malai/examples/malai/internal/queue"
	"github.com/malai-sec/malai/examples/malai/ledger"
	"github.com/malai-sec/malai/examples/malai/web"
	"github.com/malai-sec/malai/examples/malai/worker"
	"github.com/malai-sec/malai/headers"
	"github.com/malai-sec/malai/idempotency"
	idemmem "github.com/malai-sec/malai/idempotency/memstore"
	idemredis "github.com/malai-sec/malai/idempotency/redisstore"
	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/ratelimit"
	rlredis "github.com/malai-sec/malai/ratelimit/redisstore"
	"github.com/malai-sec/malai/route"
)

// auditOrigin names the ledger's audit log in its signed checkpoints.
const auditOrigin = "malai.local/ledger-audit"

// Options configure one run of the whole system on one machine.
type Options struct {
	// Addr is the gateway's HTTPS address (TCP for TLS, UDP for HTTP/3).
	Addr string
	// HTTPAddr serves the HTTP→HTTPS redirect. Empty: none.
	HTTPAddr string
	// DataDir holds the CA certificate, the key file, the audit chain and
	// witness, the policy and the encrypted logs.
	DataDir string
	// RedisURL, when set, puts rate limits, idempotency records and the
	// queue in Redis; otherwise they are in memory.
	RedisURL string
	// RedisPrefix starts every key the system writes in Redis. Default
	// "malai:".
	RedisPrefix string
	// LogMirror also receives the plaintext JSON logs (the terminal).
	LogMirror io.Writer
	// PerIP and PerPrincipal limit requests per minute per client network
	// and per signed-in principal at the gateway (0: the gateway's
	// defaults).
	PerIP, PerPrincipal int
	// AllowedHosts are the Host names and addresses the gateway (HTTPS
	// and redirect) answers for. Default: localhost, 127.0.0.1 and ::1.
	AllowedHosts []string
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
	// AuditDSN, when set, keeps the audit chain in PostgreSQL, connected as
	// the least-privileged application role created by "malai migrate";
	// otherwise it is a file store under DataDir. The witness always keeps
	// its checkpoints in a separate file store.
	AuditDSN, AuditSchema, AuditPasswordFile string
	// Faults switch features off to build a deliberately broken system
	// (tests only: Start refuses them outside a test binary).
	Faults faults.Set
}

func (o Options) redisPrefix() string {
	if o.RedisPrefix == "" {
		return "malai:"
	}
	return o.RedisPrefix
}

// System is a running reference system.
type System struct {
	GatewayURL  string
	RedirectURL string
	IdentityURL string
	LedgerURL   string
	CA          *pki.CA
	CAFile      string
	Identity    *identity.Service
	// IdentityStore is identity's store (accounts, sessions, keys).
	IdentityStore store.Store
	Ledger        *ledger.Service
	Audit         *auditlog.Log
	AuditStore    auditlog.Store
	Origin        string
	AuditKey      note.Verifier
	Telemetry     map[string]*platform.Telemetry
	Reputation    *ratelimit.Reputation
	// Web is the customer web app the gateway serves at "/".
	Web *web.App
	// EvidenceID is the client id the evidence pass authenticates as
	// (private_key_jwt over the evidence certificate), with the auditor
	// scope on the ledger.
	EvidenceID string
	WorkerID   string
	// Keys and Ring: the data keys sealing logs and audit payloads.
	Keys *platform.KeyFile
	Ring *correlation.KeyRing

	stopLedger func() error
	faults     faults.Set

	closers []func() error
}

// Close stops everything, newest first.
func (s *System) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	return errors.Join(errs...)
}

func (s *System) onClose(f func() error) { s.closers = append(s.closers, f) }

// trustedHop reports whether the TLS peer presented a client certificate
// of the system's CA naming one of the components allowed to forward a
// correlation id (the gateway, the worker).
func trustedHop(r *http.Request) bool {
	return peerIs(r, "gateway") || peerIs(r, "worker")
}

// peerName is the component named by the verified client certificate of
// r's TLS connection, or "".
func peerName(r *http.Request) string {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return ""
	}
	return r.TLS.VerifiedChains[0][0].Subject.CommonName
}

// peerIs reports whether the TLS peer's verified client certificate names
// component.
func peerIs(r *http.Request, component string) bool {
	return r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && r.TLS.VerifiedChains[0][0].Subject.CommonName == component
}

// Loopback is every loopback address, for TrustedProxies when a proxy (or
// the evidence pass, playing many clients) runs on this machine.
func Loopback() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

// Start runs identity, ledger, worker and gateway in this process.
func Start(ctx context.Context, o Options) (_ *System, err error) {
	if err := o.Faults.Check(); err != nil {
		return nil, err
	}
	s := &System{Telemetry: map[string]*platform.Telemetry{}, faults: o.Faults}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return nil, err
	}
	s.Origin = auditOrigin
	keys, err := platform.LoadOrCreateKeys(o.DataDir, s.Origin)
	if err != nil {
		return nil, err
	}
	ring, err := keys.Ring()
	if err != nil {
		return nil, err
	}
	s.Keys, s.Ring = keys, ring
	s.CA, err = pki.NewCA(nil)
	if err != nil {
		return nil, err
	}
	s.CAFile = filepath.Join(o.DataDir, "ca.pem")
	if err := s.CA.WriteCert(s.CAFile); err != nil {
		return nil, err
	}

	tele := func(name string) (*platform.Telemetry, error) {
		t, err := platform.NewTelemetry(platform.TelemetryConfig{
			Component: name, LogDir: o.Faults.LogDir(filepath.Join(o.DataDir, "logs")), Ring: ring, Mirror: o.LogMirror,
			TrustIncoming: o.Faults.TrustIncoming(trustedHop),
		})
		if err != nil {
			return nil, err
		}
		s.Telemetry[name] = t
		s.onClose(t.Close)
		return t, nil
	}

	// Outbound TLS for every component: trust only the system CA, present
	// the component's client certificate.
	clientTLS := func(component string) (*http.Transport, error) {
		cert, err := s.CA.IssueClient(component)
		if err != nil {
			return nil, err
		}
		return &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: s.CA.Pool(), Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
			ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second,
		}, nil
	}

	var rdb redis.UniversalClient
	if o.RedisURL != "" {
		ro, err := redis.ParseURL(o.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("redis url: %w", err)
		}
		rdb = redis.NewClient(ro)
		s.onClose(rdb.Close)
		if err := rdb.Ping(ctx).Err(); err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
	}

	// The gateway believes X-Forwarded-For only from configured proxies.
	edgeIP, err := clientip.New(clientip.Config{TrustedProxies: o.TrustedProxies})
	if err != nil {
		return nil, err
	}
	// Services believe the X-Forwarded-For the gateway sets, and only when
	// the peer proved with its client certificate that it is the gateway:
	// a local process calling identity directly cannot choose its address.
	fromGateway, err := clientip.New(clientip.Config{TrustedProxies: Loopback()})
	if err != nil {
		return nil, err
	}
	serviceIP := func(r *http.Request) (netip.Addr, error) {
		// The web app forwards the browser's address the same way.
		if peerIs(r, "gateway") || peerIs(r, "web") || o.Faults.On(faults.IdentityTrustsAnyForwardedFor) {
			return fromGateway.Resolve(r)
		}
		return identity.RemoteAddrIP(r)
	}

	// The gateway's listener first: its URL is the public issuer.
	edgeLn, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("gateway listen %s: %w", o.Addr, err)
	}
	edgeOwned := false
	defer func() {
		if !edgeOwned {
			edgeLn.Close()
		}
	}()
	issuer := o.Issuer
	if issuer == "" {
		issuer = publicURL(edgeLn.Addr().(*net.TCPAddr))
	}

	// --- identity ---
	idT, err := tele("identity")
	if err != nil {
		return nil, err
	}
	idLn, idURL, err := s.listenTLS("identity")
	if err != nil {
		return nil, err
	}
	s.IdentityURL = idURL
	// Identity keeps its accounts in bbolt under the data directory and its
	// security events in an audit chain of its own.
	idStore, err := boltstore.Open(filepath.Join(o.DataDir, "identity"), 0)
	if err != nil {
		return nil, err
	}
	s.IdentityStore = idStore
	s.onClose(idStore.Close)
	idAuditStore, err := filestore.Open(filepath.Join(o.DataDir, "identity-audit"))
	if err != nil {
		return nil, err
	}
	s.onClose(idAuditStore.Close)
	idSigner, _, err := keys.Signer()
	if err != nil {
		return nil, err
	}
	idAudit, err := auditlog.New(auditlog.Config{
		Store: idAuditStore, Origin: "malai.local/identity-audit", Signers: []note.Signer{idSigner}, Ring: ring,
		OnError: func(err error) { idT.Logger.Error("identity audit: background work failed", "error", err.Error()) },
	})
	if err != nil {
		return nil, err
	}
	s.onClose(idAudit.Close)
	s.Identity, err = identity.New(identity.Config{
		Issuer: issuer, Logger: idT.Logger, ClientIP: serviceIP, Store: idStore, Ring: ring, Audit: idAudit,
		Clients: []identity.Client{
			{ID: "worker", Scopes: []string{ledger.ScopeTransfer}},
			{ID: "evidence", Scopes: []string{ledger.ScopeAudit}},
		},
		PeerComponent:  peerName,
		AllowedOrigins: []string{issuer, "https://" + edgeLn.Addr().String()},
		// The web backend keeps browsers' refresh sessions server-side
		// and guards its own pages against cross-site requests.
		OriginExemptPeers: []string{"web"},
		Faults:            o.Faults.Identity(),
	})
	if err != nil {
		return nil, err
	}
	s.onClose(s.Identity.Close)
	idH, err := s.service(idT, s.Identity.Handler())
	if err != nil {
		return nil, err
	}
	s.serve(idLn, idH, idT.Logger)
	s.WorkerID = "worker"
	s.EvidenceID = "evidence"

	verifier := func(component string, auds ...string) (*jwtverify.Verifier, error) {
		tr, err := clientTLS(component)
		if err != nil {
			return nil, err
		}
		v, err := jwtverify.New(jwtverify.Config{
			Issuers: []jwtverify.Issuer{{
				Issuer: issuer, JWKSURL: idURL + "/.well-known/jwks.json", Algorithms: []string{"ES256"},
				Audiences: auds, MaxLifetime: 15 * time.Minute,
			}},
			HTTPClient: &http.Client{Transport: tr, Timeout: 5 * time.Second},
			CacheSize:  10_000,
			Realm:      "malai",
		})
		if err != nil {
			return nil, err
		}
		s.onClose(v.Close)
		select {
		case <-v.Ready():
		case <-time.After(10 * time.Second):
			return nil, fmt.Errorf("%s: JWKS not ready", component)
		}
		return v, nil
	}

	// --- ledger ---
	ldT, err := tele("ledger")
	if err != nil {
		return nil, err
	}
	fst, err := openAuditStore(ctx, o)
	if err != nil {
		return nil, err
	}
	s.AuditStore = fst
	s.onClose(fst.Close)
	wst, err := filestore.Open(filepath.Join(o.DataDir, "witness"))
	if err != nil {
		return nil, err
	}
	s.onClose(wst.Close)
	signer, vkey, err := keys.Signer()
	if err != nil {
		return nil, err
	}
	s.AuditKey = vkey
	witness, err := auditlog.NewWitness(ctx, auditlog.WitnessConfig{Store: wst, Origin: s.Origin, Verifiers: []note.Verifier{vkey}})
	if err != nil {
		return nil, err
	}
	s.Audit, err = auditlog.New(auditlog.Config{
		Store: fst, Origin: s.Origin, Signers: []note.Signer{signer}, Witness: witness, Ring: ring,
		OnError: func(err error) { ldT.Logger.Error("audit: background work failed", "error", err.Error()) },
	})
	if err != nil {
		return nil, err
	}
	s.onClose(s.Audit.Close)

	var idemStore idempotency.Store
	var q queue.Queue
	if rdb != nil {
		if idemStore, err = idemredis.New(idemredis.Config{Client: rdb, Prefix: o.redisPrefix() + "idem:"}); err != nil {
			return nil, err
		}
		if q, err = queue.NewRedis(ctx, rdb, o.redisPrefix()+"transfers", "workers", queue.Options{}); err != nil {
			return nil, err
		}
	} else {
		// The ledger keeps every outcome in its chain: completed records
		// may be evicted when the store is full.
		ms, err := idemmem.New(idemmem.Config{EvictCompleted: true})
		if err != nil {
			return nil, err
		}
		idemStore = ms
		q = queue.NewMemory(queue.Options{MinIdle: 5 * time.Second, Block: 200 * time.Millisecond}, nil)
	}
	ledgerV, err := verifier("ledger", identity.AudienceUser, identity.AudienceService)
	if err != nil {
		return nil, err
	}
	ldLn, ldURL, err := s.listenTLS("ledger")
	if err != nil {
		return nil, err
	}
	s.LedgerURL = ldURL
	s.Ledger, err = ledger.New(ctx, ledger.Config{
		Verifier: ledgerV, Audit: s.Audit, Idempotency: o.Faults.IdempotencyStore(idemStore), Queue: q, JobKeys: ring,
		PolicyFile: filepath.Join(o.DataDir, "ledger-policy.csv"), Logger: ldT.Logger, Faults: o.Faults.Ledger(),
	})
	if err != nil {
		return nil, err
	}
	s.onClose(s.Ledger.Close)
	ldH, err := s.service(ldT, s.Ledger.Handler())
	if err != nil {
		return nil, err
	}
	s.stopLedger = s.serve(ldLn, ldH, ldT.Logger)

	// --- worker ---
	wkT, err := tele("worker")
	if err != nil {
		return nil, err
	}
	wkTr, err := clientTLS("worker")
	if err != nil {
		return nil, err
	}
	wctx, wcancel := context.WithCancel(context.Background())
	// The worker's own key pair, registered over its certificate: no
	// shared secret.
	wSrc, err := clientauth.New(ctx, clientauth.Config{IdentityURL: idURL, HTTPClient: &http.Client{Transport: wkTr, Timeout: 5 * time.Second}, Scopes: []string{ledger.ScopeTransfer}})
	if err != nil {
		wcancel()
		return nil, err
	}
	wClient := &http.Client{Transport: correlation.Transport(&oauth2.Transport{Source: oauth2.ReuseTokenSource(nil, wSrc), Base: wkTr}, wkT.Tracer), Timeout: 30 * time.Second}
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		err := worker.Run(wctx, worker.Config{Queue: q, LedgerURL: ldURL, Client: wClient, Logger: wkT.Logger})
		if err != nil && !errors.Is(err, context.Canceled) {
			wkT.Logger.Error("worker stopped", "error", err.Error())
		}
	}()
	s.onClose(func() error { wcancel(); <-wdone; return nil })

	// --- gateway ---
	gwT, err := tele("gateway")
	if err != nil {
		return nil, err
	}
	gwV, err := verifier("gateway", identity.AudienceUser)
	if err != nil {
		return nil, err
	}
	gwTr, err := clientTLS("gateway")
	if err != nil {
		return nil, err
	}
	var rateStore ratelimit.Store
	if rdb != nil {
		if rateStore, err = rlredis.New(rlredis.Config{Client: rdb, Prefix: o.redisPrefix() + "rl:"}); err != nil {
			return nil, err
		}
	}
	repCfg := ratelimit.ReputationConfig{}
	if o.DenyList != "" {
		repCfg.DenyFiles = []string{o.DenyList}
	}
	if s.Reputation, err = ratelimit.NewReputation(repCfg); err != nil {
		return nil, err
	}
	idU, _ := url.Parse(idURL)
	ldU, _ := url.Parse(ldURL)

	// --- web (the customer web app, served by the gateway at "/") ---
	webTr, err := clientTLS("web")
	if err != nil {
		return nil, err
	}
	var webStore web.Store
	if rdb != nil {
		webStore, err = web.NewRedisStore(rdb, o.redisPrefix()+"web:")
	} else {
		webStore, err = web.NewBoltStore(filepath.Join(o.DataDir, "web-sessions.db"))
	}
	if err != nil {
		return nil, err
	}
	s.onClose(webStore.Close)
	s.Web, err = web.New(web.Config{
		IdentityURL: idU, LedgerURL: ldU, Transport: correlation.Transport(webTr, gwT.Tracer), Store: webStore, Ring: ring,
		ClientIP: edgeIP.Resolve, Logger: gwT.Logger,
	})
	if err != nil {
		return nil, err
	}
	routes := gateway.DefaultRoutes()
	for _, e := range s.Web.Endpoints() {
		routes = append(routes, gateway.Route{Pattern: e.Pattern, Web: true, BodyLimit: e.BodyLimit, MediaTypes: e.MediaTypes,
			PasswordFields: e.PasswordFields, Report: e.Report})
	}

	gwCfg := gateway.Config{
		IdentityURL: idU, LedgerURL: ldU, Transport: o.Faults.Propagation(correlation.Transport(gwTr, gwT.Tracer), gwTr), Verifier: gwV,
		RateStore: rateStore, Reputation: s.Reputation, PerIP: o.PerIP, PerPrincipal: o.PerPrincipal, ClientIP: edgeIP.Resolve, Logger: gwT.Logger,
		AllowedHosts: o.AllowedHosts, Routes: routes, Web: s.Web.Handler(),
	}
	if o.Faults.On(faults.EdgeNoReputation) {
		gwCfg.Reputation = nil
	}
	gwCfg.Faults = o.Faults.Gateway()
	gw, err := gateway.New(gwCfg)
	if err != nil {
		return nil, err
	}
	s.onClose(gw.Close)
	edgeOwned = true
	return s, s.startEdge(o, edgeLn, gwT, gw.Handler())
}

// openAuditStore opens the audit chain's store: PostgreSQL as the app
// role when AuditDSN is set, else the file store under DataDir.
func openAuditStore(ctx context.Context, o Options) (auditlog.Store, error) {
	if o.AuditDSN == "" {
		return filestore.Open(filepath.Join(o.DataDir, "audit"))
	}
	schema := o.AuditSchema
	if schema == "" {
		schema = defaultPGAudit.Schema
	}
	return pgstore.New(ctx, pgstore.Config{DSN: o.AuditDSN, Schema: schema, Password: passwordFile(o.AuditPasswordFile)})
}

// listenTLS opens a loopback TLS listener for an internal service. Peers
// may present a client certificate of the system CA (the gateway and the
// worker do); it is verified when given.
func (s *System) listenTLS(name string) (net.Listener, string, error) {
	cert, err := s.CA.Issue(name, "localhost", "127.0.0.1", "::1")
	if err != nil {
		return nil, "", err
	}
	cfg := headers.TLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: s.CA.Pool()})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		return nil, "", err
	}
	return ln, "https://" + ln.Addr().String(), nil
}

// service wraps an internal service: headers outermost (defence in depth
// behind the gateway), correlation, then the service; /metrics is served
// beside it on the same internal listener.
func (s *System) service(t *platform.Telemetry, h http.Handler) (http.Handler, error) {
	hm, err := headers.New(cacheablePublicDocs(headers.Config{}))
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	if !s.faults.On(faults.NoMetrics) {
		mux.Handle("GET /metrics", t.Metrics)
	}
	mux.Handle("/", h)
	return hm.Handler(t.Middleware.Handler(route.RecordPattern(mux))), nil
}

// publicURL is the gateway's https URL for a listening address.
func publicURL(a *net.TCPAddr) string {
	host := a.IP.String()
	if a.IP.IsUnspecified() || a.IP.IsLoopback() {
		host = "localhost"
	}
	return "https://" + net.JoinHostPort(host, strconv.Itoa(a.Port))
}

// cacheablePublicDocs lets identity's key set and metadata keep their own
// Cache-Control (public, max-age), so verifiers and clients may cache
// them; every other response stays no-store.
func cacheablePublicDocs(c headers.Config) headers.Config {
	docs := c.Default
	docs.KeepHandlerCacheControl = true
	apps := maps.Clone(c.Apps)
	if apps == nil {
		apps = map[string]headers.App{}
	}
	apps["public-docs"] = docs
	next := c.Select
	c.Apps = apps
	c.Select = func(r *http.Request) string {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			switch r.URL.Path {
			case identity.JWKSPath, identity.MetadataPath:
				return "public-docs"
			}
		}
		if next != nil {
			return next(r)
		}
		return ""
	}
	return c
}

// RotateDataKey makes a new data key seal logs and audit payloads from now
// on and re-encrypts the audit rows sealed under older keys; hashes, and
// so every checkpoint, stay valid. With the chain in PostgreSQL the
// ledger's role may not rewrite rows: the key is rotated and the rows are
// left for "malai audit-rekey", which runs as the migrator.
func (s *System) RotateDataKey(ctx context.Context) (int, error) {
	if err := s.Keys.Rotate(time.Now(), s.Ring); err != nil {
		return 0, err
	}
	if _, pg := s.AuditStore.(*pgstore.Store); pg {
		return 0, errors.New("data key rotated; re-encrypt the PostgreSQL audit rows with \"malai audit-rekey\" (the ledger's role may not rewrite them)")
	}
	return s.Audit.Reencrypt(ctx)
}

// serve runs an HTTP server on ln until Close; the returned function stops
// it early.
func (s *System) serve(ln net.Listener, h http.Handler, log *slog.Logger) func() error {
	srv := &http.Server{Handler: h, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute}
	go srv.Serve(ln)
	stop := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(ctx)
	}
	s.onClose(stop)
	return stop
}

// startEdge serves the gateway over TLS (h2, http/1.1) and HTTP/3 on the
// same port, and the redirect on the plain-HTTP port.
func (s *System) startEdge(o Options, ln net.Listener, t *platform.Telemetry, gw http.Handler) (err error) {
	served := false
	defer func() {
		if !served {
			ln.Close()
		}
	}()
	cert, err := s.CA.Issue("gateway", "localhost", "127.0.0.1", "::1")
	if err != nil {
		return err
	}
	tlsCfg := headers.TLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}})
	port := ln.Addr().(*net.TCPAddr).Port
	var altSvc func(http.Header) error
	var h3 *http3.Server
	var udp net.PacketConn
	if !o.Faults.On(faults.EdgeNoHTTP3) {
		udp, err = net.ListenPacket("udp", net.JoinHostPort(ln.Addr().(*net.TCPAddr).IP.String(), strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("gateway http/3 listen: %w", err)
		}
		h3 = &http3.Server{TLSConfig: tlsCfg, Port: port}
		altSvc = h3.SetQUICHeaders
		s.onClose(func() error { h3.Close(); return udp.Close() })
	}
	hm, err := headers.New(cacheablePublicDocs(headers.Config{AltSvc: altSvc,
		Apps: map[string]headers.App{web.HeadersAppName: web.HeadersApp()}, Select: web.SelectHeaders}))
	if err != nil {
		return err
	}
	handler := o.Faults.EdgeHandler(hm.Handler(t.Middleware.Handler(route.RecordPattern(gw))))
	if h3 != nil {
		h3.Handler = handler
		go h3.Serve(udp)
	}
	s.serve(tls.NewListener(ln, o.Faults.EdgeTLS(tlsCfg)), handler, t.Logger)
	served = true
	s.GatewayURL = "https://" + ln.Addr().String()

	if o.HTTPAddr != "" {
		hosts := o.AllowedHosts
		if len(hosts) == 0 {
			hosts = []string{"localhost", "127.0.0.1", "::1"}
		}
		rd, err := headers.NewRedirect(headers.RedirectConfig{AllowedHosts: o.Faults.RedirectHosts(hosts), HTTPSPort: port})
		if err != nil {
			return err
		}
		hln, err := net.Listen("tcp", o.HTTPAddr)
		if err != nil {
			return fmt.Errorf("redirect listen %s: %w", o.HTTPAddr, err)
		}
		s.serve(hln, hm.Handler(rd), t.Logger)
		s.RedirectURL = "http://" + hln.Addr().String()
	}
	return nil
}

// HTTPClient returns a client that trusts the system CA.
func (s *System) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.CA.Pool()}, ForceAttemptHTTP2: true}, Timeout: 15 * time.Second}
}
