package platform

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/malai-sec/malai/headers"
	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/problem"
	"github.com/malai-sec/malai/route"
)

// ServeOptions tune [Serve].
type ServeOptions struct {
	// Verifiers check the tokens of the table's UserToken and
	// ServiceToken routes. A missing one is built with [Env.Verifier].
	User, Service *jwtverify.Verifier
	// Ready reports readiness for GET /readyz (nil: ready once serving).
	Ready func(context.Context) error
	// OwnTokens: the component verifies bearer tokens itself (identity,
	// the issuer); the table's token class is then documentation for the
	// gateway and no verifier is built here.
	OwnTokens bool
}

// Problems the internal listener answers with.
var (
	errCaller = problem.Problem{Status: http.StatusForbidden, Type: "caller-not-allowed", Title: "Forbidden",
		Detail: "This component may not call this route."}
)

// Handler builds the internal handler of a route table: every route
// admits only its callers (by the verified client certificate), then
// checks the token class and scope the table names, then runs. GET
// /metrics admits the monitor and the evidence pass; GET /healthz and GET
// /readyz any component. Unknown routes get problem+json 404/405. The
// headers, correlation and telemetry middleware wrap it all.
func Handler(env *Env, t Table, o ServeOptions) (http.Handler, error) {
	if err := t.Validate(true); err != nil {
		return nil, fmt.Errorf("%s: route table: %w", env.Name, err)
	}
	var err error
	for _, r := range t {
		if o.OwnTokens {
			break
		}
		switch {
		case r.Token == UserToken && o.User == nil:
			if o.User, err = env.Verifier(AudienceUser); err != nil {
				return nil, err
			}
		case r.Token == ServiceToken && o.Service == nil:
			if o.Service, err = env.Verifier(AudienceService); err != nil {
				return nil, err
			}
		}
	}
	log := env.Telemetry.Logger
	mux := http.NewServeMux()
	for _, r := range t {
		h := r.Handler
		token := r.Token
		if o.OwnTokens {
			token = NoToken
		}
		switch token {
		case UserToken:
			h = o.User.Require(jwtverify.Requirement{Class: jwtverify.ClassUser, Scopes: r.Scopes()})(h)
		case ServiceToken:
			h = o.Service.Require(jwtverify.Requirement{Class: jwtverify.ClassService, Scopes: r.Scopes()})(h)
		}
		mux.Handle(r.Pattern, admit(r, h, log))
	}
	everyone := append([]string{Monitor, Evidence}, Components...)
	if !env.Switches.NoMetrics {
		mux.Handle("GET /metrics", admit(Route{Pattern: "GET /metrics", Callers: []string{Monitor, Evidence}}, env.Telemetry.Metrics, log))
	}
	mux.Handle("GET /healthz", admit(Route{Pattern: "GET /healthz", Callers: everyone}, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	}), log))
	mux.Handle("GET /readyz", admit(Route{Pattern: "GET /readyz", Callers: everyone}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.Ready != nil {
			if err := o.Ready(r.Context()); err != nil {
				log.WarnContext(r.Context(), "not ready", "error", err.Error())
				w.Header().Set("Retry-After", "1")
				problem.Write(w, r, problem.Unavailable)
				return
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ready\n"))
	}), log))
	hm, err := headers.New(KeepCacheControl(headers.Config{}, t.CacheablePaths()...))
	if err != nil {
		return nil, err
	}
	return hm.Handler(env.Telemetry.Middleware.Handler(route.RecordPattern(noRoute(mux)))), nil
}

// admit lets a request through only when its client certificate names a
// component the route admits.
func admit(r Route, next http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		peer := PeerComponent(req)
		if !r.Admits(peer) {
			log.WarnContext(req.Context(), "caller refused", "caller", peer, "route", r.Pattern)
			problem.Write(w, req, errCaller)
			return
		}
		next.ServeHTTP(w, req)
	})
}

// Serve serves the component's route table on its internal listener over
// mutual TLS (a client certificate of the system's roots is required at
// the handshake) until the returned stop function is called.
func Serve(env *Env, t Table, o ServeOptions) (stop func() error, err error) {
	if env.Listener == nil {
		return nil, errors.New(env.Name + ": no internal listener")
	}
	h, err := Handler(env, t, o)
	if err != nil {
		return nil, err
	}
	cfg := headers.TLSConfig(env.Certs.ServerTLS())
	if env.Switches.OptionalClientCerts {
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return ServeTLS(env.Listener, cfg, h, env.Telemetry.Logger), nil
}

// ServeTLS serves h on ln with cfg until the returned function stops it
// (waiting up to five seconds for requests in flight).
func ServeTLS(ln net.Listener, cfg *tls.Config, h http.Handler, log *slog.Logger) func() error {
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	srv := &http.Server{
		Handler: h, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute,
	}
	go func() { _ = srv.Serve(ln) }()
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(ctx)
	}
}

// URL is the https base URL of a listener.
func URL(ln net.Listener) string { return "https://" + ln.Addr().String() }

// noRoute serves mux, answering requests no route matches with
// problem+json 404 or 405 ([NoRoute]).
func noRoute(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "" {
			NoRoute(w, r, mux)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// KeepCacheControl returns c with GET and HEAD requests for paths served
// under a header profile that keeps the handler's own Cache-Control
// (public documents: a key set, authorization-server metadata); every
// other response keeps c's choice (no-store by default).
func KeepCacheControl(c headers.Config, paths ...string) headers.Config {
	if len(paths) == 0 {
		return c
	}
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
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && slices.Contains(paths, r.URL.Path) {
			return "public-docs"
		}
		if next != nil {
			return next(r)
		}
		return ""
	}
	return c
}
