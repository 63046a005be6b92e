// Package book is the ledger's domain model and the fold of its audit
// chain: accounts and balances, the Idempotency-Keys completed inside the
// retention window, and the asynchronous jobs.
//
// The ledger never changes state except by appending events to the chain
// and folding them here ([Book.Apply]); replaying the chain from the start
// rebuilds everything exactly. Decisions are made by a [Plan] over the
// book (a tentative overlay, so a batch of requests is checked as if
// applied in order) and only become state once their events are durable.
package book

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"sync"
	"time"
)

// Event types appended to the audit chain.
const (
	TypeAccountOpened  = "ledger.account_opened"
	TypeDepositPosted  = "ledger.deposit_posted"
	TypeTransferPosted = "ledger.transfer_posted"
	TypeRefused        = "ledger.request_refused"
	TypeJobAccepted    = "ledger.job_accepted"
)

// Limits.
const (
	// MaxAmount is the largest amount of one transfer or deposit, in minor
	// units.
	MaxAmount = 1_000_000_00
	// MaxAccountsPerOwner bounds the accounts one principal may open.
	MaxAccountsPerOwner = 16
	// HistoryPerAccount is how many recent movements are kept per account
	// for listing.
	HistoryPerAccount = 100
)

// Errors a plan returns (mapped to problem+json by the ledger).
var (
	ErrNoAccount     = errors.New("book: no such account")
	ErrNotOwner      = errors.New("book: account belongs to someone else")
	ErrFunds         = errors.New("book: insufficient funds")
	ErrInvalid       = errors.New("book: invalid request")
	ErrAccountExists = errors.New("book: account already exists")
	ErrTooMany       = errors.New("book: too many accounts")
	ErrKeyReused     = errors.New("book: key reused with another request")
	// ErrCorrupt: an event in the chain cannot be folded (it contradicts
	// the state before it).
	ErrCorrupt = errors.New("book: event does not fold")
)

// Op is what every keyed event records about the request that caused it:
// who asked, the hashed record key, the fingerprint of the canonical
// request, and the response the client was given. Replaying the chain
// therefore rebuilds the completed keys, and a retry whose idempotency
// record was lost still meets its first outcome.
type Op struct {
	Principal string `json:"principal"`
	// Key is the base64url SHA-256 of the idempotency record key (never
	// the client's key in clear). Empty for an event that a job runs (the
	// job's acceptance carries the key) and for unkeyed account openings.
	Key string `json:"key,omitempty"`
	// FP is the hex SHA-256 fingerprint of the canonical request.
	FP string `json:"fp,omitempty"`
	// Job is the job this event accepts or runs.
	Job string `json:"job,omitempty"`
	// Status and Body are the response: 201 and the resource, 202 and the
	// job, or a 4xx problem.
	Status int             `json:"status"`
	Body   json.RawMessage `json:"body,omitempty"`
}

// AccountOpened is the payload of TypeAccountOpened. Credit is only set
// by chains written before accounts opened at zero; it is folded as
// written so those chains still replay.
type AccountOpened struct {
	Account string `json:"account"`
	Owner   string `json:"owner"`
	Credit  int64  `json:"credit,omitempty"`
	Op      *Op    `json:"op,omitempty"`
}

// DepositPosted is the payload of TypeDepositPosted.
type DepositPosted struct {
	Deposit string `json:"deposit"`
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
	By      string `json:"by"`
	Op      *Op    `json:"op,omitempty"`
}

// TransferPosted is the payload of TypeTransferPosted.
type TransferPosted struct {
	Transfer string `json:"transfer"`
	From     string `json:"from"`
	To       string `json:"to"`
	Amount   int64  `json:"amount"`
	By       string `json:"by"`
	Op       *Op    `json:"op,omitempty"`
}

// Refused is the payload of TypeRefused: a keyed request refused for a
// reason that depends on the state (funds, an account's existence or
// owner, an expired job), recorded so that a retry meets the same answer.
// Refusals that depend on the request alone (a malformed amount) are not
// recorded: they are the same at every retry.
type Refused struct {
	Reason string `json:"reason"`
	Op     Op     `json:"op"`
}

// TransferRequest is a transfer as a client asks for it.
type TransferRequest struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Amount int64  `json:"amount"`
}

// JobAccepted is the payload of TypeJobAccepted: an asynchronous transfer
// accepted for the worker.
type JobAccepted struct {
	Job     string          `json:"job"`
	Request TransferRequest `json:"request"`
	Expires time.Time       `json:"expires"`
	Op      Op              `json:"op"`
}

// Account is one account's state.
type Account struct {
	ID      string `json:"id"`
	Owner   string `json:"owner"`
	Balance int64  `json:"balance"`
}

// Movement is one entry of an account's recent history.
type Movement struct {
	ID     string    `json:"transfer"`
	Kind   string    `json:"kind"` // "transfer" or "deposit"
	From   string    `json:"from,omitempty"`
	To     string    `json:"to"`
	Amount int64     `json:"amount"`
	At     time.Time `json:"at"`
}

// KeyHash is the SHA-256 of an idempotency record key.
type KeyHash [32]byte

// KeyEntry is a completed key: where its outcome is in the chain.
type KeyEntry struct {
	Seq uint64
	FP  [32]byte
	At  time.Time
	// Job is set when the key's outcome is a job's acceptance.
	Job string
}

// Job states.
const (
	JobQueued    = "queued"
	JobRunning   = "running"
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
)

// Job is an asynchronous transfer and, once run, its outcome.
type Job struct {
	ID       string
	Owner    string
	Key      KeyHash
	FP       [32]byte
	Request  TransferRequest
	Accepted time.Time
	Expires  time.Time
	// Done is set once the job ran (or expired); Status and Body are then
	// its outcome.
	Done   bool
	Status int
	Body   json.RawMessage
}

// State is the job's state as a client sees it.
func (j *Job) State() string {
	switch {
	case !j.Done:
		return JobQueued
	case j.Status < 400:
		return JobSucceeded
	}
	return JobFailed
}

// Book is the folded state. It is safe for concurrent use: one writer
// folds (Apply), any number of readers read.
type Book struct {
	window time.Duration

	mu       sync.RWMutex
	accounts map[string]*Account
	owned    map[string]int
	history  map[string][]Movement
	keys     map[KeyHash]KeyEntry
	keyOrder []keyAt // in chain order, for pruning
	jobs     map[string]*Job
	jobOrder []jobAt
	pending  int // jobs not done
	events   uint64
	rows     uint64 // chain rows folded (every type)
}

type keyAt struct {
	k  KeyHash
	at time.Time
}

type jobAt struct {
	id string
	at time.Time
}

// New returns an empty book that remembers keys and jobs for window.
func New(window time.Duration) *Book {
	return &Book{
		window:   window,
		accounts: map[string]*Account{},
		owned:    map[string]int{},
		history:  map[string][]Movement{},
		keys:     map[KeyHash]KeyEntry{},
		jobs:     map[string]*Job{},
	}
}

var idRe = regexp.MustCompile(`^[a-z0-9_-]{3,64}$`)

// ValidID reports whether s is an acceptable account id.
func ValidID(s string) bool { return idRe.MatchString(s) }

// ParseKey decodes Op.Key.
func ParseKey(s string) (KeyHash, bool) {
	var k KeyHash
	b, err := b64.DecodeString(s)
	if err != nil || len(b) != len(k) {
		return k, false
	}
	copy(k[:], b)
	return k, true
}

// Apply folds one chain event (seq and time as the log assigned them).
// Events of other types are ignored (the chain may hold other
// components' events). An event that contradicts the state before it is
// refused with [ErrCorrupt]: a chain this ledger wrote never holds one.
func (b *Book) Apply(seq uint64, at time.Time, typ string, payload []byte) error {
	v, err := decodeEvent(typ, payload)
	if err != nil {
		return fmt.Errorf("%w: row %d (%s): %w", ErrCorrupt, seq, typ, err)
	}
	return b.ApplyValue(seq, at, typ, v)
}

// ApplyValue is Apply for an event the caller built itself and has not
// parsed back: v is the value whose JSON encoding was appended (one of
// the payload types of this package, by pointer), folded by the same
// code as Apply. A nil v folds an event of another type.
func (b *Book) ApplyValue(seq uint64, at time.Time, typ string, v any) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if seq != b.rows {
		return fmt.Errorf("%w: row %d folded after row %d", ErrCorrupt, seq, int64(b.rows)-1)
	}
	// Forget what left the window before folding, so a key reused after
	// its window is new again, in replay exactly as it was live.
	b.prune(at)
	if err := b.apply(seq, at, v); err != nil {
		return fmt.Errorf("%w: row %d (%s): %w", ErrCorrupt, seq, typ, err)
	}
	b.rows = seq + 1
	if isLedger(typ) {
		b.events++
	}
	return nil
}

// decodeEvent parses a payload of one of the ledger's event types; other
// types decode to nil.
func decodeEvent(typ string, payload []byte) (any, error) {
	var v any
	switch typ {
	case TypeAccountOpened:
		v = new(AccountOpened)
	case TypeDepositPosted:
		v = new(DepositPosted)
	case TypeTransferPosted:
		v = new(TransferPosted)
	case TypeRefused:
		v = new(Refused)
	case TypeJobAccepted:
		v = new(JobAccepted)
	default:
		return nil, nil
	}
	if err := json.Unmarshal(payload, v); err != nil {
		return nil, err
	}
	return v, nil
}

func (b *Book) apply(seq uint64, at time.Time, v any) error {
	switch e := v.(type) {
	case nil:
	case *AccountOpened:
		if _, ok := b.accounts[e.Account]; ok || e.Credit < 0 || e.Owner == "" {
			return ErrAccountExists
		}
		if err := b.checkOp(e.Op, false); err != nil {
			return err
		}
		b.accounts[e.Account] = &Account{ID: e.Account, Owner: e.Owner, Balance: e.Credit}
		b.owned[e.Owner]++
		b.recordKey(e.Op, seq, at)
	case *DepositPosted:
		a := b.accounts[e.Account]
		if a == nil || e.Amount <= 0 {
			return ErrNoAccount
		}
		if err := b.checkOp(e.Op, false); err != nil {
			return err
		}
		a.Balance += e.Amount
		b.remember(e.Account, Movement{ID: e.Deposit, Kind: "deposit", To: e.Account, Amount: e.Amount, At: at})
		b.recordKey(e.Op, seq, at)
	case *TransferPosted:
		from, to := b.accounts[e.From], b.accounts[e.To]
		if from == nil || to == nil || e.From == e.To {
			return ErrNoAccount
		}
		if e.Amount <= 0 || from.Balance < e.Amount {
			return ErrFunds
		}
		if err := b.checkOp(e.Op, true); err != nil {
			return err
		}
		from.Balance -= e.Amount
		to.Balance += e.Amount
		m := Movement{ID: e.Transfer, Kind: "transfer", From: e.From, To: e.To, Amount: e.Amount, At: at}
		b.remember(e.From, m)
		b.remember(e.To, m)
		b.recordKey(e.Op, seq, at)
		b.finishJob(e.Op)
	case *Refused:
		if err := b.checkOp(&e.Op, true); err != nil {
			return err
		}
		b.recordKey(&e.Op, seq, at)
		b.finishJob(&e.Op)
	case *JobAccepted:
		if _, ok := b.jobs[e.Job]; ok || e.Job == "" || e.Op.Job != e.Job {
			return errors.New("job accepted twice")
		}
		if err := b.checkOp(&e.Op, false); err != nil {
			return err
		}
		k, _ := ParseKey(e.Op.Key)
		fp, _ := parseFP(e.Op.FP)
		b.jobs[e.Job] = &Job{ID: e.Job, Owner: e.Op.Principal, Key: k, FP: fp, Request: e.Request, Accepted: at, Expires: e.Expires}
		b.jobOrder = append(b.jobOrder, jobAt{e.Job, at})
		b.pending++
		b.recordKey(&e.Op, seq, at)
	default:
		return fmt.Errorf("unknown event value %T", v)
	}
	return nil
}

// checkOp refuses an op whose key is already completed in the window.
// runsJob is set for the events that run a job (a posted transfer or a
// refusal naming one): the job must be known and not yet run.
func (b *Book) checkOp(op *Op, runsJob bool) error {
	if op == nil {
		return nil
	}
	if op.Key != "" {
		k, ok := ParseKey(op.Key)
		if !ok {
			return errors.New("malformed key")
		}
		if _, ok := parseFP(op.FP); !ok {
			return errors.New("malformed fingerprint")
		}
		if _, dup := b.keys[k]; dup {
			return errors.New("key already completed")
		}
	}
	if runsJob && op.Job != "" {
		j := b.jobs[op.Job]
		if j == nil || j.Done {
			return errors.New("job unknown or already run")
		}
	}
	return nil
}

func (b *Book) recordKey(op *Op, seq uint64, at time.Time) {
	if op == nil || op.Key == "" {
		return
	}
	k, _ := ParseKey(op.Key)
	fp, _ := parseFP(op.FP)
	e := KeyEntry{Seq: seq, FP: fp, At: at}
	if op.Job != "" {
		e.Job = op.Job
	}
	b.keys[k] = e
	b.keyOrder = append(b.keyOrder, keyAt{k, at})
}

func (b *Book) finishJob(op *Op) {
	if op == nil || op.Job == "" {
		return
	}
	j := b.jobs[op.Job]
	j.Done, j.Status, j.Body = true, op.Status, slices.Clone(op.Body)
	b.pending--
}

func (b *Book) remember(account string, m Movement) {
	h := append(b.history[account], m)
	if len(h) > HistoryPerAccount {
		h = slices.Delete(h, 0, len(h)-HistoryPerAccount)
	}
	b.history[account] = h
}

// prune forgets keys and jobs older than the window at now, the time of
// the event being folded: the window moves with the chain, so a replay
// forgets exactly what the live book forgot, and a key stays known for at
// least the window (until the next event after it has passed).
func (b *Book) prune(now time.Time) {
	cut := now.Add(-b.window)
	i := 0
	for ; i < len(b.keyOrder) && b.keyOrder[i].at.Before(cut); i++ {
		k := b.keyOrder[i].k
		if e, ok := b.keys[k]; ok && !e.At.After(b.keyOrder[i].at) {
			delete(b.keys, k)
		}
	}
	if i > 0 {
		// Reslice, not copy: the window moves by a few keys per event,
		// and the backing array is reclaimed when append next grows it.
		clear(b.keyOrder[:i])
		b.keyOrder = b.keyOrder[i:]
	}
	i = 0
	for ; i < len(b.jobOrder) && b.jobOrder[i].at.Before(cut); i++ {
		if j := b.jobs[b.jobOrder[i].id]; j != nil {
			if !j.Done {
				b.pending--
			}
			delete(b.jobs, j.ID)
		}
	}
	if i > 0 {
		clear(b.jobOrder[:i])
		b.jobOrder = b.jobOrder[i:]
	}
}

// Drift credits account by amount (negative: debits) without an event:
// the live state leaves
// the chain. Only the ledger's LiveDrift fault calls it, to show that the
// replay check catches such a bug.
func (b *Book) Drift(account string, amount int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if a := b.accounts[account]; a != nil {
		a.Balance += amount
	}
}

func isLedger(typ string) bool {
	switch typ {
	case TypeAccountOpened, TypeDepositPosted, TypeTransferPosted, TypeRefused, TypeJobAccepted:
		return true
	}
	return false
}

// Snapshot returns every balance and the number of chain rows they fold,
// read together.
func (b *Book) Snapshot() (map[string]int64, uint64) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make(map[string]int64, len(b.accounts))
	for id, a := range b.accounts {
		out[id] = a.Balance
	}
	return out, b.rows
}

// Key returns the completed key k, if it is inside the window.
func (b *Book) Key(k KeyHash) (KeyEntry, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	e, ok := b.keys[k]
	return e, ok
}

// Job returns a copy of job id.
func (b *Book) Job(id string) (Job, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	j, ok := b.jobs[id]
	if !ok {
		return Job{}, false
	}
	return *j, true
}

// PendingJobs returns the jobs accepted and not yet run, oldest first.
func (b *Book) PendingJobs() []Job {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var out []Job
	for _, ja := range b.jobOrder {
		if j := b.jobs[ja.id]; j != nil && !j.Done {
			out = append(out, *j)
		}
	}
	return out
}

// Pending counts the jobs accepted and not yet run.
func (b *Book) Pending() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.pending
}

// Account returns a copy of one account.
func (b *Book) Account(id string) (Account, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	a, ok := b.accounts[id]
	if !ok {
		return Account{}, false
	}
	return *a, true
}

// History returns up to limit of account's recent movements, newest
// first.
func (b *Book) History(account string, limit int) []Movement {
	b.mu.RLock()
	defer b.mu.RUnlock()
	h := b.history[account]
	n := min(limit, len(h))
	out := make([]Movement, 0, n)
	for i := len(h) - 1; i >= len(h)-n; i-- {
		out = append(out, h[i])
	}
	return out
}

// Balances returns every balance, by account id.
func (b *Book) Balances() map[string]int64 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make(map[string]int64, len(b.accounts))
	for id, a := range b.accounts {
		out[id] = a.Balance
	}
	return out
}

// Accounts lists the accounts owned by owner, sorted by id.
func (b *Book) Accounts(owner string) []Account {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var out []Account
	for _, a := range b.accounts {
		if a.Owner == owner {
			out = append(out, *a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Events counts the ledger events folded.
func (b *Book) Events() uint64 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.events
}

// Keys counts the completed keys held (inside the window).
func (b *Book) Keys() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.keys)
}
