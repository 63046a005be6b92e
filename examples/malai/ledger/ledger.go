// Package ledger is the ledger domain of the Malai reference system:
// accounts and transfers whose every change is an event in the audit
// chain, so that balances are a fold of the chain.
//
// Each request is verified again here (the second JWT layer: signature,
// expiry, audience, issuer, token class), authorised by Casbin RBAC on the
// route pattern, and every write carries an Idempotency-Key. The
// asynchronous path puts the same key, and a job signed by the ledger, on
// the queue; the worker hands both back on an internal route that accepts
// only service tokens, and the ledger runs the job under the record key a
// synchronous retry would meet, so one key has one effect whichever path
// runs first.
package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/casbin/casbin/v2/util"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/correlation"
	"github.com/malai-sec/malai/examples/malai/internal/queue"
	"github.com/malai-sec/malai/examples/malai/ledger/internal/book"
	"github.com/malai-sec/malai/idempotency"
	"github.com/malai-sec/malai/internal/reqid"
	"github.com/malai-sec/malai/jwtverify"
	"github.com/malai-sec/malai/problem"
	"github.com/malai-sec/malai/rbac"
)

// Scopes the ledger requires.
const (
	ScopeRead     = "ledger:read"
	ScopeWrite    = "ledger:write"
	ScopeTransfer = "ledger:transfer"
	ScopeAudit    = "ledger:audit"
)

// SyncTransferPattern is the route whose idempotency records the worker
// shares.
const SyncTransferPattern = "POST /v1/transfers"

//go:embed policy.csv
var defaultPolicy embed.FS

// Config configures the ledger.
type Config struct {
	// Verifier is the ledger's own JWT verifier (the second layer).
	Verifier *jwtverify.Verifier
	// Audit is the hash-chained log every ledger event is appended to.
	Audit *auditlog.Log
	// Idempotency keeps Idempotency-Key records.
	Idempotency idempotency.Store
	// Queue carries asynchronous transfers to the worker.
	Queue queue.Queue
	// PolicyFile is the Casbin policy (CSV). Created with the default
	// policy when missing; Reload re-reads it.
	PolicyFile string
	Logger     *slog.Logger
	Now        func() time.Time
}

// Service is the ledger. It is safe for concurrent use.
type Service struct {
	cfg    Config
	book   *book.Book
	writeM sync.Mutex // serialises plan → append → apply
	authz  *rbac.Middleware
	idem   *idempotency.Middleware
	jobKey ed25519.PrivateKey
	log    *slog.Logger
	h      http.Handler
}

// New replays the audit chain into balances and builds the routes.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Verifier == nil || cfg.Audit == nil || cfg.Idempotency == nil || cfg.Queue == nil || cfg.PolicyFile == "" {
		return nil, errors.New("ledger: Verifier, Audit, Idempotency, Queue and PolicyFile are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{cfg: cfg, book: book.New(), log: cfg.Logger}
	head, err := cfg.Audit.Replay(ctx, func(e auditlog.Event) error { return s.book.Apply(e.Type, e.Payload) })
	if err != nil {
		return nil, fmt.Errorf("ledger: replay audit chain: %w", err)
	}
	s.log.Info("ledger: balances rebuilt from the audit chain", "events", head.Size)

	if _, err := os.Stat(cfg.PolicyFile); errors.Is(err, os.ErrNotExist) {
		b, _ := defaultPolicy.ReadFile("policy.csv")
		if err := os.MkdirAll(filepath.Dir(cfg.PolicyFile), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(cfg.PolicyFile, b, 0o644); err != nil {
			return nil, err
		}
	}
	enf, err := rbac.NewFileEnforcer(rbac.RBAC, cfg.PolicyFile)
	if err != nil {
		return nil, fmt.Errorf("ledger: policy: %w", err)
	}
	// "g, user:*, role:customer": every signed-in user is a customer.
	enf.AddNamedMatchingFunc("g", "KeyMatch", util.KeyMatch)
	if err := enf.LoadPolicy(); err != nil {
		return nil, fmt.Errorf("ledger: policy: %w", err)
	}
	s.authz, err = rbac.New(rbac.Config{Enforcer: enf, Subject: Subject, OnDecision: s.onDecision})
	if err != nil {
		return nil, err
	}
	s.idem, err = idempotency.New(idempotency.Config{
		Store:        cfg.Idempotency,
		Principal:    Subject,
		Canonicalize: idempotency.CanonicalJSON,
		MaxBodyBytes: 16 << 10,
		Now:          cfg.Now,
		Logger:       cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	_, s.jobKey, err = ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	s.h = s.routes()
	return s, nil
}

// Subject maps verified claims to the RBAC subject: "user:<name>" for
// user tokens, "service:<client_id>" for service tokens.
func Subject(r *http.Request) (string, bool) {
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

// Balances returns the live balances (for the evidence pass).
func (s *Service) Balances() map[string]int64 { return s.book.Balances() }

func (s *Service) routes() http.Handler {
	v := s.cfg.Verifier
	user := func(scope string, h http.Handler) http.Handler {
		return v.RequireUser(scope)(s.authz.Handler(h))
	}
	service := func(scope string, h http.Handler) http.Handler {
		return v.RequireService(scope)(s.authz.Handler(h))
	}
	mux := http.NewServeMux()
	mux.Handle("POST /v1/accounts", user(ScopeWrite, http.HandlerFunc(s.openAccount)))
	mux.Handle("GET /v1/accounts", user(ScopeRead, http.HandlerFunc(s.listAccounts)))
	mux.Handle("GET /v1/accounts/{id}", user(ScopeRead, http.HandlerFunc(s.getAccount)))
	mux.Handle(SyncTransferPattern, user(ScopeWrite, s.idem.Handler(http.HandlerFunc(s.transfer))))
	mux.Handle("POST /v1/transfers/async", user(ScopeWrite, s.idem.Handler(http.HandlerFunc(s.transferAsync))))
	mux.Handle("POST /internal/v1/transfers", service(ScopeTransfer, http.HandlerFunc(s.runJob)))
	mux.Handle("GET /internal/v1/audit/sample", service(ScopeAudit, http.HandlerFunc(s.auditSample)))
	mux.Handle("GET /internal/v1/audit/replay", service(ScopeAudit, http.HandlerFunc(s.auditReplay)))
	// RecordPattern hands the matched route to the correlation middleware
	// outside, for logs, spans and metrics.
	return v.Handler(correlation.RecordPattern(mux))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

var (
	errBadJSON = problem.Problem{Status: http.StatusBadRequest, Type: "invalid-body", Title: "Invalid request body",
		Detail: "The body must be one JSON object with the documented fields."}
	errNotFound = problem.Problem{Status: http.StatusNotFound, Type: "not-found", Title: "Not found"}
)

func bookProblem(err error) problem.Problem {
	switch {
	case errors.Is(err, book.ErrInvalid):
		return problem.Problem{Status: 422, Type: "invalid-transfer", Title: "Invalid transfer",
			Detail: "Check the account ids (3-64 of a-z, 0-9, '-', '_') and that the amount is positive."}
	case errors.Is(err, book.ErrNoAccount), errors.Is(err, book.ErrNotOwner):
		// Someone else's account looks exactly like a missing one.
		return problem.Problem{Status: 404, Type: "not-found", Title: "Not found", Detail: "No such account."}
	case errors.Is(err, book.ErrFunds):
		return problem.Problem{Status: 422, Type: "insufficient-funds", Title: "Insufficient funds"}
	case errors.Is(err, book.ErrAccountExists):
		return problem.Problem{Status: 409, Type: "account-exists", Title: "Account already exists"}
	}
	return problem.Internal
}

// decode reads one JSON object with only known fields.
func decode(r io.Reader, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return false
	}
	_, err := dec.Token()
	return errors.Is(err, io.EOF)
}

// append writes one event to the audit chain (durably) and folds it. The
// row's actor is the ledger itself; the user who asked is inside the
// payload ("owner", "by"), which is sealed at rest, so no user name is
// written to disk in plaintext.
func (s *Service) append(ctx context.Context, typ string, payload any) error {
	b, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	cid, _ := reqid.FromContext(ctx)
	if _, err := s.cfg.Audit.Append(ctx, auditlog.Event{Type: typ, Actor: "service:ledger", CorrelationID: cid, Payload: b}); err != nil {
		return fmt.Errorf("ledger: audit append: %w", err)
	}
	return s.book.Apply(typ, b)
}

func (s *Service) openAccount(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ID string `json:"id"`
	}
	if !decode(r.Body, &req) {
		problem.Write(w, r, errBadJSON)
		return
	}
	sub, _ := Subject(r)
	s.writeM.Lock()
	defer s.writeM.Unlock()
	ev, err := s.book.OpenAccount(req.ID, sub)
	if err != nil {
		problem.Write(w, r, bookProblem(err))
		return
	}
	if err := s.append(r.Context(), book.TypeAccountOpened, ev); err != nil {
		s.log.ErrorContext(r.Context(), "ledger: open account", "error", err.Error())
		problem.Write(w, r, problem.Unavailable)
		return
	}
	a, _ := s.book.Account(req.ID)
	writeJSON(w, http.StatusCreated, a)
}

func (s *Service) listAccounts(w http.ResponseWriter, r *http.Request) {
	sub, _ := Subject(r)
	writeJSON(w, http.StatusOK, map[string]any{"accounts": s.book.Accounts(sub)})
}

func (s *Service) getAccount(w http.ResponseWriter, r *http.Request) {
	sub, _ := Subject(r)
	a, ok := s.book.Account(r.PathValue("id"))
	if !ok || a.Owner != sub {
		problem.Write(w, r, errNotFound)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

// TransferRequest is the body of POST /v1/transfers.
type TransferRequest struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Amount int64  `json:"amount"`
}

func newTransferID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return "tr-" + hex.EncodeToString(b[:])
}

// post plans, appends and applies a transfer by principal.
func (s *Service) post(ctx context.Context, principal string, req TransferRequest) (book.TransferPosted, error) {
	s.writeM.Lock()
	defer s.writeM.Unlock()
	ev, err := s.book.PlanTransfer(newTransferID(), principal, req.From, req.To, req.Amount, false)
	if err != nil {
		return ev, err
	}
	return ev, s.append(ctx, book.TypeTransferPosted, ev)
}

func (s *Service) transfer(w http.ResponseWriter, r *http.Request) {
	var req TransferRequest
	if !decode(r.Body, &req) {
		problem.Write(w, r, errBadJSON)
		return
	}
	sub, _ := Subject(r)
	ev, err := s.post(r.Context(), sub, req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, ev)
}

func (s *Service) writeError(w http.ResponseWriter, r *http.Request, err error) {
	p := bookProblem(err)
	if p.Status >= 500 {
		s.log.ErrorContext(r.Context(), "ledger: transfer failed", "error", err.Error())
		p = problem.Unavailable
	}
	problem.Write(w, r, p)
}

// Job is what the ledger puts on the queue: the verified principal, the
// client's key and the canonical body, signed by the ledger so the worker
// can only run jobs the ledger accepted from a verified user.
type Job struct {
	Principal string `json:"principal"`
	Key       string `json:"key"`
	Body      []byte `json:"body"`
	Sig       []byte `json:"sig"`
}

func jobMessage(j Job) []byte {
	msg := make([]byte, 0, len(j.Principal)+len(j.Key)+len(j.Body)+32)
	for _, part := range [][]byte{[]byte(j.Principal), []byte(j.Key), j.Body} {
		msg = fmt.Appendf(msg, "%d:", len(part))
		msg = append(msg, part...)
	}
	return msg
}

func (s *Service) transferAsync(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 16<<10))
	var req TransferRequest
	if err != nil || !decode(bytes.NewReader(body), &req) {
		problem.Write(w, r, errBadJSON)
		return
	}
	sub, _ := Subject(r)
	// Fail fast on what can be checked now; the worker checks again.
	if _, err := s.book.PlanTransfer("tr-check", sub, req.From, req.To, req.Amount, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	canon, err := idempotency.CanonicalJSON("application/json", body)
	if err != nil {
		problem.Write(w, r, errBadJSON)
		return
	}
	key, _ := idempotency.ParseKey(r.Header.Get(idempotency.HeaderKey))
	j := Job{Principal: sub, Key: key, Body: canon}
	j.Sig = ed25519.Sign(s.jobKey, jobMessage(j))
	jb, _ := json.Marshal(j)
	cid, _ := reqid.FromContext(r.Context())
	if _, err := s.cfg.Queue.Publish(r.Context(), queue.Message{IdempotencyKey: key, Principal: sub, CorrelationID: cid, Body: jb}); err != nil {
		s.log.ErrorContext(r.Context(), "ledger: enqueue", "error", err.Error())
		problem.Write(w, r, problem.Unavailable)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "queued"})
}

// runJob executes a queued transfer for the worker, under the record key
// a synchronous POST /v1/transfers with the same key would use.
func (s *Service) runJob(w http.ResponseWriter, r *http.Request) {
	var j Job
	if !decode(r.Body, &j) || !ed25519.Verify(s.jobKey.Public().(ed25519.PublicKey), jobMessage(j), j.Sig) {
		problem.Write(w, r, problem.Problem{Status: http.StatusForbidden, Type: "forbidden", Title: "Forbidden",
			Detail: "The job was not issued by this ledger."})
		return
	}
	var req TransferRequest
	if !decode(bytes.NewReader(j.Body), &req) {
		problem.Write(w, r, errBadJSON)
		return
	}
	key := idempotency.RecordKey(j.Principal, http.MethodPost, SyncTransferPattern, j.Key)
	res, replayed, err := s.idem.Runner().Do(r.Context(), key, idempotency.Fingerprint(j.Body, nil),
		func(ctx context.Context, _ *idempotency.Lease) (idempotency.Result, error) {
			ev, err := s.post(ctx, j.Principal, req)
			if err != nil {
				p := bookProblem(err)
				if p.Status >= 500 {
					return idempotency.Result{}, err
				}
				b, _ := json.Marshal(map[string]any{"type": problem.TypeURI(p.Type), "title": p.Title, "status": p.Status, "detail": p.Detail})
				return idempotency.Result{Status: p.Status, Header: http.Header{"Content-Type": {problem.ContentType}}, Body: b}, nil
			}
			b, _ := json.Marshal(ev)
			return idempotency.Result{Status: http.StatusCreated, Header: http.Header{"Content-Type": {"application/json"}}, Body: b}, nil
		})
	if err != nil && res.Status == 0 {
		// In flight elsewhere (409), reused with another payload (422),
		// or the store is down (503): the same answers as the sync route.
		s.idem.WriteError(w, r, err)
		return
	}
	if err != nil {
		// The transfer ran but its record could not be stored.
		s.log.WarnContext(r.Context(), "ledger: job result not recorded", "error", err.Error())
	}
	idempotency.WriteResult(w, r, res, replayed)
}

func (s *Service) auditSample(w http.ResponseWriter, r *http.Request) {
	sm, err := s.cfg.Audit.Sample(r.Context(), auditlog.SampleConfig{N: 10, Redact: []string{"payload.by", "payload.owner"}})
	if err != nil {
		s.log.ErrorContext(r.Context(), "ledger: audit sample", "error", err.Error())
		problem.Write(w, r, problem.Unavailable)
		return
	}
	writeJSON(w, http.StatusOK, sm)
}

// ReplayReport compares a fresh fold of the chain with the live balances.
type ReplayReport struct {
	Events   uint64           `json:"events"`
	Replayed map[string]int64 `json:"replayed"`
	Live     map[string]int64 `json:"live"`
	Match    bool             `json:"match"`
}

func (s *Service) auditReplay(w http.ResponseWriter, r *http.Request) {
	s.writeM.Lock() // a consistent cut: no write between fold and snapshot
	fresh := book.New()
	head, err := s.cfg.Audit.Replay(r.Context(), func(e auditlog.Event) error { return fresh.Apply(e.Type, e.Payload) })
	live := s.book.Balances()
	s.writeM.Unlock()
	if err != nil {
		s.log.ErrorContext(r.Context(), "ledger: replay", "error", err.Error())
		problem.Write(w, r, problem.Unavailable)
		return
	}
	rep := ReplayReport{Events: head.Size, Replayed: fresh.Balances(), Live: live}
	rep.Match = equal(rep.Replayed, rep.Live)
	writeJSON(w, http.StatusOK, rep)
}

func equal(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// Fold returns a fold of audit events into balances and a function that
// reads the balances, for offline replay (the verify command).
func Fold() (fold func(auditlog.Event) error, balances func() map[string]int64) {
	b := book.New()
	return func(e auditlog.Event) error { return b.Apply(e.Type, e.Payload) }, b.Balances
}
