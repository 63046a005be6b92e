package identity

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"path/filepath"

	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
	"github.com/malai-sec/malai/clientip"
	"github.com/malai-sec/malai/examples/malai/identity/store/boltstore"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
)

// AuditOrigin names identity's own audit chain (security events) in its
// signed checkpoints.
const AuditOrigin = "malai.local/identity-audit"

// Table returns identity's route table in the platform's form, bound to s
// when s is not nil (nil: data only, what the gateway mounts).
func Table(s *Service) platform.Table {
	out := make(platform.Table, len(routeTable))
	for i, rt := range routeTable {
		r := platform.Route{Pattern: rt.Pattern, Public: rt.Public, Callers: rt.Callers, MaxBody: rt.MaxBody,
			Cacheable: rt.Pattern == "GET "+JWKSPath || rt.Pattern == "GET "+MetadataPath}
		if rt.Token == TokenUser {
			r.Token = platform.UserToken
		}
		if rt.MaxBody > 0 {
			r.MediaTypes = []string{"application/json"}
			if rt.Pattern == "POST "+TokenPath {
				r.MediaTypes = []string{"application/x-www-form-urlencoded"}
			}
		}
		if s != nil {
			r.Handler = s.open(rt.bind(s))
		}
		out[i] = r
	}
	return out
}

// open answers ErrClosed once the service is closed.
func (s *Service) open(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.isClosed() {
			s.fail(w, r, ErrClosed)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Start runs the identity component on its internal listener: accounts,
// sessions and keys in bbolt under the data directory, its security
// events in an audit chain of its own, and the components' clients
// (worker, evidence) registered by key over their certificates.
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
	log := env.Telemetry.Logger
	// The gateway and the web backend set X-Forwarded-For to the client
	// they forward; their certificate proves it, wherever they run. Anyone
	// else is the client itself.
	forwarded, err := clientip.New(clientip.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}})
	if err != nil {
		return nil, err
	}
	clientIP := func(r *http.Request) (netip.Addr, error) {
		if platform.ForwardsClient(r) || env.Switches.TrustAnyForwardedFor {
			return forwarded.Resolve(r)
		}
		return RemoteAddrIP(r)
	}
	st, err := boltstore.Open(filepath.Join(env.DataDir, "identity"), 0)
	if err != nil {
		return nil, err
	}
	closers = append(closers, st.Close)
	ast, err := filestore.Open(filepath.Join(env.DataDir, "identity-audit"))
	if err != nil {
		return nil, err
	}
	closers = append(closers, ast.Close)
	signer, _, err := env.Keys.Signer()
	if err != nil {
		return nil, err
	}
	audit, err := auditlog.New(auditlog.Config{
		Store: ast, Origin: AuditOrigin, Signers: []note.Signer{signer}, Ring: env.Ring,
		OnError: func(err error) { log.Error("identity audit: background work failed", "error", err.Error()) },
	})
	if err != nil {
		return nil, err
	}
	closers = append(closers, audit.Close)
	// Test-only faults (see platform.Env.Faults).
	var faults Faults
	if f, ok := env.Faults.(interface{ Identity() Faults }); ok {
		faults = f.Identity()
	}
	s, err := New(Config{
		Issuer: env.Issuer, Logger: log, ClientIP: clientIP, Store: st, Ring: env.Ring, Audit: audit,
		Clients: []Client{
			{ID: platform.Worker, Scopes: []string{"ledger:transfer"}},
			{ID: platform.Evidence, Scopes: []string{"ledger:audit"}},
		},
		PeerComponent:  platform.PeerComponent,
		AllowedOrigins: env.Origins,
		// The web backend keeps browsers' refresh sessions server-side
		// and guards its own pages against cross-site requests.
		OriginExemptPeers: []string{platform.Web},
		Faults:            faults,
	})
	if err != nil {
		return nil, err
	}
	closers = append(closers, s.Close)
	stopServe, err := platform.Serve(env, Table(s), platform.ServeOptions{
		// Identity verifies its own bearer tokens (re-authentication needs
		// more than a valid token).
		OwnTokens: true,
	})
	if err != nil {
		return nil, err
	}
	closers = append(closers, stopServe)
	if env.Export != nil {
		env.Export(s)
		env.Export(st)
	}
	return stop, nil
}
