package main

import (
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"

	"github.com/malai-sec/malai/clientip"
	"github.com/malai-sec/malai/correlation"
	"github.com/malai-sec/malai/examples/malai/internal/pki"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
	"github.com/malai-sec/malai/examples/malai/web"
	"github.com/malai-sec/malai/headers"
)

// withWeb adds the customer web app to a gateway's Env: the app runs in
// the gateway's process (the gateway serves its routes at "/" behind the
// same limits, shape caps and WAF), calls identity and the ledger over
// mutual TLS with its own certificate (component "web"), and keeps its
// sessions in Redis or a durable embedded store. Its routes join the
// gateway's tables as the web component's.
func withWeb(env *platform.Env, certs *pki.Certs) (stop func() error, err error) {
	idURL, err := env.Peer(platform.Identity)
	if err != nil {
		return nil, err
	}
	ldURL, err := env.Peer(platform.Ledger)
	if err != nil {
		return nil, err
	}
	idU, _ := url.Parse(idURL)
	ldU, _ := url.Parse(ldURL)
	var store web.Store
	if env.Redis != nil {
		store, err = web.NewRedisStore(env.Redis, env.RedisKey("web:"))
	} else {
		store, err = web.NewBoltStore(filepath.Join(env.DataDir, "web-sessions.db"))
	}
	if err != nil {
		return nil, err
	}
	edgeIP, err := clientip.New(clientip.Config{TrustedProxies: env.Edge.TrustedProxies})
	if err != nil {
		store.Close()
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: certs.ClientTLS(), ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}
	app, err := web.New(web.Config{
		IdentityURL: idU, LedgerURL: ldU, Transport: correlation.Transport(tr, env.Telemetry.Tracer), Store: store, Ring: env.Ring,
		ClientIP: func(r *http.Request) (netip.Addr, error) { return edgeIP.Resolve(r) }, Logger: env.Telemetry.Logger.With("app", "web"),
	})
	if err != nil {
		store.Close()
		return nil, err
	}
	var table platform.Table
	for _, e := range app.Endpoints() {
		table = append(table, platform.Route{Pattern: e.Pattern, Public: true, MaxBody: int64(e.BodyLimit), MediaTypes: e.MediaTypes,
			PasswordFields: e.PasswordFields, Report: e.Report})
	}
	if env.Edge.Routes == nil {
		return nil, errors.New("web: the gateway has no route tables")
	}
	env.Edge.Routes[platform.Web] = table
	env.Edge.Web = app.Handler()
	env.Edge.HeaderApps = map[string]headers.App{web.HeadersAppName: web.HeadersApp()}
	env.Edge.SelectHeaders = web.SelectHeaders
	if env.Export != nil {
		env.Export(app)
	}
	return func() error { tr.CloseIdleConnections(); return store.Close() }, nil
}
