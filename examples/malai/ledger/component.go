package ledger

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/filestore"
	"github.com/malai-sec/malai/auditlog/memstore"
	"github.com/malai-sec/malai/auditlog/pgstore"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
	"github.com/malai-sec/malai/examples/malai/internal/queue"
	"github.com/malai-sec/malai/idempotency"
	idemmem "github.com/malai-sec/malai/idempotency/memstore"
	idemredis "github.com/malai-sec/malai/idempotency/redisstore"
	"github.com/malai-sec/malai/jwtverify"
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
	var faults Faults
	fs, _ := env.Faults.(interface {
		IdempotencyStore(idempotency.Store) idempotency.Store
		Ledger() Faults
	})
	if fs != nil {
		faults = fs.Ledger()
	}
	ch, err := openChain(ctx, env, !faults.NoWitness)
	if err != nil && faults.StartOnDamagedChain && damagedChain(err) {
		log.Error("ledger: audit chain damaged; starting on an empty chain (fault)", "error", err.Error())
		ch, err = emptyChain(env)
	}
	if err != nil {
		return nil, err
	}
	closers = append(closers, ch.close)

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
	if fs != nil {
		idem = fs.IdempotencyStore(idem)
	}
	cfg := Config{
		Verifier: userV, Audit: ch.log, Idempotency: idem, Queue: q, JobKeys: env.Ring, Faults: faults,
		PolicyFile: filepath.Join(env.DataDir, "ledger-policy.csv"), Logger: log,
		Shared: env.Postgres.URL != "",
	}
	s, err := New(ctx, cfg)
	if err != nil && faults.StartOnDamagedChain && damagedChain(err) {
		// The replay found what opening the chain did not (a sealed
		// payload modified in place).
		log.Error("ledger: audit chain damaged; starting on an empty chain (fault)", "error", err.Error())
		_ = ch.close()
		if ch, err = emptyChain(env); err == nil {
			closers = append(closers, ch.close)
			cfg.Audit = ch.log
			s, err = New(ctx, cfg)
		}
	}
	if err != nil {
		return nil, err
	}
	closers = append(closers, s.Close)
	if !faults.NoReencrypt && env.Ring != nil {
		// Stopped before the chain closes (closers run last first).
		closers = append(closers, startRekeyer(&rekeyer{st: ch.store, ring: env.Ring, log: log, shared: env.Postgres.URL != ""}))
	}
	if env.OnReload != nil {
		env.OnReload(s.Reload)
	}
	table := s.Table()
	for i, rt := range table {
		if s.anyClass(rt) {
			// The listener checks no class here: the route's verifier
			// (its audience) and scopes alone.
			v := userV
			if rt.Token == platform.ServiceToken {
				v = serviceV
			}
			table[i].Handler = v.Require(jwtverify.Requirement{Scopes: rt.Scopes()})(rt.Handler)
			table[i].Token, table[i].Scope = platform.NoToken, ""
		}
	}
	stopServe, err := platform.Serve(env, table, platform.ServeOptions{User: userV, Service: serviceV,
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

// chain is the ledger's audit log over its store and witness.
type chain struct {
	log       *auditlog.Log
	store     auditlog.Store
	closers   []func() error
	closeOnce sync.Once
	closeErr  error
}

// close closes the log, then the witness and the store; later calls
// return the first call's error.
func (c *chain) close() error {
	c.closeOnce.Do(func() {
		var errs []error
		for i := len(c.closers) - 1; i >= 0; i-- {
			errs = append(errs, c.closers[i]())
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// openChain opens the audit log over the ledger's store, with the witness
// under the data directory. Without witnessed the witness's store is
// opened (an offline verification reads it) but nothing is published to
// it.
func openChain(ctx context.Context, env *platform.Env, witnessed bool) (_ *chain, err error) {
	c := &chain{}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	st, err := OpenAuditStore(ctx, env.DataDir, env.Postgres)
	if err != nil {
		return nil, fmt.Errorf("ledger: audit store: %w", err)
	}
	c.closers = append(c.closers, st.Close)
	wdir := env.WitnessDir
	if wdir == "" {
		wdir = filepath.Join(env.DataDir, "witness")
	}
	wst, err := filestore.Open(wdir)
	if err != nil {
		return nil, fmt.Errorf("ledger: witness store: %w", err)
	}
	c.closers = append(c.closers, wst.Close)
	var witness auditlog.Witness
	if witnessed {
		// The witness accepts every key in the key file as it stands at
		// each publication: a key rotated in while the ledger runs.
		if witness, err = auditlog.NewWitness(ctx, auditlog.WitnessConfig{Store: wst, Origin: AuditOrigin, GetVerifiers: env.Keys.Verifiers}); err != nil {
			return nil, err
		}
	}
	return c, c.open(env, st, witness)
}

// emptyChain is an audit log over an empty store in memory, without a
// witness: what the StartOnDamagedChain fault starts on.
func emptyChain(env *platform.Env) (*chain, error) {
	c := &chain{}
	st := memstore.New()
	c.closers = append(c.closers, st.Close)
	if err := c.open(env, st, nil); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// open starts the log over st, signed with the key file's signers as the
// file stands at each checkpoint: a key rotated in while the ledger runs
// signs its next checkpoint.
func (c *chain) open(env *platform.Env, st auditlog.Store, witness auditlog.Witness) error {
	log := env.Telemetry.Logger
	var err error
	c.store = st
	c.log, err = auditlog.New(auditlog.Config{
		Store: st, Origin: AuditOrigin, GetSigners: env.Keys.Signers, Witness: witness, Ring: env.Ring,
		OnError: func(err error) { log.Error("audit: background work failed", "error", err.Error()) },
	})
	if err != nil {
		return err
	}
	c.closers = append(c.closers, c.log.Close)
	return nil
}

// damagedChain reports whether err says the audit chain does not open or
// verify (rather than that its store is unreachable).
func damagedChain(err error) bool {
	return errors.Is(err, filestore.ErrCorrupt) || errors.Is(err, auditlog.ErrTampered) ||
		errors.Is(err, auditlog.ErrRollback) || errors.Is(err, auditlog.ErrFork)
}
