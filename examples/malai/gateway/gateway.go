// Package gateway is the reference system's edge: TLS 1.2+ with HTTP/2 and
// HTTP/3, forced security headers, correlation, the WAF (Coraza with the
// OWASP CRS), IP reputation and per-IP limits, the first JWT check, and a
// per-principal limit, in front of the identity and ledger services.
//
// The gateway imports no domain package: the routes it mounts are the
// public rows of the components' route tables, handed to it as data
// ([RoutesFrom]: pattern, token class, scope, body limit, media types). A
// route no table marks public is not routed at all: only components reach
// it, on their internal listeners, with their certificates.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malai-sec/malai/clientip"
	"github.com/malai-sec/malai/examples/malai/gateway/internal/waf"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/problem"
	"github.com/malai-sec/malai/ratelimit"
	"github.com/malai-sec/malai/route"
)

// Route is one public route the gateway forwards.
type Route struct {
	// Pattern is the ServeMux pattern ("POST /v1/sessions").
	Pattern string
	// Upstream names the component the route is forwarded to (a key of
	// Config.Upstreams).
	Upstream string
	// Token is the bearer token the route requires: a user token is
	// verified here (JWT check #1, with Scope) and counted against the
	// per-principal limit before the service verifies it again.
	Token platform.Token
	Scope string
	// BodyLimit is the largest body the service behind accepts; a larger
	// one is refused (413) before the WAF reads it. 0: no body.
	BodyLimit int
	// MediaTypes the service accepts for a body; another is refused (415,
	// the service's own answer) before the WAF.
	MediaTypes []string
	// Web routes are served by Config.Web (the customer web app) in this
	// process, behind the same limits, shape caps and WAF.
	Web bool
	// PasswordFields are a web form's password fields: the WAF gives them
	// the exclusions the identity routes' password members have.
	PasswordFields []string
	// Report marks a CSP report endpoint: the WAF admits the browsers'
	// report media types there (and inspects them as JSON).
	Report bool
}

// RoutesFrom turns the public rows of the components' route tables (by
// component name) into the gateway's routes. The web component's rows are
// served in this process by Config.Web. A public route that takes a
// service token is refused: service routes are internal only.
func RoutesFrom(tables map[string]platform.Table) ([]Route, error) {
	var out []Route
	for _, component := range slices.Sorted(maps.Keys(tables)) {
		for _, rt := range tables[component] {
			if !rt.Public {
				continue
			}
			if rt.Token == platform.ServiceToken {
				return nil, fmt.Errorf("gateway: %s route %q takes a service token and cannot be public", component, rt.Pattern)
			}
			out = append(out, Route{Pattern: rt.Pattern, Upstream: component, Token: rt.Token, Scope: rt.Scope,
				BodyLimit: int(rt.MaxBody), MediaTypes: rt.MediaTypes, Web: component == platform.Web,
				PasswordFields: rt.PasswordFields, Report: rt.Report})
		}
	}
	return out, nil
}

// Shape bounds what one request may make the WAF inspect. A request over
// any of them is refused before the WAF runs: the WAF's cost grows with
// each header, cookie and argument.
type Shape struct {
	MaxHeaders     int // header fields (431); default 64
	MaxHeaderBytes int // names and values together (431); default 16 KiB
	MaxCookies     int // cookie pairs (431); default 32
	MaxQueryArgs   int // query parameters (400); default 64
	MaxURL         int // request target length (414); default 2048
}

func (s Shape) withDefaults() Shape {
	if s.MaxHeaders == 0 {
		s.MaxHeaders = 64
	}
	if s.MaxHeaderBytes == 0 {
		s.MaxHeaderBytes = 16 << 10
	}
	if s.MaxCookies == 0 {
		s.MaxCookies = 32
	}
	if s.MaxQueryArgs == 0 {
		s.MaxQueryArgs = 64
	}
	if s.MaxURL == 0 {
		s.MaxURL = 2048
	}
	return s
}

// BlockedCost is what a request the WAF refused costs its client's
// per-IP budget by default, against 1 for a passing one: a client
// sending attacks is limited after a tenth of the requests an honest one
// may send.
const BlockedCost = 10

// Config configures the gateway.
type Config struct {
	// Upstreams are the internal base URLs of the components the routes
	// name.
	Upstreams map[string]*url.URL
	// Transport reaches the services (TLS with the system's CA, the
	// gateway's client certificate, correlation.Transport).
	Transport http.RoundTripper
	// Verifier is the gateway's own JWT verifier (the first layer).
	Verifier *jwtverify.Verifier
	// Limits: reputation, per-IP and per-principal.
	RateStore  ratelimit.Store
	Reputation *ratelimit.Reputation
	// PerIP and PerPrincipal are requests per minute. Defaults 600 and 300.
	PerIP, PerPrincipal int
	// BlockedCost is the per-IP cost of a WAF-refused request. Default
	// [BlockedCost]; at most PerIP.
	BlockedCost int
	// ClientIP is the trusted-proxy resolver shared with identity.
	ClientIP func(*http.Request) (netip.Addr, error)
	// AllowedHosts are the host names and addresses the gateway answers
	// for (Host header, port ignored); others get 421. Default: the
	// loopback names localhost, 127.0.0.1 and ::1.
	AllowedHosts []string
	// Routes are the public routes ([RoutesFrom] the route tables).
	// Required.
	Routes []Route
	// Shape bounds each request before the WAF; zero fields take defaults.
	Shape Shape
	// WAF tunes the WAF (concurrency, timeouts); its rule set is always
	// [waf.GatewayConfig]'s, its body timeout Deadlines.Body.
	WAF waf.Config
	// Deadlines bound slow clients on every protocol ([ServeTLS],
	// [ServeHTTP3] take the same value).
	Deadlines Deadlines
	Logger    *slog.Logger
	// Faults turn protections off, for tests and the evidence pass that
	// prove each check can fail. New refuses them outside tests.
	Faults Faults
	// Web serves the Web routes (the customer web app). Required when a
	// route is Web.
	Web http.Handler
}

// Faults are protection switches for proofs that a check can fail.
type Faults struct {
	LimitAfterWAF bool // the reputation list and per-IP limit run after the WAF
	NoShapeLimits bool // no header/cookie/argument/URL/body caps before the WAF
	NoWAFCap      bool // the WAF's concurrency cap, inspection-time budget and refusal delay are lifted (no 503, no 429 from them)
	NoTokenCheck  bool // JWT check #1 off: any bearer token is forwarded unverified
	// WAFRules are SecLang directives appended after the CRS (a rule
	// family removed, a false positive added).
	WAFRules string
}

// Gateway is the edge handler.
type Gateway struct {
	h       http.Handler
	limiter *ratelimit.Limiter
	perUser *ratelimit.Limiter
	waf     *waf.WAF
	hosts   map[string]bool
	routes  map[string]Route
	shape   Shape
	cost    int
	log     *slog.Logger
}

// New builds the gateway's handler chain (without headers and correlation,
// which the caller puts outermost). In order: the reputation list and the
// per-IP limit, the Host allow-list, the route (404/405 here), the request
// shape, the WAF under its concurrency cap, JWT check #1 and the
// per-principal limit, the service.
func New(cfg Config) (*Gateway, error) {
	if len(cfg.Routes) == 0 || cfg.Transport == nil || cfg.Verifier == nil {
		return nil, errors.New("gateway: Routes, Upstreams, Transport and Verifier are required")
	}
	if cfg.Faults != (Faults{}) && !testing.Testing() {
		return nil, errors.New("gateway: Faults are for tests only")
	}
	if cfg.PerIP == 0 {
		cfg.PerIP = 600
	}
	if cfg.PerPrincipal == 0 {
		cfg.PerPrincipal = 300
	}
	if cfg.BlockedCost == 0 {
		cfg.BlockedCost = min(BlockedCost, cfg.PerIP)
	}
	if cfg.BlockedCost < 1 || cfg.BlockedCost > cfg.PerIP {
		return nil, fmt.Errorf("gateway: BlockedCost %d outside 1..PerIP", cfg.BlockedCost)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if len(cfg.AllowedHosts) == 0 {
		cfg.AllowedHosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	g := &Gateway{hosts: map[string]bool{}, routes: map[string]Route{}, shape: cfg.Shape.withDefaults(),
		cost: cfg.BlockedCost, log: cfg.Logger}
	for _, h := range cfg.AllowedHosts {
		g.hosts[normaliseHost(h)] = true
	}
	wcfg := cfg.WAF
	gc := waf.GatewayConfig()
	wcfg.Exclusions, wcfg.OpaqueCookies, wcfg.OpaqueBearer, wcfg.Profiles = gc.Exclusions, gc.OpaqueCookies, gc.OpaqueBearer, gc.Profiles
	for _, rt := range cfg.Routes {
		method, path, _ := strings.Cut(rt.Pattern, " ")
		if len(rt.PasswordFields) > 0 {
			wcfg.Exclusions = append(wcfg.Exclusions, waf.FormCredentialExclusion(method, path, rt.PasswordFields))
		}
		if rt.Report {
			wcfg.ReportPaths = append(wcfg.ReportPaths, path)
		}
		if rt.Web && cfg.Web == nil {
			return nil, fmt.Errorf("gateway: route %q is a web route but Config.Web is nil", rt.Pattern)
		}
	}
	wcfg.Logger = cfg.Logger
	wcfg.BodyTimeout = cfg.Deadlines.withDefaults().Body
	wcfg.OnBlock = g.penalize
	wcfg.AfterCRS = cfg.Faults.WAFRules
	if cfg.Faults.NoShapeLimits {
		wcfg.MaxBodyArgs = 1 << 30
	}
	if cfg.Faults.NoWAFCap {
		wcfg.MaxConcurrent, wcfg.PerClient, wcfg.MaxWaiting, wcfg.PerClientWaiting = 1<<20, 1<<20, 1<<20, 1<<20
		wcfg.MaxWait, wcfg.LightMaxWait = time.Hour, time.Hour
		wcfg.InspectionRate, wcfg.RefusalDelay = -1, -1
	}
	var err error
	if g.waf, err = waf.New(wcfg); err != nil {
		return nil, err
	}
	g.limiter, err = ratelimit.New(ratelimit.Config{
		Store:      cfg.RateStore,
		Reputation: cfg.Reputation,
		Resolver:   cfg.ClientIP,
		Policies:   []ratelimit.Policy{{Name: "per-ip", Limit: cfg.PerIP, Period: time.Minute}},
	})
	if err != nil {
		return nil, err
	}
	g.perUser, err = ratelimit.New(ratelimit.Config{
		Store:    cfg.RateStore,
		Resolver: cfg.ClientIP,
		Policies: []ratelimit.Policy{{Name: "per-principal", Limit: cfg.PerPrincipal, Period: time.Minute,
			Key: func(r *http.Request, _ netip.Addr) (string, bool) {
				c, ok := jwtverify.FromContext(r.Context())
				if !ok {
					return "", false
				}
				return c.Subject(), c.Subject() != ""
			}}},
	})
	if err != nil {
		return nil, err
	}
	upstreams := map[string]http.Handler{}
	mux := http.NewServeMux()
	for _, rt := range cfg.Routes {
		if _, dup := g.routes[rt.Pattern]; dup {
			return nil, fmt.Errorf("gateway: route %q twice", rt.Pattern)
		}
		g.routes[rt.Pattern] = rt
		if rt.Web {
			mux.Handle(rt.Pattern, cfg.Web)
			continue
		}
		up := upstreams[rt.Upstream]
		if up == nil {
			target := cfg.Upstreams[rt.Upstream]
			if target == nil {
				return nil, fmt.Errorf("gateway: route %q: no URL for upstream %q", rt.Pattern, rt.Upstream)
			}
			up = proxy(target, cfg.Transport, cfg.ClientIP, cfg.Logger)
			upstreams[rt.Upstream] = up
		}
		switch rt.Token {
		case platform.NoToken:
			mux.Handle(rt.Pattern, up)
		case platform.UserToken:
			// JWT check #1: a verified user token here, and the
			// service verifies it again.
			if cfg.Faults.NoTokenCheck {
				mux.Handle(rt.Pattern, g.perUser.Handler(up))
				continue
			}
			mux.Handle(rt.Pattern, cfg.Verifier.Handler(cfg.Verifier.RequireUser(scopes(rt.Scope)...)(g.perUser.Handler(up))))
		default:
			return nil, fmt.Errorf("gateway: route %q takes a %s token and cannot be public", rt.Pattern, rt.Token)
		}
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	g.routes["GET /healthz"] = Route{Pattern: "GET /healthz"}
	inspected := g.waf.Handler(route.RecordPattern(mux))
	gate := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.hostAllowed(r.Host) {
			problem.Write(w, r, problem.Problem{Status: http.StatusMisdirectedRequest, Type: "host-not-allowed",
				Title: "Host not allowed", Detail: "This server does not answer for the requested host."})
			return
		}
		_, pattern := mux.Handler(r)
		rt, ok := g.routes[pattern]
		if !ok {
			platform.NoRoute(w, r, mux)
			return
		}
		if !cfg.Faults.NoShapeLimits {
			if p, bad := g.checkShape(r, rt); bad {
				problem.Write(w, r, p)
				return
			}
			r = r.WithContext(waf.WithBodyLimit(r.Context(), rt.BodyLimit))
		}
		if rt.Upstream != "" && !rt.Web {
			// A route of the system's own services: the rule set without
			// the families of technologies the system does not run. The
			// web app's pages (and /healthz) keep the whole rule set.
			r = r.WithContext(waf.WithProfile(r.Context(), waf.Services))
		}
		inspected.ServeHTTP(w, r)
	})
	var h http.Handler
	if cfg.Faults.LimitAfterWAF {
		h = g.waf.Handler(g.limiter.Handler(gate))
	} else {
		h = g.limiter.Handler(gate)
	}
	g.h = retryAfter(h)
	return g, nil
}

func scopes(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

func normaliseHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return strings.TrimSuffix(h, ".")
}

func (g *Gateway) hostAllowed(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return g.hosts[normaliseHost(host)]
}

// checkShape refuses a request whose shape exceeds the bounds, before any
// inspection: each header, cookie and argument costs the WAF CPU.
func (g *Gateway) checkShape(r *http.Request, rt Route) (problem.Problem, bool) {
	s := g.shape
	if len(r.RequestURI) > s.MaxURL || len(r.URL.RawQuery) > s.MaxURL {
		return problem.Problem{Status: http.StatusRequestURITooLong, Type: "request-too-large",
			Title: "Request target too long", Detail: "The URL exceeds the gateway's limit."}, true
	}
	n, size, cookies := 0, 0, 0
	for k, vs := range r.Header {
		for _, v := range vs {
			n++
			size += len(k) + len(v)
		}
		if k == "Cookie" {
			for _, v := range vs {
				cookies += strings.Count(v, ";") + 1
			}
		}
	}
	if n > s.MaxHeaders || size > s.MaxHeaderBytes || cookies > s.MaxCookies {
		return problem.Problem{Status: http.StatusRequestHeaderFieldsTooLarge, Type: "request-too-large",
			Title: "Request header fields too large", Detail: "The headers or cookies exceed the gateway's limits."}, true
	}
	if args := strings.Count(r.URL.RawQuery, "&") + strings.Count(r.URL.RawQuery, ";"); r.URL.RawQuery != "" && args+1 > s.MaxQueryArgs {
		return problem.Problem{Status: http.StatusBadRequest, Type: "request-too-large",
			Title: "Too many query parameters", Detail: "The query string exceeds the gateway's limits."}, true
	}
	// A body of unknown length (HTTP/2 and HTTP/3 without
	// content-length) is bounded by the WAF's read at the route's limit.
	hasBody := r.ContentLength > 0 || len(r.TransferEncoding) > 0
	if !hasBody {
		return problem.Problem{}, false
	}
	if rt.BodyLimit == 0 || r.ContentLength > int64(rt.BodyLimit) {
		return problem.Problem{Status: http.StatusRequestEntityTooLarge, Type: "payload-too-large",
			Title: "Request body too large", Detail: "The request body exceeds what this route accepts."}, true
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || !slices.Contains(rt.MediaTypes, mt) {
		return problem.Problem{Status: http.StatusUnsupportedMediaType, Type: "unsupported-media-type",
			Title: "Unsupported media type", Detail: "Send the body as " + strings.Join(rt.MediaTypes, " or ") + "."}, true
	}
	return problem.Problem{}, false
}

// penalize charges a WAF-refused request BlockedCost in all (it already
// paid 1): the rest, or whatever is left of the budget when less.
func (g *Gateway) penalize(r *http.Request) {
	addr, ok := clientip.FromContext(r.Context())
	if !ok || g.cost <= 1 {
		return
	}
	ctx := context.WithoutCancel(r.Context())
	key := ratelimit.IPKey(addr, 32, 64)
	res, err := g.limiter.AllowN(ctx, "per-ip", key, g.cost-1)
	if err == nil && !res.Allowed && res.Remaining > 0 {
		_, err = g.limiter.AllowN(ctx, "per-ip", key, res.Remaining)
	}
	if err != nil {
		g.log.WarnContext(r.Context(), "gateway: charging a refused request failed", "error", err.Error())
	}
}

// retryAfter makes every 503 carry Retry-After (1 s unless a layer set
// its own).
func retryAfter(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&retryWriter{ResponseWriter: w}, r)
	})
}

type retryWriter struct{ http.ResponseWriter }

func (rw *retryWriter) WriteHeader(code int) {
	if code == http.StatusServiceUnavailable && rw.Header().Get("Retry-After") == "" {
		rw.Header().Set("Retry-After", "1")
	}
	rw.ResponseWriter.WriteHeader(code)
}

func (rw *retryWriter) Flush() {
	if f, ok := rw.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (rw *retryWriter) Unwrap() http.ResponseWriter { return rw.ResponseWriter }

// WAFStats are the WAF's counters (for metrics and tests).
func (g *Gateway) WAFStats() waf.Stats { return g.waf.Stats() }

// Handler is the gateway's chain.
func (g *Gateway) Handler() http.Handler { return g.h }

// Close releases the limiters.
func (g *Gateway) Close() error { return errors.Join(g.limiter.Close(), g.perUser.Close()) }

// proxy forwards to target. Inbound X-Forwarded-* headers are dropped
// (ReverseProxy's Rewrite does that); X-Forwarded-For carries the client
// address the trusted-proxy resolver found, which the services trust only
// because the request comes from the gateway.
func proxy(target *url.URL, rt http.RoundTripper, clientIP func(*http.Request) (netip.Addr, error), log *slog.Logger) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = target.Host
			if clientIP != nil {
				if ip, err := clientIP(pr.In); err == nil {
					pr.Out.Header.Set("X-Forwarded-For", ip.String())
				}
			}
			pr.Out.Header.Set("X-Forwarded-Proto", "https")
		},
		Transport:  rt,
		BufferPool: &copyBuffers,
		// The gateway's correlation layer already set the one
		// X-Request-Id of the response.
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Del("X-Request-Id")
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.ErrorContext(r.Context(), "gateway: upstream failed", "upstream", target.Host, "error", err.Error())
			w.Header().Set("Retry-After", "1")
			writeUnavailable(w, r)
		},
	}
}

// proxyBufferSize is the buffer ReverseProxy copies a response through
// (its own default).
const proxyBufferSize = 32 << 10

// copyBuffers are the proxies' copy buffers, reused: ReverseProxy would
// allocate one per response, an eighth of the bytes a forwarded transfer
// allocated. A buffer holds an earlier response's bytes, but the proxy
// writes only what it has just read into it.
var copyBuffers proxyBuffers

type proxyBuffers struct{ pool sync.Pool }

func (p *proxyBuffers) Get() []byte {
	if a, ok := p.pool.Get().(*[proxyBufferSize]byte); ok {
		return a[:]
	}
	return new([proxyBufferSize]byte)[:]
}

func (p *proxyBuffers) Put(b []byte) {
	if cap(b) < proxyBufferSize {
		return // not one of ours
	}
	p.pool.Put((*[proxyBufferSize]byte)(b[:proxyBufferSize]))
}

func writeUnavailable(w http.ResponseWriter, r *http.Request) {
	problem.Write(w, r, problem.Problem{Status: http.StatusBadGateway, Type: "service-unavailable",
		Title: "Upstream unavailable", Detail: "The service behind the gateway did not answer; retry later."})
}
