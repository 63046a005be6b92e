// Package gateway is the reference system's edge: TLS 1.2+ with HTTP/2 and
// HTTP/3, forced security headers, correlation, the WAF (Coraza with the
// OWASP CRS), IP reputation and per-IP limits, the first JWT check, and a
// per-principal limit, in front of the identity and ledger services.
//
// Internal routes (/internal/…) are not routed at all: only services reach
// them, directly, with service tokens.
package gateway

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"time"

	"github.com/malai-sec/malai/correlation"
	"github.com/malai-sec/malai/examples/malai/gateway/internal/waf"
	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/problem"
	"github.com/malai-sec/malai/ratelimit"
)

// Config configures the gateway.
type Config struct {
	IdentityURL, LedgerURL *url.URL
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
	// ClientIP is the trusted-proxy resolver shared with identity.
	ClientIP func(*http.Request) (netip.Addr, error)
	WAF      waf.Config
	Logger   *slog.Logger
}

// Gateway is the edge handler.
type Gateway struct {
	h       http.Handler
	limiter *ratelimit.Limiter
	perUser *ratelimit.Limiter
}

// New builds the gateway's handler chain (without headers and correlation,
// which the caller puts outermost).
func New(cfg Config) (*Gateway, error) {
	if cfg.IdentityURL == nil || cfg.LedgerURL == nil || cfg.Transport == nil || cfg.Verifier == nil {
		return nil, errors.New("gateway: IdentityURL, LedgerURL, Transport and Verifier are required")
	}
	if cfg.PerIP == 0 {
		cfg.PerIP = 600
	}
	if cfg.PerPrincipal == 0 {
		cfg.PerPrincipal = 300
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.WAF.Logger = cfg.Logger
	w, err := waf.New(cfg.WAF)
	if err != nil {
		return nil, err
	}
	g := &Gateway{}
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
	identity := proxy(cfg.IdentityURL, cfg.Transport, cfg.ClientIP, cfg.Logger)
	ledger := proxy(cfg.LedgerURL, cfg.Transport, cfg.ClientIP, cfg.Logger)
	// JWT check #1: every ledger route needs a verified user token here,
	// and the ledger verifies it again.
	userRoutes := cfg.Verifier.Handler(cfg.Verifier.RequireUser()(g.perUser.Handler(ledger)))

	mux := http.NewServeMux()
	for _, p := range []string{
		"POST /v1/users", "POST /v1/sessions", "POST /v1/refresh", "POST /v1/mfa/totp", "POST /v1/mfa/totp/confirm",
		"POST /oauth2/token", "GET /.well-known/jwks.json",
	} {
		mux.Handle(p, identity)
	}
	for _, p := range []string{
		"GET /v1/accounts", "POST /v1/accounts", "GET /v1/accounts/{id}", "POST /v1/transfers", "POST /v1/transfers/async",
	} {
		mux.Handle(p, userRoutes)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	g.h = w.Handler(g.limiter.Handler(correlation.RecordPattern(mux)))
	return g, nil
}

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
		Transport: rt,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.ErrorContext(r.Context(), "gateway: upstream failed", "upstream", target.Host, "error", err.Error())
			w.Header().Set("Retry-After", "1")
			writeUnavailable(w, r)
		},
	}
}

func writeUnavailable(w http.ResponseWriter, r *http.Request) {
	problem.Write(w, r, problem.Problem{Status: http.StatusBadGateway, Type: "service-unavailable",
		Title: "Upstream unavailable", Detail: "The service behind the gateway did not answer; retry later."})
}
