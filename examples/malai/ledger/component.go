package ledger

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
	"github.com/malai-sec/malai/auditlog/pgstore"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
	"github.com/malai-sec/malai/examples/malai/internal/queue"
	"github.com/malai-sec/malai/idempotency"
	idemmem "github.com/malai-sec/malai/idempotency/memstore"
	idemredis "github.com/malai-sec/malai/idempotency/redisstore"
)

// AuditOrigin names the ledger's audit log in its signed checkpoints.
const AuditOrigin = "malai.local/ledger-audit"

// DefaultAuditSchema is the PostgreSQL schema of the audit chain.
const DefaultAuditSchema = "malai_audit"

var jsonBody = []string{"application/json"}

// user and service build rows of the table: a user route the gateway
// mounts (and the web backend may call), a service route only the named
// components reach.
func user(pattern, scope string, body bool, f func(*Service, http.ResponseWriter, *http.Request)) platform.Binding[*Service] {
	rt := platform.Route{Pattern: pattern, Token: platform.UserToken, Scope: scope, Public: true, Callers: []string{platform.Web}}
	if body {
		rt.MaxBody, rt.MediaTypes = maxBody, jsonBody
	}
	return platform.Binding[*Service]{Route: rt, Bind: authorized(f)}
}

func service(pattern, scope string, body bool, callers []string, f func(*Service, http.ResponseWriter, *http.Request)) platform.Binding[*Service] {
	rt := platform.Route{Pattern: pattern, Token: platform.ServiceToken, Scope: scope, Callers: callers}
	if body {
		rt.MaxBody, rt.MediaTypes = maxBody, jsonBody
	}
	return platform.Binding[*Service]{Route: rt, Bind: authorized(f)}
}

// routeTable is every route of the ledger, written once: the internal
// listener serves it, the gateway mounts its public rows, and the Casbin
// policy is checked against it (component_test.go).
var routeTable = []platform.Binding[*Service]{
	user("POST /v1/accounts", ScopeWrite, true, (*Service).openAccount),
	user("GET /v1/accounts", ScopeRead, false, (*Service).listAccounts),
	user("GET /v1/accounts/{id}", ScopeRead, false, (*Service).getAccount),
	user("GET /v1/accounts/{id}/transfers", ScopeRead, false, (*Service).listTransfers),
	user("POST /v1/deposits", ScopeWrite, true, (*Service).deposit),
	user(SyncTransferPattern, ScopeWrite, true, (*Service).transfer),
	user("POST /v1/transfers/async", ScopeWrite, true, (*Service).transferAsync),
	user("GET /v1/jobs/{id}", ScopeRead, false, (*Service).getJob),
	user("GET /v1/audit/verify", ScopeRead, false, (*Service).auditVerify),
	service("POST /internal/v1/transfers", ScopeTransfer, true, []string{platform.Worker}, (*Service).runJob),
	service("GET /internal/v1/audit/sample", ScopeAudit, false, []string{platform.Evidence}, (*Service).auditSample),
	service("GET /internal/v1/audit/replay", ScopeAudit, false, []string{platform.Evidence}, (*Service).auditReplay),
	service("GET /internal/v1/audit/verify", ScopeAudit, false, []string{platform.Evidence}, (*Service).auditVerify),
}

// authorized binds a handler behind the Casbin policy.
func authorized(f func(*Service, http.ResponseWriter, *http.Request)) func(*Service) http.Handler {
	return func(s *Service) http.Handler { return s.authz.Handler(platform.HandlerFunc(f)(s)) }
}

// Routes is the ledger's route table, as data.
func Routes() platform.Table { return platform.Declare(routeTable) }

// Table is the ledger's route table bound to s.
// With Faults.NoTokenCheck every token route believes its bearer token
// unverified.
func (s *Service) Table() platform.Table {
	t := platform.Bind(routeTable, s)
	if s.cfg.Faults.NoTokenCheck {
		for i := range t {
			if t[i].Token != platform.NoToken {
				t[i].Handler = believeClaims(t[i].Handler)
			}
		}
	}
	return t
}

// Audit is the audit log the ledger appends to.
func (s *Service) Audit() *auditlog.Log { return s.cfg.Audit }

// OpenAuditStore opens the audit chain's store: PostgreSQL as the
// application role when pg.URL is set, else the file store under dataDir.
func OpenAuditStore(ctx context.Context, dataDir string, pg platform.Postgres) (auditlog.Store, error) {
	if pg.URL == "" {
		return filestore.Open(filepath.Join(dataDir, "audit"))
	}
	schema := pg.Schema
	if schema == "" {
		schema = DefaultAuditSchema
	}
	return pgstore.New(ctx, pgstore.Config{DSN: pg.URL, Schema: schema, Password: pg.PasswordFunc()})
}

// Start runs the ledger component: the audit chain (file store or
// PostgreSQL) with its witness and signed checkpoints, idempotency records
// (embedded or Redis), the queue, and the route table on the internal
// listener.
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
	st, err := OpenAuditStore(ctx, env.DataDir, env.Postgres)
	if err != nil {
		return nil, fmt.Errorf("ledger: audit store: %w", err)
	}
	closers = append(closers, st.Close)
	wdir := env.WitnessDir
	if wdir == "" {
		wdir = filepath.Join(env.DataDir, "witness")
	}
	wst, err := filestore.Open(wdir)
	if err != nil {
		return nil, fmt.Errorf("ledger: witness store: %w", err)
	}
	closers = append(closers, wst.Close)
	signers, err := env.Keys.Signers()
	if err != nil {
		return nil, err
	}
	verifiers, err := env.Keys.Verifiers()
	if err != nil {
		return nil, err
	}
	witness, err := auditlog.NewWitness(ctx, auditlog.WitnessConfig{Store: wst, Origin: AuditOrigin, Verifiers: verifiers})
	if err != nil {
		return nil, err
	}
	audit, err := auditlog.New(auditlog.Config{
		Store: st, Origin: AuditOrigin, Signers: signers, Witness: witness, Ring: env.Ring,
		OnError: func(err error) { log.Error("audit: background work failed", "error", err.Error()) },
	})
	if err != nil {
		return nil, err
	}
	closers = append(closers, audit.Close)

	var idem idempotency.Store
	q := env.Queue
	if env.Redis != nil {
		if idem, err = idemredis.New(idemredis.Config{Client: env.Redis, Prefix: env.RedisKey("idem:")}); err != nil {
			return nil, err
		}
		if q == nil {
			if q, err = queue.NewRedis(ctx, env.Redis, env.RedisKey("transfers"), "workers", queue.Options{}); err != nil {
				return nil, err
			}
		}
	} else if idem, err = idemmem.New(idemmem.Config{EvictCompleted: true}); err != nil {
		// (The ledger keeps every outcome in its chain: completed records
		// may be evicted when the store is full.)
		return nil, err
	}
	if q == nil {
		return nil, errors.New("ledger: no queue (set -redis-url, or run with the worker in one process)")
	}
	userV, err := env.Verifier(platform.AudienceUser)
	if err != nil {
		return nil, err
	}
	closers = append(closers, userV.Close)
	serviceV, err := env.Verifier(platform.AudienceService)
	if err != nil {
		return nil, err
	}
	closers = append(closers, serviceV.Close)
	var faults Faults
	if f, ok := env.Faults.(interface {
		IdempotencyStore(idempotency.Store) idempotency.Store
		Ledger() Faults
	}); ok {
		idem, faults = f.IdempotencyStore(idem), f.Ledger()
	}
	s, err := New(ctx, Config{
		Verifier: userV, Audit: audit, Idempotency: idem, Queue: q, JobKeys: env.Ring, Faults: faults,
		PolicyFile: filepath.Join(env.DataDir, "ledger-policy.csv"), Logger: log,
		Shared: env.Postgres.URL != "",
	})
	if err != nil {
		return nil, err
	}
	closers = append(closers, s.Close)
	if env.OnReload != nil {
		env.OnReload(s.Reload)
	}
	stopServe, err := platform.Serve(env, s.Table(), platform.ServeOptions{User: userV, Service: serviceV,
		// NoTokenCheck: the listener verifies no token either (the
		// table's routes believe theirs).
		OwnTokens: faults.NoTokenCheck})
	if err != nil {
		return nil, err
	}
	closers = append(closers, stopServe)
	if env.Export != nil {
		env.Export(s)
	}
	return stop, nil
}
