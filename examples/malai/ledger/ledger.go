package ledger

import (
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/casbin/casbin/v2/util"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/correlation"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
	"github.com/malai-sec/malai/examples/malai/internal/queue"
	"github.com/malai-sec/malai/examples/malai/ledger/internal/book"
	"github.com/malai-sec/malai/idempotency"
	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/keyring"
	"github.com/malai-sec/malai/problem"
	"github.com/malai-sec/malai/rbac"
	"github.com/malai-sec/malai/route"
)

// Scopes the ledger requires.
const (
	ScopeRead     = "ledger:read"
	ScopeWrite    = "ledger:write"
	ScopeTransfer = "ledger:transfer"
	ScopeAudit    = "ledger:audit"
)

// Roles the ledger's policy grants (Casbin "g" lines in the policy file).
const (
	RoleTeller  = "role:teller"
	RoleAuditor = "role:auditor"
)

// SyncTransferPattern is the route whose Idempotency-Key scope the
// asynchronous route shares: one key names one transfer whichever path
// carries it.
const SyncTransferPattern = "POST /v1/transfers"

// Defaults.
const (
	DefaultRetention      = 24 * time.Hour
	DefaultJobTTL         = time.Hour
	DefaultMaxPendingJobs = 10_000
	DefaultRequestTimeout = 10 * time.Second
	DefaultCommitTimeout  = 10 * time.Second
	DefaultRepublishAfter = time.Minute
	DefaultPumpInterval   = 5 * time.Second
	maxBody               = 16 << 10
)

//go:embed policy.csv
var defaultPolicy embed.FS

// Faults switch single guarantees off, for the tests and evidence checks
// that must show each guarantee's check failing without it. [New] refuses
// any fault outside a test binary.
type Faults struct {
	// ForgetKeys: a key's outcome is not recorded in, nor recovered from,
	// the chain; only the idempotency store remembers it.
	ForgetKeys bool
	// AppendOnRequestContext: the append runs on the request's context,
	// unconditionally, and is not read back when it fails.
	AppendOnRequestContext bool
	// NoJobStatus: GET /v1/jobs/{id} never reports an outcome.
	NoJobStatus bool
	// NoOwnerCheck: any customer may read and debit any account.
	NoOwnerCheck bool
	// UnredactedSample: the audit sample shows who asked (payload.by,
	// payload.owner, payload.op).
	UnredactedSample bool
	// KeyOptional: a write without Idempotency-Key runs, unprotected.
	KeyOptional bool
	// LaxBodies: bodies are decoded by encoding/json alone (the last
	// duplicate wins, names match in any case).
	LaxBodies bool
	// LiveDrift: the live balances credit every deposit one unit less
	// than the chain records (a fee taken outside the chain). Live money
	// is only ever less than the chain's, so a restart's replay still
	// succeeds, and restores the chain's balances.
	LiveDrift bool
	// NoTokenCheck: the ledger's own bearer-token verification is off:
	// the claims of any well-formed token are believed (no signature,
	// lifetime, issuer, audience, class or scope check). The caller check
	// and the policy stay, as do the other layers.
	NoTokenCheck bool
	// AnyClassOnUserRoutes: the user routes take a verified token of
	// either class; audience, scopes and the policy stay.
	AnyClassOnUserRoutes bool
	// AnyClassOnInternalRoutes: the internal routes take a verified token
	// of either class; audience, scopes, the caller check and the policy
	// stay.
	AnyClassOnInternalRoutes bool
	// StartOnDamagedChain: when the audit chain does not open or verify
	// at the start, the component starts on an empty chain in memory with
	// no witness instead of refusing (see Start).
	StartOnDamagedChain bool
	// NoWitness: the component publishes its checkpoints to no witness.
	NoWitness bool
	// NoReencrypt: after a data-key rotation the component re-encrypts
	// none of the audit rows sealed under older keys (see rekey.go).
	NoReencrypt bool
}

func (f Faults) any() bool { return f != Faults{} }

// Config configures the ledger.
type Config struct {
	// Verifier is the ledger's own JWT verifier (the second layer).
	Verifier *jwtverify.Verifier
	// Audit is the hash-chained log every ledger event is appended to: the
	// ledger's system of record. The ledger does not close it.
	Audit *auditlog.Log
	// Idempotency keeps Idempotency-Key records: the fast path for replays
	// and the lease that answers 409 to a concurrent duplicate. The chain
	// remains the authority (see the package documentation). With the
	// in-memory store, build it with memstore.Config.EvictCompleted.
	Idempotency idempotency.Store
	// Queue carries accepted asynchronous transfers to the worker.
	Queue queue.Queue
	// JobKeys authenticates queued jobs (a MAC under the ring's current
	// key, whose id travels with it): persisted and shared by every ledger
	// replica, so jobs queued before a restart or a rotation still verify.
	JobKeys *keyring.Ring
	// PolicyFile is the Casbin policy (CSV). Created with the default
	// policy when missing; Reload re-reads it.
	PolicyFile string
	// Shared is set when other ledger processes append to the same chain
	// (PostgreSQL with several replicas): reads catch up with the chain
	// first. Writes are always conditional on the chain's head.
	Shared bool
	// Retention is how long a key's first outcome is kept (in the
	// idempotency store and in the chain's key index). Default 24 h.
	Retention time.Duration
	// JobTTL is how long an accepted job may wait before it expires and
	// fails. Default one hour; at most Retention.
	JobTTL time.Duration
	// MaxPendingJobs bounds the jobs accepted and not yet run; beyond it
	// the asynchronous route answers 503 with Retry-After. Default 10,000.
	MaxPendingJobs int
	// RequestTimeout bounds how long a write waits to be planned. Default
	// 10 s. A write already in an append waits for the append to end.
	RequestTimeout time.Duration
	// CommitTimeout bounds one append and one read-back. Default 10 s.
	CommitTimeout time.Duration
	// RepublishAfter is how long a job may go without being (re)published
	// to the queue before the ledger publishes it again. Default 1 min.
	RepublishAfter time.Duration
	// PumpInterval is how often pending jobs are checked for expiry and
	// republication. Default 5 s.
	PumpInterval time.Duration
	// Faults switch guarantees off; tests only.
	Faults Faults
	Logger *slog.Logger
	Now    func() time.Time
}

func (c Config) withDefaults() (Config, error) {
	if c.Verifier == nil || c.Audit == nil || c.Idempotency == nil || c.Queue == nil || c.JobKeys == nil || c.PolicyFile == "" {
		return c, errors.New("ledger: Verifier, Audit, Idempotency, Queue, JobKeys and PolicyFile are required")
	}
	if c.Faults.any() && !testingBinary() {
		return c, errors.New("ledger: Faults are for tests only")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Retention, DefaultRetention)
	def(&c.JobTTL, DefaultJobTTL)
	def(&c.RequestTimeout, DefaultRequestTimeout)
	def(&c.CommitTimeout, DefaultCommitTimeout)
	def(&c.RepublishAfter, DefaultRepublishAfter)
	def(&c.PumpInterval, DefaultPumpInterval)
	if c.JobTTL > c.Retention {
		return c, fmt.Errorf("ledger: JobTTL %v is longer than Retention %v", c.JobTTL, c.Retention)
	}
	if c.MaxPendingJobs <= 0 {
		c.MaxPendingJobs = DefaultMaxPendingJobs
	}
	return c, nil
}

// Service is the ledger. It is safe for concurrent use.
type Service struct {
	cfg   Config
	book  *book.Book
	seq   *sequencer
	authz *rbac.Middleware
	idem  *idempotency.Middleware
	run   *idempotency.Runner
	pump  *pump
	log   *slog.Logger
	h     http.Handler

	closeOnce sync.Once
}

// New replays the audit chain into balances, completed keys and jobs,
// and starts the ledger's writer. Close stops it.
func New(ctx context.Context, cfg Config) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, book: book.New(cfg.Retention), log: cfg.Logger}
	head, err := cfg.Audit.Replay(ctx, func(e auditlog.Event) error { return s.book.Apply(e.Seq, e.Time, e.Type, e.Payload) })
	if err != nil {
		return nil, fmt.Errorf("ledger: replay audit chain: %w", err)
	}
	s.log.Info("ledger: state rebuilt from the audit chain", "rows", head.Size, "keys", s.book.Keys(), "pending_jobs", s.book.Pending())

	if err := s.loadPolicy(); err != nil {
		return nil, err
	}
	s.idem, err = idempotency.New(idempotency.Config{
		Store: cfg.Idempotency, Principal: Subject, Now: cfg.Now, Logger: cfg.Logger, Retention: cfg.Retention,
	})
	if err != nil {
		return nil, err
	}
	s.run = s.idem.Runner()
	s.seq = &sequencer{
		log: cfg.Audit, book: s.book, logger: cfg.Logger, now: cfg.Now, shared: cfg.Shared, faults: cfg.Faults,
		commitTimeout: cfg.CommitTimeout, jobTTL: cfg.JobTTL, maxPendingJobs: cfg.MaxPendingJobs,
		in: make(chan *op, 4*maxOpsPerBatch), stop: make(chan struct{}), head: head,
	}
	s.seq.start()
	s.pump = newPump(s)
	s.pump.start()
	s.h = s.routes()
	return s, nil
}

func (s *Service) loadPolicy() error {
	if _, err := os.Stat(s.cfg.PolicyFile); errors.Is(err, os.ErrNotExist) {
		b, _ := defaultPolicy.ReadFile("policy.csv")
		if err := os.MkdirAll(filepath.Dir(s.cfg.PolicyFile), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(s.cfg.PolicyFile, b, 0o600); err != nil {
			return err
		}
	}
	enf, err := rbac.NewFileEnforcer(rbac.RBAC, s.cfg.PolicyFile)
	if err != nil {
		return fmt.Errorf("ledger: policy: %w", err)
	}
	// "g, user:*, role:customer": every signed-in user is a customer.
	enf.AddNamedMatchingFunc("g", "KeyMatch", util.KeyMatch)
	if err := enf.LoadPolicy(); err != nil {
		return fmt.Errorf("ledger: policy: %w", err)
	}
	s.authz, err = rbac.New(rbac.Config{Enforcer: enf, Subject: Subject, OnDecision: s.onDecision})
	return err
}

// Close stops the ledger's writer and job pump. Requests still waiting are
// answered 503; appends in progress finish first.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		s.pump.close()
		s.seq.close()
	})
	return nil
}

// Health reports why the ledger cannot write (the chain store unreachable,
// or a chain that does not fold), or nil when it can.
func (s *Service) Health() error {
	if err := s.seq.health(); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	return nil
}

// Stats counts the ledger writer's work since it started.
type Stats struct {
	// Batches and Events: appends committed and the events in them.
	Batches, Events int64
	// Conflicts: appends refused because another writer moved the chain's
	// head (re-planned).
	Conflicts int64
	// ReadBacks: appends whose outcome was unknown, resolved by reading
	// the chain back.
	ReadBacks int64
	// Keys: completed keys in the window; PendingJobs: jobs not yet run.
	Keys, PendingJobs int
}

// Stats returns the writer's counters, for metrics.
func (s *Service) Stats() Stats {
	st := &s.seq.stats
	return Stats{Batches: st.batches.Load(), Events: st.events.Load(), Conflicts: st.conflicts.Load(), ReadBacks: st.readBacks.Load(),
		Keys: s.book.Keys(), PendingJobs: s.book.Pending()}
}

// GrantRole adds "g, subject, role" to the policy file and the live
// policy (the demo seeding grants role:teller and role:auditor this way).
func GrantRole(policyFile, subject, role string) error {
	if subject == "" || role == "" || !validPolicyToken(subject) || !validPolicyToken(role) {
		return errors.New("ledger: invalid subject or role")
	}
	f, err := os.OpenFile(policyFile, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "g, %s, %s\n", subject, role)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func validPolicyToken(s string) bool {
	for _, c := range s {
		if c == ',' || c == '\n' || c == '\r' || c == '"' || c == ' ' {
			return false
		}
	}
	return true
}

// Subject maps verified claims to the RBAC subject: the user's subject
// for user tokens, "service:<client_id>" for service tokens.
func Subject(r *http.Request) (string, bool) {
	if sub, ok := r.Context().Value(believedSubject{}).(string); ok {
		return sub, true
	}
	c, ok := jwtverify.FromContext(r.Context())
	if !ok {
		return "", false
	}
	switch c.Class() {
	case jwtverify.ClassUser:
		return c.Subject(), c.Subject() != ""
	case jwtverify.ClassService:
		return rbac.ServiceSubject(c.ClientID()), c.ClientID() != ""
	}
	return "", false
}

// believedSubject carries the subject [believeClaims] read from an
// unverified token.
type believedSubject struct{}

var problemInvalidToken = problem.Problem{Status: http.StatusUnauthorized, Type: "invalid-token",
	Title: "Invalid token", Detail: "The bearer token is invalid or expired."}

// believeClaims reads the bearer token's claims without checking
// anything and hands its subject to [Subject]: only for
// Faults.NoTokenCheck. A request without a well-formed token and a
// subject is still refused.
func believeClaims(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var c struct {
			Sub      string `json:"sub"`
			ClientID string `json:"client_id"`
			Class    string `json:"token_class"`
		}
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		parts := strings.Split(tok, ".")
		var b []byte
		var err error
		if strings.EqualFold(scheme, "Bearer") && len(parts) == 3 {
			b, err = base64.RawURLEncoding.DecodeString(parts[1])
		}
		if b == nil || err != nil || json.Unmarshal(b, &c) != nil || c.Sub == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="malai", error="invalid_token"`)
			problem.Write(w, r, problemInvalidToken)
			return
		}
		sub := c.Sub
		if c.Class == "service" || c.Class == "" && c.Sub == c.ClientID {
			sub = rbac.ServiceSubject(c.ClientID)
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), believedSubject{}, sub)))
	})
}

// anyClass reports whether Faults.AnyClassOnUserRoutes or
// Faults.AnyClassOnInternalRoutes lifts rt's class requirement.
func (s *Service) anyClass(rt platform.Route) bool {
	f := s.cfg.Faults
	return rt.Token == platform.UserToken && f.AnyClassOnUserRoutes || rt.Token == platform.ServiceToken && f.AnyClassOnInternalRoutes
}

// class is the token class rt requires: want, or any with the fault that
// lifts it.
func (s *Service) class(rt platform.Route, want jwtverify.Class) jwtverify.Class {
	if s.anyClass(rt) {
		return jwtverify.ClassAny
	}
	return want
}

func (s *Service) onDecision(r *http.Request, d rbac.Decision) {
	if d.Allowed {
		return
	}
	s.log.WarnContext(r.Context(), "ledger: access denied", "subject", d.Subject, "object", d.Object, "action", d.Action, "reason", string(d.Reason))
}

// Reload re-reads the policy file (SIGHUP).
func (s *Service) Reload() error { return s.authz.Reload() }

// Handler serves the ledger's routes.
func (s *Service) Handler() http.Handler { return s.h }

// Balances returns the live balances.
func (s *Service) Balances() map[string]int64 { return s.book.Balances() }

// The audiences of identity's two token classes (identity.AudienceUser
// and identity.AudienceService; the ledger does not import identity).
const (
	audienceUser    = "malai-api"
	audienceService = "malai-internal"
)

// routes serves the route table (component.go) behind Config.Verifier.
// Each route takes exactly one token class and one audience: a user token
// minted for the internal audience is no user token here. The
// component's internal listener checks the same with one verifier per
// audience, after the caller check.
func (s *Service) routes() http.Handler {
	v := s.cfg.Verifier
	mux := http.NewServeMux()
	for _, rt := range s.Table() {
		h := rt.Handler
		switch {
		case s.cfg.Faults.NoTokenCheck:
			// Table has put believeClaims in front.
		case rt.Token == platform.UserToken:
			h = v.Require(jwtverify.Requirement{Class: s.class(rt, jwtverify.ClassUser), Scopes: rt.Scopes(), Audiences: []string{audienceUser}})(h)
		case rt.Token == platform.ServiceToken:
			h = v.Require(jwtverify.Requirement{Class: s.class(rt, jwtverify.ClassService), Scopes: rt.Scopes(), Audiences: []string{audienceService}})(h)
		}
		mux.Handle(rt.Pattern, h)
	}
	// An unknown route or method answers problem+json, like every other
	// refusal.
	routed := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "" {
			platform.NoRoute(w, r, mux)
			return
		}
		mux.ServeHTTP(w, r)
	})
	// RecordPattern hands the matched route to the correlation middleware
	// outside, for logs, spans and metrics.
	if s.cfg.Faults.NoTokenCheck {
		return route.RecordPattern(routed)
	}
	return v.Handler(route.RecordPattern(routed))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// The problems the ledger answers with (slugs in docs/problems.md).
var (
	problemBadJSON = problem.Problem{Status: http.StatusBadRequest, Type: "invalid-body", Title: "Invalid request body",
		Detail: "The body must be one JSON object with exactly the documented members: no duplicate or case-variant names, no unknown members, valid UTF-8."}
	problemBodyTooLarge = problem.Problem{Status: http.StatusRequestEntityTooLarge, Type: "payload-too-large", Title: "Request body too large"}
	problemMediaType    = problem.Problem{Status: http.StatusUnsupportedMediaType, Type: "unsupported-media-type", Title: "Unsupported media type",
		Detail: "The body must be application/json."}
	problemNotFound   = problem.Problem{Status: http.StatusNotFound, Type: "not-found", Title: "Not found"}
	problemJobExpired = problem.Problem{Status: http.StatusGone, Type: "job-expired", Title: "Job expired",
		Detail: "The asynchronous transfer was not run before it expired; nothing was transferred."}
	problemQueueFull = problem.Problem{Status: http.StatusServiceUnavailable, Type: "queue-full", Title: "Too many pending transfers",
		Detail: "The queue of asynchronous transfers is full; retry later with the same Idempotency-Key."}
	problemForgedJob = problem.Problem{Status: http.StatusForbidden, Type: "forbidden", Title: "Forbidden",
		Detail: "The job was not issued by this ledger."}
)

var errQueueFull = errors.New("ledger: job queue full")

func bookProblem(err error) problem.Problem {
	switch {
	case errors.Is(err, book.ErrInvalid):
		return problem.Problem{Status: 422, Type: "invalid-transfer", Title: "Invalid request",
			Detail: "Check the account ids (3-64 of a-z, 0-9, '-', '_'), that they differ, and that the amount is between 1 and " + strconv.Itoa(book.MaxAmount) + "."}
	case errors.Is(err, book.ErrNoAccount), errors.Is(err, book.ErrNotOwner):
		// Someone else's account looks exactly like a missing one.
		return problem.Problem{Status: 404, Type: "not-found", Title: "Not found", Detail: "No such account."}
	case errors.Is(err, book.ErrFunds):
		return problem.Problem{Status: 422, Type: "insufficient-funds", Title: "Insufficient funds"}
	case errors.Is(err, book.ErrAccountExists):
		return problem.Problem{Status: 409, Type: "account-exists", Title: "Account already exists"}
	case errors.Is(err, book.ErrTooMany):
		return problem.Problem{Status: 409, Type: "too-many-accounts", Title: "Too many accounts",
			Detail: "One customer may open at most " + strconv.Itoa(book.MaxAccountsPerOwner) + " accounts."}
	}
	return problem.Internal
}

// problemOutcome renders p as a stored response body: the same members
// problem.Write sends, written even when the client has gone, so the
// record a retry replays is the problem and never an empty 200.
func problemOutcome(p problem.Problem, cid string) outcome {
	b := map[string]any{"type": problem.TypeURI(p.Type), "title": p.Title, "status": p.Status}
	if p.Detail != "" {
		b["detail"] = p.Detail
	}
	if cid != "" {
		b["correlation_id"] = cid
	}
	body, _ := json.Marshal(b)
	return outcome{status: p.Status, header: http.Header{"Content-Type": {problem.ContentType}}, body: body}
}

func correlationID(ctx context.Context) string {
	id, _ := correlation.FromContext(ctx)
	return id
}

// sync makes the book current with the chain before a read, when other
// replicas write to it.
func (s *Service) sync(r *http.Request) bool {
	if !s.cfg.Shared {
		return true
	}
	out := s.seq.submit(newOp(opSync), s.cfg.RequestTimeout)
	return out.err == nil
}

func (s *Service) writeUnavailable(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Retry-After", "1")
	problem.Write(w, r, problem.Unavailable)
}

func (s *Service) listAccounts(w http.ResponseWriter, r *http.Request) {
	if !s.sync(r) {
		s.writeUnavailable(w, r)
		return
	}
	sub, _ := Subject(r)
	accts := s.book.Accounts(sub)
	if accts == nil {
		accts = []book.Account{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"accounts": accts})
}

func (s *Service) ownAccount(w http.ResponseWriter, r *http.Request) (book.Account, bool) {
	if !s.sync(r) {
		s.writeUnavailable(w, r)
		return book.Account{}, false
	}
	sub, _ := Subject(r)
	a, ok := s.book.Account(r.PathValue("id"))
	if !ok || (a.Owner != sub && !s.cfg.Faults.NoOwnerCheck) {
		problem.Write(w, r, problemNotFound)
		return book.Account{}, false
	}
	return a, true
}

func (s *Service) getAccount(w http.ResponseWriter, r *http.Request) {
	if a, ok := s.ownAccount(w, r); ok {
		writeJSON(w, http.StatusOK, a)
	}
}

func (s *Service) listTransfers(w http.ResponseWriter, r *http.Request) {
	a, ok := s.ownAccount(w, r)
	if !ok {
		return
	}
	limit := 20
	if q := r.URL.Query().Get("limit"); q != "" {
		n, err := strconv.Atoi(q)
		if err != nil || n < 1 || n > book.HistoryPerAccount {
			problem.Write(w, r, problem.Problem{Status: 400, Type: "invalid-limit", Title: "Invalid limit",
				Detail: "limit must be between 1 and " + strconv.Itoa(book.HistoryPerAccount) + "."})
			return
		}
		limit = n
	}
	writeJSON(w, http.StatusOK, map[string]any{"transfers": s.book.History(a.ID, limit)})
}

// Fold returns a fold of audit events into balances and a function that
// reads the balances, for offline replay (the verify command).
func Fold() (fold func(auditlog.Event) error, balances func() map[string]int64) {
	b := book.New(DefaultRetention)
	return func(e auditlog.Event) error { return b.Apply(e.Seq, e.Time, e.Type, e.Payload) }, b.Balances
}
