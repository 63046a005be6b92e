package book

import (
	"encoding/base64"
	"encoding/hex"
	"time"
)

var b64 = base64.RawURLEncoding

// FormatKey encodes a key hash for Op.Key.
func FormatKey(k KeyHash) string { return b64.EncodeToString(k[:]) }

// FormatFP encodes a fingerprint for Op.FP.
func FormatFP(fp [32]byte) string { return hex.EncodeToString(fp[:]) }

func parseFP(s string) ([32]byte, bool) {
	var fp [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(fp) {
		return fp, false
	}
	copy(fp[:], b)
	return fp, true
}

// Plan is a tentative overlay over a book: it answers as if the requests
// planned so far were applied, without changing the book. The ledger plans
// a batch of requests in order, appends the batch's events in one commit,
// and folds them with [Book.Apply] once they are durable; a failed commit
// discards the plan. Only the book's single writer plans.
type Plan struct {
	b       *Book
	delta   map[string]int64
	opened  map[string]string
	owned   map[string]int
	keys    map[KeyHash]int
	jobsRun map[string]bool
	pending int
}

// NewPlan starts an empty plan over b.
func (b *Book) NewPlan() *Plan {
	return &Plan{b: b, delta: map[string]int64{}, opened: map[string]string{}, owned: map[string]int{},
		keys: map[KeyHash]int{}, jobsRun: map[string]bool{}}
}

func (p *Plan) account(id string) (owner string, balance int64, ok bool) {
	if o, ok := p.opened[id]; ok {
		return o, p.delta[id], true
	}
	p.b.mu.RLock()
	a, ok := p.b.accounts[id]
	var bal int64
	if ok {
		owner, bal = a.Owner, a.Balance
	}
	p.b.mu.RUnlock()
	return owner, bal + p.delta[id], ok
}

// Key reports whether k is completed in the book (e) or planned earlier in
// this plan (planned >= 0: the position Plan.ClaimKey was given).
func (p *Plan) Key(k KeyHash) (e KeyEntry, known bool, planned int) {
	if i, ok := p.keys[k]; ok {
		return KeyEntry{}, false, i
	}
	e, known = p.b.Key(k)
	return e, known, -1
}

// ClaimKey records that the request at position i of the batch produces
// k's outcome.
func (p *Plan) ClaimKey(k KeyHash, i int) { p.keys[k] = i }

// Open checks that owner may open account id.
func (p *Plan) Open(id, owner string) error {
	if !ValidID(id) || owner == "" {
		return ErrInvalid
	}
	if _, _, ok := p.account(id); ok {
		return ErrAccountExists
	}
	p.b.mu.RLock()
	n := p.b.owned[owner]
	p.b.mu.RUnlock()
	if n+p.owned[owner] >= MaxAccountsPerOwner {
		return ErrTooMany
	}
	p.opened[id] = owner
	p.owned[owner]++
	return nil
}

// Owner returns the owner of account id as planned.
func (p *Plan) Owner(id string) (string, bool) {
	o, _, ok := p.account(id)
	return o, ok
}

// ValidAmount reports whether amount is within (0, MaxAmount].
func ValidAmount(amount int64) bool { return amount > 0 && amount <= MaxAmount }

// Deposit checks and plans a deposit into account.
func (p *Plan) Deposit(account string, amount int64) error {
	if !ValidID(account) || !ValidAmount(amount) {
		return ErrInvalid
	}
	if _, _, ok := p.account(account); !ok {
		return ErrNoAccount
	}
	p.delta[account] += amount
	return nil
}

// CheckTransfer checks a transfer by principal (the owner of the source)
// without planning it.
func (p *Plan) CheckTransfer(principal string, r TransferRequest) error {
	if !ValidID(r.From) || !ValidID(r.To) || r.From == r.To || !ValidAmount(r.Amount) {
		return ErrInvalid
	}
	owner, bal, ok := p.account(r.From)
	if !ok {
		return ErrNoAccount
	}
	if owner != principal {
		return ErrNotOwner
	}
	if _, _, ok := p.account(r.To); !ok {
		return ErrNoAccount
	}
	if bal < r.Amount {
		return ErrFunds
	}
	return nil
}

// Transfer checks and plans a transfer by principal.
func (p *Plan) Transfer(principal string, r TransferRequest) error {
	if err := p.CheckTransfer(principal, r); err != nil {
		return err
	}
	p.delta[r.From] -= r.Amount
	p.delta[r.To] += r.Amount
	return nil
}

// Job returns job id as planned: ok false when unknown; ran true when it
// already ran (in the book or earlier in this plan).
func (p *Plan) Job(id string) (j Job, ok, ran bool) {
	if p.jobsRun[id] {
		j, _ = p.b.Job(id)
		return j, true, true
	}
	j, ok = p.b.Job(id)
	return j, ok, ok && j.Done
}

// RunJob records that job id runs in this plan.
func (p *Plan) RunJob(id string) {
	p.jobsRun[id] = true
	p.pending--
}

// AcceptJob records a new job in this plan (it counts as pending).
func (p *Plan) AcceptJob(string) {
	p.pending++
}

// Pending counts the jobs pending as planned.
func (p *Plan) Pending() int { return p.b.Pending() + p.pending }

// ExpiredAt reports whether a job that expires at exp has expired at now.
func ExpiredAt(exp, now time.Time) bool { return !now.Before(exp) }
