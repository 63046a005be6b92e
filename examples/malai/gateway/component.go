package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"

	"github.com/malai-sec/malai/clientip"
	"github.com/malai-sec/malai/correlation"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
	"github.com/malai-sec/malai/headers"
	"github.com/malai-sec/malai/ratelimit"
	rlredis "github.com/malai-sec/malai/ratelimit/redisstore"
	"github.com/malai-sec/malai/route"
)

// edgeFaults are the test-only switches of the edge (an
// internal/faults.Set; see platform.Env.Faults).
type edgeFaults interface {
	Gateway() Faults
	Propagation(rt, bare http.RoundTripper) http.RoundTripper
	EdgeHandler(http.Handler) http.Handler
	EdgeTLS(*tls.Config) *tls.Config
	RedirectHosts([]string) []string
}

// Start runs the gateway component: the public HTTPS listener (TLS 1.2+,
// h2, and HTTP/3 on the same UDP port), the plain-HTTP redirect, and the
// internal listener for /metrics. It mounts the public rows of
// env.Edge.Routes and forwards them to env.Peers over mutual TLS.
func Start(ctx context.Context, env *platform.Env) (_ func() error, err error) {
	var closers []func() error
	stop := func() error {
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			errs = append(errs, closers[i]())
		}
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	e := env.Edge
	if e.Listener == nil {
		return nil, errors.New("gateway: no public listener")
	}
	t := env.Telemetry
	v, err := env.Verifier(platform.AudienceUser)
	if err != nil {
		return nil, err
	}
	closers = append(closers, v.Close)
	var rateStore ratelimit.Store
	if env.Redis != nil {
		if rateStore, err = rlredis.New(rlredis.Config{Client: env.Redis, Prefix: env.RedisKey("rl:")}); err != nil {
			return nil, err
		}
	}
	repCfg := ratelimit.ReputationConfig{}
	if e.DenyList != "" {
		repCfg.DenyFiles = []string{e.DenyList}
	}
	rep, err := ratelimit.NewReputation(repCfg)
	if err != nil {
		return nil, err
	}
	if env.OnReload != nil {
		env.OnReload(rep.Reload)
	}
	edgeIP, err := clientip.New(clientip.Config{TrustedProxies: e.TrustedProxies})
	if err != nil {
		return nil, err
	}
	routes, err := RoutesFrom(e.Routes)
	if err != nil {
		return nil, err
	}
	upstreams := map[string]*url.URL{}
	for component := range e.Routes {
		if component == platform.Web {
			continue // served in this process
		}
		raw, err := env.Peer(component)
		if err != nil {
			return nil, err
		}
		if upstreams[component], err = url.Parse(raw); err != nil {
			return nil, fmt.Errorf("gateway: %s URL: %w", component, err)
		}
	}
	// Test-only faults (see platform.Env.Faults).
	faults, _ := env.Faults.(edgeFaults)
	bare := env.Transport()
	cfg := Config{
		Routes: routes, Upstreams: upstreams, Transport: correlation.Transport(bare, t.Tracer), Verifier: v,
		RateStore: rateStore, Reputation: rep, PerIP: e.PerIP, PerPrincipal: e.PerPrincipal, ClientIP: edgeIP.Resolve, Logger: t.Logger,
		AllowedHosts: e.AllowedHosts, Web: e.Web,
	}
	cfg.WAF.InspectionRate = e.InspectionRate
	if env.Switches.NoReputation {
		cfg.Reputation = nil
	}
	if faults != nil {
		cfg.Transport = faults.Propagation(cfg.Transport, bare)
		cfg.Faults = faults.Gateway()
	}
	gw, err := New(cfg)
	if err != nil {
		return nil, err
	}
	closers = append(closers, gw.Close)

	tlsCfg := headers.TLSConfig(env.Certs.PublicTLS())
	port := e.Listener.Addr().(*net.TCPAddr).Port
	var altSvc func(http.Header) error
	if e.PacketConn != nil {
		altSvc = AltSvc(port)
	}
	var cacheable []string
	for _, t := range e.Routes {
		cacheable = append(cacheable, t.Public().CacheablePaths()...)
	}
	hm, err := headers.New(platform.KeepCacheControl(headers.Config{AltSvc: altSvc, Apps: e.HeaderApps, Select: e.SelectHeaders}, cacheable...))
	if err != nil {
		return nil, err
	}
	handler := hm.Handler(t.Middleware.Handler(route.RecordPattern(gw.Handler())))
	publicTLS := tlsCfg
	if faults != nil {
		handler, publicTLS = faults.EdgeHandler(handler), faults.EdgeTLS(tlsCfg)
	}
	if e.PacketConn != nil {
		// The TLS faults concern the TCP listener's handshake.
		stopH3, err := ServeHTTP3(e.PacketConn, tlsCfg, handler, cfg.Deadlines, t.Logger)
		if err != nil {
			return nil, err
		}
		closers = append(closers, stopH3)
	}
	closers = append(closers, ServeTLS(e.Listener, publicTLS, handler, cfg.Deadlines, t.Logger))
	if e.Redirect != nil {
		hosts := e.AllowedHosts
		if len(hosts) == 0 {
			hosts = []string{"localhost", "127.0.0.1", "::1"}
		}
		if faults != nil {
			hosts = faults.RedirectHosts(hosts)
		}
		rd, err := headers.NewRedirect(headers.RedirectConfig{AllowedHosts: hosts, HTTPSPort: port})
		if err != nil {
			return nil, err
		}
		closers = append(closers, platform.ServeTLS(e.Redirect, nil, hm.Handler(rd), t.Logger))
	}
	stopInternal, err := platform.Serve(env, nil, platform.ServeOptions{})
	if err != nil {
		return nil, err
	}
	closers = append(closers, stopInternal)
	if env.Export != nil {
		env.Export(gw)
	}
	return stop, nil
}
