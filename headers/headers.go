package headers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/malai-sec/malai/clientip"
	"github.com/malai-sec/malai/internal/respwriter"
	"github.com/malai-sec/malai/problem"
	"github.com/unrolled/secure"
)

// Header names the middleware owns, in canonical form.
const (
	HeaderHSTS                = "Strict-Transport-Security"
	HeaderCSP                 = "Content-Security-Policy"
	HeaderCSPReportOnly       = "Content-Security-Policy-Report-Only"
	HeaderFrameOptions        = "X-Frame-Options"
	HeaderContentTypeOptions  = "X-Content-Type-Options"
	HeaderReferrerPolicy      = "Referrer-Policy"
	HeaderCrossOriginOpener   = "Cross-Origin-Opener-Policy"
	HeaderCrossOriginResource = "Cross-Origin-Resource-Policy"
	HeaderPermissionsPolicy   = "Permissions-Policy"
	HeaderCacheControl        = "Cache-Control"
	HeaderXSSProtection       = "X-Xss-Protection" // canonical form of X-XSS-Protection
	HeaderAltSvc              = "Alt-Svc"
	HeaderReportingEndpoints  = "Reporting-Endpoints"
)

const (
	headerForwardedProto        = "X-Forwarded-Proto"
	defaultHSTSMaxAge           = 365 * 24 * time.Hour
	hstsPreloadMinimum          = 365 * 24 * time.Hour
	nonceBytes                  = 16
	defaultReferrerPolicy       = "no-referrer"
	defaultCrossOriginPolicy    = "same-origin"
	defaultCacheControl         = "no-store"
	xssProtectionOff            = "0" // OWASP: turn the legacy XSS auditor off, never "1"
	frameDeny                   = "DENY"
	nosniff                     = "nosniff"
	maxConfiguredHeaderValueLen = 8 << 10
)

// APIPolicy is the policy a zero [App] gets: nothing may load, nothing may
// frame the response, no form may submit and no <base> may be set. It is
// right for JSON APIs and scores the Observatory's maximum CSP bonus.
const APIPolicy = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// DenyAllPermissionsPolicy turns off every powerful feature for the page
// and every frame it embeds.
const DenyAllPermissionsPolicy = "accelerometer=(), autoplay=(), camera=(), display-capture=(), " +
	"encrypted-media=(), fullscreen=(), geolocation=(), gyroscope=(), hid=(), idle-detection=(), " +
	"magnetometer=(), microphone=(), midi=(), payment=(), picture-in-picture=(), " +
	"publickey-credentials-get=(), screen-wake-lock=(), serial=(), sync-xhr=(), usb=(), " +
	"xr-spatial-tracking=()"

// defaultStripped are removed from every response: they only tell an
// attacker which software and version answered.
var defaultStripped = []string{
	"Server", "X-Powered-By", "X-Aspnet-Version", "X-Aspnetmvc-Version", "X-Runtime",
	"X-Generator", "X-Version", "X-Backend-Server", "X-Served-By",
}

// Errors returned by [New] and passed to [Config.ErrorHandler].
var (
	// ErrInvalidConfig wraps every configuration error from New.
	ErrInvalidConfig = errors.New("headers: invalid configuration")
	// ErrUnknownApp: Config.Select named an app that Config.Apps lacks.
	// The request is answered with 500: a routing mistake must not
	// silently fall back to a weaker policy.
	ErrUnknownApp = errors.New("headers: request selected an unknown app")
	// ErrNonce: the nonce source failed; the request is refused rather
	// than served with a predictable nonce.
	ErrNonce = errors.New("headers: cannot generate CSP nonce")
)

// App is the header policy of one application behind the middleware (an
// API, a web UI). The zero App is the strict API profile: [APIPolicy],
// Referrer-Policy no-referrer, COOP and CORP same-origin, the deny-all
// [DenyAllPermissionsPolicy] and Cache-Control no-store.
type App struct {
	// CSP is the Content-Security-Policy. Empty means [APIPolicy]. It is
	// parsed and validated by New (see [Policy.Validate]); when it lacks
	// frame-ancestors, frame-ancestors 'none' is appended. [NoncePlaceholder]
	// ($NONCE) in it becomes a fresh 'nonce-…' per request, readable with
	// [NonceFromContext].
	CSP string
	// CSPReportOnly sends CSP as Content-Security-Policy-Report-Only
	// instead of enforcing it: a named loosening for rolling out a new
	// policy. X-Frame-Options: DENY still protects against framing.
	CSPReportOnly bool
	// ReferrerPolicy defaults to no-referrer. Only policies that never
	// leak a path cross-origin are accepted: no-referrer, same-origin,
	// strict-origin, strict-origin-when-cross-origin.
	ReferrerPolicy string
	// CrossOriginOpenerPolicy defaults to same-origin; same-origin-allow-popups
	// and noopener-allow-popups are accepted.
	CrossOriginOpenerPolicy string
	// CrossOriginResourcePolicy defaults to same-origin; same-site and
	// cross-origin (for assets meant to be embedded elsewhere) are accepted.
	CrossOriginResourcePolicy string
	// PermissionsPolicy defaults to [DenyAllPermissionsPolicy].
	PermissionsPolicy string
	// CacheControl is forced on every response; empty means no-store.
	CacheControl string
	// ReportingEndpoints is sent as the Reporting-Endpoints header, naming
	// the endpoints a report-to directive refers to, for example
	// `csp="https://malai.example/csp-report"`. Required when CSP uses
	// report-to. Empty means none is sent (a handler's own is removed: it
	// could redirect reports elsewhere).
	ReportingEndpoints string
	// KeepHandlerCacheControl keeps a Cache-Control the handler set (for
	// static assets), using CacheControl only when the handler set none.
	// Responses that carry a nonce are always no-store: a cached page
	// would replay its nonce.
	KeepHandlerCacheControl bool
}

// Config configures [New]. The zero Config is the strict default: one app
// with the strict API profile (see [App]), HSTS for one year with
// includeSubDomains and preload on HTTPS requests, fingerprinting headers
// removed, no Alt-Svc.
type Config struct {
	// Default is the app for requests that Select does not assign (Select
	// is nil or returns "").
	Default App
	// Apps are further apps by name; Select picks one per request.
	Apps map[string]App
	// Select names the app for a request, before the handler runs (so
	// route by path, host or method, not r.Pattern). "" means Default; a
	// name missing from Apps is [ErrUnknownApp]. Required when Apps is set.
	// See [ByPathPrefix].
	Select func(r *http.Request) string

	// HSTSMaxAge is the Strict-Transport-Security max-age; 0 means one
	// year. With preload (the default) it must be at least one year.
	HSTSMaxAge time.Duration
	// HSTSNoPreload drops the preload token (a named loosening).
	HSTSNoPreload bool
	// HSTSNoSubdomains drops includeSubDomains; it requires HSTSNoPreload,
	// because the preload list demands includeSubDomains.
	HSTSNoSubdomains bool
	// ClientIP is the trusted-proxy resolver shared with ratelimit and
	// correlation: a request whose TCP peer it trusts
	// ([clientip.Resolver.Trusted]) and that carries exactly one
	// X-Forwarded-Proto: https counts as HTTPS, so HSTS is sent behind a
	// TLS-ending proxy. Others' X-Forwarded-Proto is ignored. Nil: only
	// requests that arrived over TLS are HTTPS.
	ClientIP *clientip.Resolver
	// TrustedProxies are peers whose X-Forwarded-Proto is believed, as
	// with ClientIP. It is ignored when ClientIP is set.
	//
	// Deprecated: set ClientIP, so the proxies are configured once.
	TrustedProxies []netip.Prefix

	// StripHeaders are removed from every response in addition to Server,
	// X-Powered-By and the other version-revealing headers.
	StripHeaders []string

	// AltSvc, if set, is called on every HTTPS response to advertise
	// HTTP/3; pass the quic-go server's SetQUICHeaders method. A handler's
	// own Alt-Svc is removed first. An error (the HTTP/3 server has no
	// port yet) leaves Alt-Svc unset.
	AltSvc func(http.Header) error

	// Rand is the nonce source; nil means crypto/rand.
	Rand io.Reader

	// ErrorHandler answers requests the middleware refuses ([ErrUnknownApp],
	// [ErrNonce]). Default [DefaultErrorHandler]. Its response carries the
	// strict API profile's headers.
	ErrorHandler func(http.ResponseWriter, *http.Request, error)
}

// compiledApp is an App with every header value computed once.
type compiledApp struct {
	cspHeader   string   // Content-Security-Policy or the -Report-Only name
	cspParts    []string // policy split around the nonce placeholder
	nonce       bool
	referrer    string
	coop        string
	corp        string
	permissions string
	endpoints   string
	cache       string
	keepCache   bool
}

// Middleware stamps the security headers on every response. It is built
// by [New], immutable afterwards and safe for concurrent use.
type Middleware struct {
	def       *compiledApp
	fallback  *compiledApp // the strict API profile, for refused requests
	apps      map[string]*compiledApp
	sel       func(*http.Request) string
	hsts      string
	proxies   *clientip.Resolver
	strip     []string
	managed   map[string]bool // canonical names we set or strip
	altSvc    func(http.Header) error
	rand      io.Reader
	errorFunc func(http.ResponseWriter, *http.Request, error)
}

// New validates cfg and returns the middleware. Every error wraps
// [ErrInvalidConfig] (and [ErrCSPSyntax] or [ErrCSPUnsafe] for a bad
// policy) and names the app and field at fault.
func New(cfg Config) (*Middleware, error) {
	m := &Middleware{
		sel:       cfg.Select,
		altSvc:    cfg.AltSvc,
		rand:      cfg.Rand,
		errorFunc: cfg.ErrorHandler,
	}
	if m.errorFunc == nil {
		m.errorFunc = DefaultErrorHandler
	}
	var err error
	if m.fallback, err = compileApp(App{}); err != nil {
		return nil, fmt.Errorf("%w: built-in API profile: %w", ErrInvalidConfig, err)
	}
	if m.def, err = compileApp(cfg.Default); err != nil {
		return nil, fmt.Errorf("%w: Default: %w", ErrInvalidConfig, err)
	}
	if len(cfg.Apps) > 0 && cfg.Select == nil {
		return nil, fmt.Errorf("%w: Apps is set but Select is nil, so no request could reach them", ErrInvalidConfig)
	}
	m.apps = make(map[string]*compiledApp, len(cfg.Apps))
	for name, a := range cfg.Apps {
		if name == "" {
			return nil, fmt.Errorf("%w: Apps has an empty name (\"\" is the Default app)", ErrInvalidConfig)
		}
		c, err := compileApp(a)
		if err != nil {
			return nil, fmt.Errorf("%w: Apps[%q]: %w", ErrInvalidConfig, name, err)
		}
		m.apps[name] = c
	}

	maxAge := cfg.HSTSMaxAge
	if maxAge == 0 {
		maxAge = defaultHSTSMaxAge
	}
	switch {
	case maxAge < time.Second:
		return nil, fmt.Errorf("%w: HSTSMaxAge below one second (max-age=0 would remove HSTS from browsers)", ErrInvalidConfig)
	case !cfg.HSTSNoPreload && maxAge < hstsPreloadMinimum:
		return nil, fmt.Errorf("%w: HSTS preload needs HSTSMaxAge of at least one year (or set HSTSNoPreload)", ErrInvalidConfig)
	case cfg.HSTSNoSubdomains && !cfg.HSTSNoPreload:
		return nil, fmt.Errorf("%w: HSTS preload needs includeSubDomains (set HSTSNoPreload too)", ErrInvalidConfig)
	}
	m.hsts = "max-age=" + strconv.FormatInt(int64(maxAge/time.Second), 10)
	if !cfg.HSTSNoSubdomains {
		m.hsts += "; includeSubDomains"
	}
	if !cfg.HSTSNoPreload {
		m.hsts += "; preload"
	}

	m.proxies = cfg.ClientIP
	if m.proxies == nil && len(cfg.TrustedProxies) > 0 {
		if m.proxies, err = clientip.New(clientip.Config{TrustedProxies: cfg.TrustedProxies}); err != nil {
			return nil, fmt.Errorf("%w: TrustedProxies: %w", ErrInvalidConfig, err)
		}
	}

	m.managed = make(map[string]bool)
	for _, h := range []string{HeaderHSTS, HeaderCSP, HeaderFrameOptions, HeaderContentTypeOptions,
		HeaderReferrerPolicy, HeaderCrossOriginOpener, HeaderCrossOriginResource, HeaderPermissionsPolicy,
		HeaderCacheControl, HeaderXSSProtection, HeaderReportingEndpoints} {
		m.managed[h] = true
	}
	m.strip = append(m.strip, defaultStripped...)
	for _, h := range cfg.StripHeaders {
		if !validToken(h) {
			return nil, fmt.Errorf("%w: StripHeaders: %q is not a header name", ErrInvalidConfig, truncate(h))
		}
		c := http.CanonicalHeaderKey(h)
		if m.managed[c] {
			return nil, fmt.Errorf("%w: StripHeaders: %s is a header the middleware sets", ErrInvalidConfig, c)
		}
		m.strip = append(m.strip, c)
	}
	if m.altSvc != nil {
		m.strip = append(m.strip, HeaderAltSvc)
	}
	for _, h := range m.strip {
		m.managed[h] = true
	}
	// HSTS and the report-only CSP are stamped or removed per request but
	// a handler's own copies are always replaced.
	m.managed[HeaderCSPReportOnly] = true
	return m, nil
}

func compileApp(a App) (*compiledApp, error) {
	src := a.CSP
	if src == "" {
		src = APIPolicy
	}
	p, err := ParseCSP(src)
	if err != nil {
		return nil, fmt.Errorf("CSP: %w", err)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("CSP: %w", err)
	}
	p = p.withFrameAncestors()
	c := &compiledApp{
		cspHeader: HeaderCSP,
		nonce:     p.usesNonce(),
		keepCache: a.KeepHandlerCacheControl,
	}
	if a.CSPReportOnly {
		c.cspHeader = HeaderCSPReportOnly
	}
	c.cspParts = strings.Split(p.String(), NoncePlaceholder)

	pick := func(field, v, def string, allowed ...string) (string, error) {
		if v == "" {
			return def, nil
		}
		v = strings.ToLower(strings.TrimSpace(v))
		for _, ok := range allowed {
			if v == ok {
				return v, nil
			}
		}
		return "", fmt.Errorf("%s %q is not one of %s", field, truncate(v), strings.Join(allowed, ", "))
	}
	if c.referrer, err = pick("ReferrerPolicy", a.ReferrerPolicy, defaultReferrerPolicy,
		"no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"); err != nil {
		return nil, err
	}
	if c.coop, err = pick("CrossOriginOpenerPolicy", a.CrossOriginOpenerPolicy, defaultCrossOriginPolicy,
		"same-origin", "same-origin-allow-popups", "noopener-allow-popups"); err != nil {
		return nil, err
	}
	if c.corp, err = pick("CrossOriginResourcePolicy", a.CrossOriginResourcePolicy, defaultCrossOriginPolicy,
		"same-origin", "same-site", "cross-origin"); err != nil {
		return nil, err
	}
	c.permissions = a.PermissionsPolicy
	if c.permissions == "" {
		c.permissions = DenyAllPermissionsPolicy
	}
	if !validValue(c.permissions) {
		return nil, fmt.Errorf("PermissionsPolicy is not a valid header value")
	}
	if to, ok := p.Get("report-to"); ok && a.ReportingEndpoints == "" {
		return nil, fmt.Errorf("CSP reports to %q but ReportingEndpoints is empty", strings.Join(to, " "))
	}
	if a.ReportingEndpoints != "" && !validValue(a.ReportingEndpoints) {
		return nil, fmt.Errorf("ReportingEndpoints is not a valid header value")
	}
	c.endpoints = a.ReportingEndpoints
	c.cache = a.CacheControl
	if c.cache == "" {
		c.cache = defaultCacheControl
	}
	if !validValue(c.cache) {
		return nil, fmt.Errorf("CacheControl is not a valid header value")
	}
	return c, nil
}

// withNonce is the policy with every placeholder replaced by
// 'nonce-<n>', built in one allocation.
func (c *compiledApp) withNonce(n string) string {
	const pre, post = "'nonce-", "'"
	size := (len(c.cspParts) - 1) * (len(pre) + len(n) + len(post))
	for _, p := range c.cspParts {
		size += len(p)
	}
	var b strings.Builder
	b.Grow(size)
	for i, p := range c.cspParts {
		if i > 0 {
			b.WriteString(pre)
			b.WriteString(n)
			b.WriteString(post)
		}
		b.WriteString(p)
	}
	return b.String()
}

// validToken reports whether s is an RFC 9110 token (a header name).
func validToken(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

// validValue reports whether s can be sent as a header value.
func validValue(s string) bool {
	if len(s) > maxConfiguredHeaderValueLen || strings.TrimSpace(s) == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// ByPathPrefix returns a Select function that maps URL path prefixes to
// app names, longest prefix first. Paths that match no prefix get "" (the
// Default app). Matching is on r.URL.Path as received; a prefix ending in
// "/" matches only below it.
func ByPathPrefix(prefixes map[string]string) func(*http.Request) string {
	type entry struct{ prefix, app string }
	entries := make([]entry, 0, len(prefixes))
	for p, a := range prefixes {
		entries = append(entries, entry{p, a})
	}
	// Longest first; ties cannot happen (map keys are unique).
	for i := 1; i < len(entries); i++ {
		for j := i; j > 0 && len(entries[j].prefix) > len(entries[j-1].prefix); j-- {
			entries[j], entries[j-1] = entries[j-1], entries[j]
		}
	}
	return func(r *http.Request) string {
		for _, e := range entries {
			if strings.HasPrefix(r.URL.Path, e.prefix) {
				return e.app
			}
		}
		return ""
	}
}

// NonceFromContext returns the CSP nonce of the request (its base64 value,
// without the 'nonce-' wrapper), for <script nonce="…">. It is present
// only when the request's app uses [NoncePlaceholder]. The value is stored
// under unrolled/secure's context key, so secure.CSPNonce(ctx) returns it
// too.
func NonceFromContext(ctx context.Context) (string, bool) {
	n := secure.CSPNonce(ctx)
	return n, n != ""
}

// DefaultErrorHandler is the ErrorHandler of a zero Config: a generic 500
// problem+json with the correlation id, never the error's text.
func DefaultErrorHandler(w http.ResponseWriter, r *http.Request, _ error) {
	problem.Write(w, r, problem.Internal)
}

// Handler wraps next. Every response it produces — whatever next does to
// the header map, and also when next writes nothing, streams, upgrades or
// panics — carries the configured headers with the configured values.
func (m *Middleware) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := &stamper{m: m, app: m.def, secure: m.isHTTPS(r)}
		s.ResetHook(w, s)
		var failure error
		if m.sel != nil {
			if name := m.sel(r); name != "" {
				if app, ok := m.apps[name]; ok {
					s.app = app
				} else {
					failure = ErrUnknownApp
				}
			}
		}
		if failure == nil && s.app.nonce {
			b := s.nonceBuf[:]
			if m.rand == nil {
				_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+).
			} else if _, err := io.ReadFull(m.rand, b); err != nil {
				failure = fmt.Errorf("%w: %w", ErrNonce, err)
			}
			if failure == nil {
				s.nonce = base64.StdEncoding.EncodeToString(b)
				r = r.WithContext(secure.WithCSPNonce(r.Context(), s.nonce))
			}
		}
		defer func() {
			if !s.WroteHeader() && !s.Hijacked() {
				// Nothing was written (net/http will send 200 with this
				// map), or next panicked: stamp the map so whatever is
				// sent next carries the headers.
				s.apply(w.Header())
			}
		}()
		if failure != nil {
			s.app = m.fallback
			s.nonce = ""
			m.errorFunc(s, r, failure)
			return
		}
		next.ServeHTTP(s, r)
	})
}

// isHTTPS reports whether the client reached us over TLS, directly or
// through a trusted TLS-ending proxy.
func (m *Middleware) isHTTPS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	if m.proxies == nil {
		return false
	}
	vals := r.Header.Values(headerForwardedProto)
	if len(vals) != 1 || !strings.EqualFold(strings.TrimSpace(vals[0]), "https") {
		return false
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	return m.proxies.Trusted(ap.Addr())
}

// stamper holds one request's state and is the ResponseWriter the handler
// sees: the embedded respwriter.Writer calls before just ahead of the
// header, and Hijack (hijack.go) guards a raw response.
type stamper struct {
	m      *Middleware
	app    *compiledApp
	secure bool
	nonce  string
	done   bool

	nonceBuf [nonceBytes]byte
	// vals backs the values apply sets: one array per response, inside
	// the request's one allocation, so values are never shared between
	// requests.
	vals [maxStamped]string
	respwriter.Writer
}

// maxStamped is the most header values apply sets.
const maxStamped = 11

// BeforeHeader implements respwriter.Hook.
func (s *stamper) BeforeHeader(h http.Header, _ int) { s.apply(h) }

// apply writes the mandatory set into h, replacing whatever the handler
// put there under any spelling of the name.
func (s *stamper) apply(h http.Header) {
	if s.done {
		return
	}
	s.done = true
	m, app := s.m, s.app
	// Remove managed and fingerprinting headers, including non-canonical
	// spellings written straight into the map ("x-frame-options"), which
	// net/http would send as a second, conflicting field.
	for k := range h {
		if m.managed[k] || (!isCanonicalASCII(k) && m.managed[http.CanonicalHeaderKey(k)]) {
			if k == HeaderCacheControl && app.keepCache && s.nonce == "" && len(h[k]) > 0 {
				continue
			}
			delete(h, k)
		}
	}
	// One backing array per response (s.vals): values are never shared
	// between requests, so a handler that mutates h[k][0] after the
	// header was sent cannot corrupt the next response.
	n := 0
	set := func(k, v string) {
		s.vals[n] = v
		h[k] = s.vals[n : n+1 : n+1]
		n++
	}
	if s.secure {
		set(HeaderHSTS, m.hsts)
	}
	if s.nonce == "" {
		set(app.cspHeader, app.cspParts[0])
	} else {
		set(app.cspHeader, app.withNonce(s.nonce))
	}
	set(HeaderFrameOptions, frameDeny)
	set(HeaderContentTypeOptions, nosniff)
	set(HeaderReferrerPolicy, app.referrer)
	set(HeaderCrossOriginOpener, app.coop)
	set(HeaderCrossOriginResource, app.corp)
	set(HeaderPermissionsPolicy, app.permissions)
	set(HeaderXSSProtection, xssProtectionOff)
	if app.endpoints != "" {
		set(HeaderReportingEndpoints, app.endpoints)
	}
	if _, kept := h[HeaderCacheControl]; !kept {
		if s.nonce != "" {
			set(HeaderCacheControl, defaultCacheControl)
		} else {
			set(HeaderCacheControl, app.cache)
		}
	}
	if s.secure && m.altSvc != nil {
		_ = m.altSvc(h)
	}
}

// isCanonicalASCII reports whether k is already in canonical MIME form, so
// the common case skips CanonicalHeaderKey's allocation.
func isCanonicalASCII(k string) bool {
	upper := true
	for i := 0; i < len(k); i++ {
		c := k[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return false
		}
		upper = c == '-'
	}
	return true
}
