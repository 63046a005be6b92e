package identity

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
	auditpg "github.com/malai-sec/malai/auditlog/pgstore"
	"github.com/malai-sec/malai/clientip"
	"github.com/malai-sec/malai/examples/malai/identity/store"
	"github.com/malai-sec/malai/examples/malai/identity/store/boltstore"
	"github.com/malai-sec/malai/examples/malai/identity/store/pgstore"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
)

// AuditOrigin names identity's own audit chain (security events) in its
// signed checkpoints.
const AuditOrigin = "malai.local/identity-audit"

// PostgreSQL objects of identity in distributed mode: the schema holding
// the store's tables and the audit chain's table.
const (
	DefaultSchema = "malai_identity"
	AuditTable    = "identity_audit"
)

// openStores opens identity's store and its audit chain's store: in
// PostgreSQL as the application role when env.Postgres.URL is set (every
// identity replica shares them), else bbolt and a file store under the
// data directory.
func openStores(ctx context.Context, env *platform.Env) (store.Store, auditlog.Store, error) {
	if env.Postgres.URL == "" {
		st, err := boltstore.Open(filepath.Join(env.DataDir, "identity"), 0)
		if err != nil {
			return nil, nil, err
		}
		ast, err := filestore.Open(filepath.Join(env.DataDir, "identity-audit"))
		if err != nil {
			st.Close()
			return nil, nil, err
		}
		return st, ast, nil
	}
	schema := env.Postgres.Schema
	if schema == "" {
		schema = DefaultSchema
	}
	st, err := pgstore.New(ctx, pgstore.Config{DSN: env.Postgres.URL, Schema: schema, Password: env.Postgres.PasswordFunc()})
	if err != nil {
		return nil, nil, err
	}
	ast, err := auditpg.New(ctx, auditpg.Config{DSN: env.Postgres.URL, Schema: schema, Table: AuditTable, Password: env.Postgres.PasswordFunc()})
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return st, ast, nil
}

// MigratePostgres creates identity's tables (the store's and the audit
// chain's) in schema, owned by owner, with appRole granted what the
// runtime needs and no more; run it as a privileged role the runtime
// never holds. The schema and both roles must exist. It is idempotent.
func MigratePostgres(ctx context.Context, conn *pgx.Conn, schema, owner, appRole string) error {
	if err := pgstore.Migrate(ctx, conn, pgstore.MigrateConfig{Schema: schema, Owner: owner, AppRole: appRole}); err != nil {
		return err
	}
	return auditpg.Migrate(ctx, conn, auditpg.MigrateConfig{Schema: schema, Table: AuditTable, Owner: owner, AppRole: appRole})
}

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
// (worker, evidence) registered by key over their certificates. It
// answers the key file's token-key rotation requests ("malai
// rotate-keys") by rotating its token-signing key once per request: a
// request made while identity was down at start, later ones as the
// process's key-file watch reads them.
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
	st, ast, err := openStores(ctx, env)
	if err != nil {
		return nil, err
	}
	closers = append(closers, st.Close, ast.Close)
	// Checkpoints are signed with the key file's newest signing keys as
	// it stands at each one: a rotation reaches a running identity.
	audit, err := auditlog.New(auditlog.Config{
		Store: ast, Origin: AuditOrigin, GetSigners: env.Keys.Signers, Ring: env.Ring,
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
	clients := []Client{{ID: platform.Worker, Scopes: []string{"ledger:transfer"}}}
	if env.Auditor {
		// Only the evidence pass asks for its auditor.
		clients = append(clients, Client{ID: platform.Evidence, Scopes: []string{"ledger:audit"}})
	}
	s, err := New(Config{
		Issuer: env.Issuer, Logger: log, ClientIP: clientIP, Store: st, Ring: env.Ring, Audit: audit,
		Clients:        clients,
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
	closers = append(closers, followKeyRotations(s, env.Keys, log))
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

// followKeyRotations answers the key file's token-key rotation requests
// ([platform.KeyFile.TokenKeyRotation]) with [Service.RotateKeyOnce]: the
// one standing now before it returns (a rotation asked while identity was
// down), then each one a reload of the key file brings. Replicas sharing
// the store rotate once per request between them. A failed answer is
// logged and retried every minute. stop ends the loop.
func followKeyRotations(s *Service, keys *platform.KeyFile, log *slog.Logger) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	answer := func(request uint64) bool {
		if request == 0 {
			return true
		}
		actx, acancel := context.WithTimeout(ctx, 30*time.Second)
		defer acancel()
		rotated, err := s.RotateKeyOnce(actx, request)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("identity: token-signing key rotation request failed", "request", request, "error", err.Error())
			}
			return false
		}
		if rotated {
			log.Info("identity: token-signing key rotated on request", "request", request, "published", len(s.keys.Published()))
		}
		return true
	}
	request, changed := keys.TokenKeyRotation()
	answered := answer(request)
	done := make(chan struct{})
	go func() {
		defer close(done)
		retry := time.NewTicker(time.Minute)
		defer retry.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
				request, changed = keys.TokenKeyRotation()
				answered = answer(request)
			case <-retry.C:
				if !answered {
					answered = answer(request)
				}
			}
		}
	}()
	return func() error { cancel(); <-done; return nil }
}
