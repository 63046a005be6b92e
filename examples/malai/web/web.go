package web

import (
	"context"
	"crypto/sha512"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/malai-sec/malai/examples/malai/web/internal/sessionstore"
	"github.com/malai-sec/malai/headers"
	"github.com/malai-sec/malai/keyring"
	"github.com/malai-sec/malai/problem"
	"github.com/malai-sec/malai/route"
)

// Defaults applied by [New] to zero Config fields.
const (
	// DefaultIdleTimeout ends a session nobody used for this long.
	DefaultIdleTimeout = 15 * time.Minute
	// DefaultAbsoluteTimeout ends every session this long after sign-in,
	// however active.
	DefaultAbsoluteTimeout = 8 * time.Hour
	// AnonymousTimeout bounds a session that never signed in (it only
	// carries the CSRF token of the sign-in and sign-up forms).
	AnonymousTimeout = 30 * time.Minute
)

// CookieName is the only cookie the app sets. The __Host- prefix makes the
// browser refuse it unless it is Secure, has Path=/ and no Domain, so no
// sibling host or plain-HTTP response can set or shadow it.
const CookieName = "__Host-malai-session"

// CookieFormat is the whole shape of the cookie's value (RE2): 256 random
// bits, base64url, only ever hashed and looked up. The gateway's WAF
// leaves a value of exactly this shape uninspected.
const CookieFormat = `[A-Za-z0-9_-]{43}`

// ReportPath receives the browser's CSP violation reports.
const ReportPath = "/csp-report"

// TrustedTypesPolicy is the one Trusted Types policy name the page may
// create; the app's script creates it first, so no injected script can.
const TrustedTypesPolicy = "malai"

// CSP is the app's Content-Security-Policy. $NONCE becomes a fresh nonce
// per response (the headers package does that); nothing else may run.
const CSP = "default-src 'none'; script-src " + headers.NoncePlaceholder + "; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'; " +
	"require-trusted-types-for 'script'; trusted-types " + TrustedTypesPolicy + "; report-uri " + ReportPath

// HeadersApp is the header profile of the app for [headers.Config.Apps]:
// its own CSP, everything else as strict as the API's, static files
// cacheable (a page with a nonce never is). The referrer policy is
// same-origin, not no-referrer: under no-referrer a browser sends
// "Origin: null" with the app's own form posts, which would blind the
// Origin check; same-origin still sends nothing to other sites.
func HeadersApp() headers.App {
	return headers.App{CSP: CSP, KeepHandlerCacheControl: true, ReferrerPolicy: "same-origin"}
}

// HeadersAppName is the app's name in headers.Config.Apps.
const HeadersAppName = "web"

// apiPrefixes are the paths the gateway routes to the APIs, never to the
// app. Everything else is the app's.
var apiPrefixes = []string{"/v1/", "/oauth2/", "/.well-known/", "/internal/", "/healthz", "/metrics"}

// SelectHeaders is a [headers.Config.Select] that gives the app's paths
// the app's profile ([HeadersAppName]) and API paths the default one.
func SelectHeaders(r *http.Request) string {
	if IsAPIPath(r.URL.Path) {
		return ""
	}
	return HeadersAppName
}

// IsAPIPath reports whether path belongs to the APIs rather than the app.
func IsAPIPath(path string) bool {
	for _, p := range apiPrefixes {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config configures the app. IdentityURL, LedgerURL, Transport, Store and
// Ring are required.
type Config struct {
	// IdentityURL and LedgerURL are the services' internal base URLs.
	IdentityURL, LedgerURL *url.URL
	// Transport reaches them: mutual TLS with the app's own client
	// certificate (component "web"), correlation propagated.
	Transport http.RoundTripper
	// Store keeps the sessions: sessionstore-compatible (see
	// [NewBoltStore], [NewRedisStore]).
	Store Store
	// Ring seals every session record (it holds access and refresh
	// tokens); every replica needs the same keys.
	Ring *keyring.Ring
	// ClientIP is the browser's address (the gateway's trusted-proxy
	// resolver); it is forwarded to identity for risk scoring.
	ClientIP func(*http.Request) (netip.Addr, error)
	// Origins are the origins state-changing requests may come from, e.g.
	// "https://bank.example". Empty: the request's own https://Host.
	Origins []string
	// IdleTimeout and AbsoluteTimeout bound a signed-in session. Defaults
	// DefaultIdleTimeout and DefaultAbsoluteTimeout.
	IdleTimeout, AbsoluteTimeout time.Duration
	// OnCSPReport receives each CSP violation report (after it is
	// logged). Optional.
	OnCSPReport func(context.Context, []headers.Report)
	Logger      *slog.Logger
	Now         func() time.Time
}

// Store is where sessions live. Implementations: [NewBoltStore] (one
// process, durable) and [NewRedisStore] (any number of replicas).
type Store = sessionstore.Store

// NewBoltStore opens the durable embedded store at path.
func NewBoltStore(path string) (Store, error) { return sessionstore.OpenBolt(path, nil, 0) }

// App is the web app. It is safe for concurrent use.
type App struct {
	cfg       Config
	log       *slog.Logger
	sessions  *sessions
	up        *upstream
	pages     map[string]*template.Template
	static    http.Handler
	scriptSRI string
	reports   *headers.ReportHandler
	reportN   atomic.Int64
	reportMu  sync.Mutex
	recent    []headers.Report // the last maxRecentReports
	reportCh  chan struct{}    // closed at the next report
	h         http.Handler
	origins   map[string]bool
}

// New validates cfg and builds the app.
func New(cfg Config) (*App, error) {
	if cfg.IdentityURL == nil || cfg.LedgerURL == nil || cfg.Transport == nil || cfg.Store == nil || cfg.Ring == nil {
		return nil, errors.New("web: IdentityURL, LedgerURL, Transport, Store and Ring are required")
	}
	c := cfg
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.AbsoluteTimeout == 0 {
		c.AbsoluteTimeout = DefaultAbsoluteTimeout
	}
	if c.IdleTimeout < 0 || c.AbsoluteTimeout < c.IdleTimeout {
		return nil, errors.New("web: IdleTimeout must be positive and AbsoluteTimeout at least IdleTimeout")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	a := &App{cfg: c, log: c.Logger, origins: make(map[string]bool), reportCh: make(chan struct{})}
	for _, o := range c.Origins {
		u, err := url.Parse(o)
		if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return nil, fmt.Errorf("web: origin %q is not an https origin", o)
		}
		a.origins["https://"+strings.ToLower(u.Host)] = true
	}
	a.sessions = &sessions{store: c.Store, ring: c.Ring, now: c.Now, idle: c.IdleTimeout, absolute: c.AbsoluteTimeout, log: c.Logger}
	a.up = &upstream{identity: c.IdentityURL, ledger: c.LedgerURL, client: &http.Client{Transport: c.Transport, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	if err := a.parseTemplates(); err != nil {
		return nil, err
	}
	sub, _ := fs.Sub(staticFS, "static")
	js, err := fs.ReadFile(sub, "app.js")
	if err != nil {
		return nil, err
	}
	sum := sha512.Sum384(js)
	a.scriptSRI = "sha384-" + base64.StdEncoding.EncodeToString(sum[:])
	a.static = staticHandler(sub)
	a.reports, err = headers.NewReportHandler(headers.ReportConfig{
		MaxBytes: reportMaxBytes, MaxReports: 20, Logger: c.Logger,
		OnReport: func(ctx context.Context, rs []headers.Report) {
			a.recordReports(rs)
			for _, r := range rs {
				a.log.LogAttrs(ctx, slog.LevelWarn, "web: csp violation",
					slog.String("document_url", r.DocumentURL), slog.String("blocked_url", r.BlockedURL),
					slog.String("effective_directive", r.EffectiveDirective), slog.String("source_file", r.SourceFile),
					slog.Int("line", r.LineNumber))
			}
			if c.OnCSPReport != nil {
				c.OnCSPReport(ctx, rs)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	a.h = a.routes()
	return a, nil
}

// Handler serves the app (mount it at "/" behind the headers middleware
// configured with [HeadersApp] and [SelectHeaders]).
func (a *App) Handler() http.Handler { return a.h }

// CSPReports is the number of CSP violations reported since start.
func (a *App) CSPReports() int64 { return a.reportN.Load() }

// maxRecentReports bounds the reports [App.RecentCSPReports] keeps.
const maxRecentReports = 64

func (a *App) recordReports(rs []headers.Report) {
	a.reportMu.Lock()
	defer a.reportMu.Unlock()
	a.recent = append(a.recent, rs...)
	if n := len(a.recent) - maxRecentReports; n > 0 {
		a.recent = append(a.recent[:0:0], a.recent[n:]...)
	}
	a.reportN.Add(int64(len(rs)))
	close(a.reportCh)
	a.reportCh = make(chan struct{})
}

// RecentCSPReports returns the last CSP violations reported (at most 64,
// oldest first).
func (a *App) RecentCSPReports() []headers.Report {
	a.reportMu.Lock()
	defer a.reportMu.Unlock()
	return append([]headers.Report(nil), a.recent...)
}

// WaitCSPReports blocks until at least n CSP violations have been
// reported since start, or ctx ends.
func (a *App) WaitCSPReports(ctx context.Context, n int64) error {
	for {
		a.reportMu.Lock()
		got, next := a.reportN.Load(), a.reportCh
		a.reportMu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-next:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Route is one entry of the app's route table.
type Route struct {
	Pattern string
	// StateChanging routes pass the CSRF check (Origin and token).
	StateChanging bool
	// SignedIn routes need a signed-in session.
	SignedIn bool
	// PasswordFields are the form fields that carry a password.
	PasswordFields []string
	handler        http.HandlerFunc
}

// Routes returns the app's route table.
func (a *App) Routes() []Route {
	return []Route{
		{Pattern: "GET /{$}", handler: a.home},
		{Pattern: "GET /signup", handler: a.signUpPage},
		{Pattern: "POST /signup", StateChanging: true, PasswordFields: []string{"password", "confirm"}, handler: a.signUp},
		{Pattern: "GET /signin", handler: a.signInPage},
		{Pattern: "POST /signin", StateChanging: true, PasswordFields: []string{"password"}, handler: a.signIn},
		{Pattern: "GET /signin/mfa", handler: a.mfaChallengePage},
		{Pattern: "POST /signin/mfa", StateChanging: true, handler: a.mfaChallenge},
		{Pattern: "GET /account", SignedIn: true, handler: a.accountPage},
		{Pattern: "POST /accounts", StateChanging: true, SignedIn: true, handler: a.openAccount},
		{Pattern: "GET /transfer", SignedIn: true, handler: a.transferPage},
		{Pattern: "POST /transfer", StateChanging: true, SignedIn: true, handler: a.transfer},
		{Pattern: "GET /jobs/{id}", SignedIn: true, handler: a.jobStatus},
		{Pattern: "GET /mfa", SignedIn: true, handler: a.mfaPage},
		{Pattern: "POST /mfa/enrol", StateChanging: true, PasswordFields: []string{"password"}, SignedIn: true, handler: a.mfaEnrol},
		{Pattern: "POST /mfa/confirm", StateChanging: true, SignedIn: true, handler: a.mfaConfirm},
		{Pattern: "GET /security", SignedIn: true, handler: a.securityPage},
		{Pattern: "POST /security/password", StateChanging: true, PasswordFields: []string{"password", "new_password", "confirm"}, SignedIn: true, handler: a.changePassword},
		{Pattern: "POST /security/mfa/disable", StateChanging: true, PasswordFields: []string{"password"}, SignedIn: true, handler: a.disableMFA},
		{Pattern: "POST /security/recovery-codes", StateChanging: true, PasswordFields: []string{"password"}, SignedIn: true, handler: a.regenerateRecovery},
		{Pattern: "POST /security/sessions/revoke", StateChanging: true, SignedIn: true, handler: a.revokeSession},
		{Pattern: "POST /signout", StateChanging: true, handler: a.signOut},
	}
}

// Endpoint is one pattern the app serves, with what the edge in front of
// it must admit: the largest body, its media types, the fields that hold
// passwords, and whether it is the CSP report endpoint.
type Endpoint struct {
	Pattern        string
	BodyLimit      int
	MediaTypes     []string
	PasswordFields []string
	Report         bool
}

// Endpoints lists every pattern the app serves, for the gateway's route
// table.
func (a *App) Endpoints() []Endpoint {
	var out []Endpoint
	for _, rt := range a.Routes() {
		e := Endpoint{Pattern: rt.Pattern, PasswordFields: rt.PasswordFields}
		if rt.StateChanging {
			e.BodyLimit, e.MediaTypes = maxFormBytes, []string{"application/x-www-form-urlencoded"}
		}
		out = append(out, e)
	}
	return append(out,
		Endpoint{Pattern: "GET /static/"},
		Endpoint{Pattern: "GET /favicon.ico"},
		Endpoint{Pattern: "POST " + ReportPath, BodyLimit: reportMaxBytes, MediaTypes: []string{"application/csp-report", "application/reports+json"}, Report: true},
	)
}

// reportMaxBytes caps one CSP report request.
const reportMaxBytes = 16 << 10

func (a *App) routes() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range a.Routes() {
		h := http.Handler(rt.handler)
		if rt.SignedIn {
			h = a.requireSignedIn(h)
		}
		if rt.StateChanging {
			h = a.csrf(h)
		}
		mux.Handle(rt.Pattern, h)
	}
	mux.Handle("GET /static/", http.StripPrefix("/static/", a.static))
	mux.Handle("POST "+ReportPath, a.reports)
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/static/icon.svg", http.StatusMovedPermanently)
	})
	return route.RecordPattern(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if IsAPIPath(r.URL.Path) {
			problem.Write(w, r, problem.Problem{Status: http.StatusNotFound, Type: "not-found", Title: "Not found"})
			return
		}
		_, pattern := mux.Handler(r)
		if pattern == "" {
			a.notFound(w, r)
			return
		}
		mux.ServeHTTP(w, a.withSession(r))
	}))
}

// staticHandler serves the embedded assets with a short cache lifetime;
// they are versioned with the binary.
func staticHandler(sub fs.FS) http.Handler {
	fsrv := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=300")
		fsrv.ServeHTTP(w, r)
	})
}

// NewRedisStore returns the shared store on c, keys under prefix.
func NewRedisStore(c redis.UniversalClient, prefix string) (Store, error) {
	return sessionstore.NewRedis(c, prefix)
}
