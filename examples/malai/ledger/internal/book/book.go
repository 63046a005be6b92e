// Package book is the ledger's domain model: accounts and transfers, and
// the fold that turns the audit chain's events into balances.
//
// The ledger never updates a balance except by appending an event to the
// audit chain and folding it here, so replaying the chain from the start
// reproduces every balance exactly.
package book

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"sync"
)

// Event types appended to the audit chain.
const (
	TypeAccountOpened  = "ledger.account_opened"
	TypeTransferPosted = "ledger.transfer_posted"
)

// OpeningCredit is the demo credit every new account starts with, in
// minor units.
const OpeningCredit = 100_00

// Errors a client may see (mapped to problem+json by the ledger).
var (
	ErrNoAccount     = errors.New("book: no such account")
	ErrNotOwner      = errors.New("book: account belongs to someone else")
	ErrFunds         = errors.New("book: insufficient funds")
	ErrInvalid       = errors.New("book: invalid transfer")
	ErrAccountExists = errors.New("book: account already exists")
)

// AccountOpened is the payload of TypeAccountOpened.
type AccountOpened struct {
	Account string `json:"account"`
	Owner   string `json:"owner"`
	Credit  int64  `json:"credit"`
}

// TransferPosted is the payload of TypeTransferPosted.
type TransferPosted struct {
	Transfer string `json:"transfer"`
	From     string `json:"from"`
	To       string `json:"to"`
	Amount   int64  `json:"amount"`
	By       string `json:"by"`
}

// Account is one account's state.
type Account struct {
	ID      string `json:"id"`
	Owner   string `json:"owner"`
	Balance int64  `json:"balance"`
}

// Book holds accounts. It is safe for concurrent use.
type Book struct {
	mu       sync.RWMutex
	accounts map[string]*Account
	applied  int64
}

// New returns an empty book.
func New() *Book { return &Book{accounts: map[string]*Account{}} }

var idRe = regexp.MustCompile(`^[a-z0-9_-]{3,64}$`)

// ValidID reports whether s is an acceptable account or transfer id.
func ValidID(s string) bool { return idRe.MatchString(s) }

// Apply folds one event into the book. Unknown event types are ignored
// (the chain also holds non-ledger events such as access decisions).
func (b *Book) Apply(typ string, payload []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch typ {
	case TypeAccountOpened:
		var e AccountOpened
		if err := json.Unmarshal(payload, &e); err != nil {
			return fmt.Errorf("book: bad %s payload: %w", typ, err)
		}
		if _, ok := b.accounts[e.Account]; ok {
			return fmt.Errorf("%w: %s", ErrAccountExists, e.Account)
		}
		b.accounts[e.Account] = &Account{ID: e.Account, Owner: e.Owner, Balance: e.Credit}
	case TypeTransferPosted:
		var e TransferPosted
		if err := json.Unmarshal(payload, &e); err != nil {
			return fmt.Errorf("book: bad %s payload: %w", typ, err)
		}
		from, to := b.accounts[e.From], b.accounts[e.To]
		if from == nil || to == nil {
			return fmt.Errorf("%w in transfer %s", ErrNoAccount, e.Transfer)
		}
		if e.Amount <= 0 || from.Balance < e.Amount {
			return fmt.Errorf("%w: transfer %s", ErrFunds, e.Transfer)
		}
		from.Balance -= e.Amount
		to.Balance += e.Amount
	default:
		return nil
	}
	b.applied++
	return nil
}

// OpenAccount checks that id is free and returns the event to append.
func (b *Book) OpenAccount(id, owner string) (AccountOpened, error) {
	if !ValidID(id) || owner == "" {
		return AccountOpened{}, ErrInvalid
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if _, ok := b.accounts[id]; ok {
		return AccountOpened{}, ErrAccountExists
	}
	return AccountOpened{Account: id, Owner: owner, Credit: OpeningCredit}, nil
}

// PlanTransfer checks a transfer requested by principal (who must own the
// source account unless asService) against the current book and returns
// the event to append. The caller serialises plan+append+apply.
func (b *Book) PlanTransfer(id, principal, from, to string, amount int64, asService bool) (TransferPosted, error) {
	if !ValidID(id) || !ValidID(from) || !ValidID(to) || from == to || amount <= 0 || amount > 1_000_000_00 {
		return TransferPosted{}, ErrInvalid
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	src, dst := b.accounts[from], b.accounts[to]
	if src == nil || dst == nil {
		return TransferPosted{}, ErrNoAccount
	}
	if !asService && src.Owner != principal {
		return TransferPosted{}, ErrNotOwner
	}
	if src.Balance < amount {
		return TransferPosted{}, ErrFunds
	}
	return TransferPosted{Transfer: id, From: from, To: to, Amount: amount, By: principal}, nil
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
