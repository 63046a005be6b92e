// Package risk scores sign-in attempts from recent history and decides
// whether to allow them, demand a second factor, or block them.
//
// Signals are counted in a sliding window (15 minutes by default):
// failures per account, per client network, per account and network pair,
// and the number of distinct accounts that failed from one network (the
// shape of credential stuffing). Two signals come from the caller once the
// password has been checked: a network the account has never signed in
// from, and a password found in a compromised-password corpus.
//
// Networks are IPv4 addresses and IPv6 /64 prefixes, so an attacker holding
// a whole IPv6 /64 cannot rotate addresses to reset the counters.
//
// The score is additive; [Score] is a pure function so its table is easy to
// read and to test.
package risk

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// Decision is the outcome of a risk assessment.
type Decision int

const (
	// Allow lets the sign-in proceed with the factors the account has.
	Allow Decision = iota
	// StepUp demands a second factor (TOTP or a recovery code).
	StepUp
	// Block refuses the sign-in whatever the credentials.
	Block
)

func (d Decision) String() string {
	switch d {
	case Allow:
		return "allow"
	case StepUp:
		return "step-up"
	case Block:
		return "block"
	}
	return "unknown"
}

// Score thresholds: below StepUpAt allows, below BlockAt steps up, at or
// above BlockAt blocks.
const (
	StepUpAt = 30
	BlockAt  = 70
)

// Signals are the inputs of a score.
type Signals struct {
	AccountFailures  int  // failures for the account from any network
	PairFailures     int  // failures for the account from this network
	NetworkFailures  int  // failures from this network for any account
	DistinctAccounts int  // distinct accounts that failed from this network
	NewNetwork       bool // the account never signed in from this network
	Breached         bool // the password is in a compromised corpus
}

// Assessment is a scored set of signals.
type Assessment struct {
	Signals
	Score    int
	Decision Decision
	Reasons  []string
}

// Score weighs the signals. The table:
//
//	account failures   >= 3: +10   >= 5: +20   >= 10: +40   >= 20: +70
//	pair failures      >= 3: +15   >= 5: +70
//	network failures  >= 10: +40  >= 30: +70
//	distinct accounts  >= 5: +40  >= 10: +70
//	new network             +20
//	breached password      +100
//
// So a few typos from a known network pass; five failures from one network
// block that network for the account while the owner elsewhere is not
// locked out; a new network combined with recent failures, ten failures
// from anywhere, or five failing accounts from one network ask for a
// second factor; twenty failures on one account, thirty from one network
// or ten failing accounts from one network block.
func Score(s Signals) Assessment {
	a := Assessment{Signals: s}
	add := func(points int, reason string) {
		a.Score += points
		a.Reasons = append(a.Reasons, reason)
	}
	switch {
	case s.AccountFailures >= 20:
		add(70, "account-failures")
	case s.AccountFailures >= 10:
		add(40, "account-failures")
	case s.AccountFailures >= 5:
		add(20, "account-failures")
	case s.AccountFailures >= 3:
		add(10, "account-failures")
	}
	switch {
	case s.PairFailures >= 5:
		add(70, "network-account-failures")
	case s.PairFailures >= 3:
		add(15, "network-account-failures")
	}
	switch {
	case s.NetworkFailures >= 30:
		add(70, "network-failures")
	case s.NetworkFailures >= 10:
		add(40, "network-failures")
	}
	switch {
	case s.DistinctAccounts >= 10:
		add(70, "credential-stuffing")
	case s.DistinctAccounts >= 5:
		add(40, "credential-stuffing")
	}
	if s.NewNetwork {
		add(20, "new-network")
	}
	if s.Breached {
		add(100, "breached-password")
	}
	switch {
	case a.Score >= BlockAt:
		a.Decision = Block
	case a.Score >= StepUpAt:
		a.Decision = StepUp
	}
	return a
}

// Network maps an address to the unit the engine counts: the address
// itself for IPv4 (and IPv4-mapped IPv6), its /64 for IPv6.
func Network(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, err := ip.Prefix(64)
	if err != nil { // the zero Addr
		return netip.Prefix{}
	}
	return p
}

// Engine keeps the failure history. It is safe for concurrent use. Memory
// is bounded: each key keeps at most maxEvents timestamps, keys whose events
// all left the window are swept, and when more than maxKeys are tracked the
// oldest are dropped.
type Engine struct {
	mu      sync.Mutex
	window  time.Duration
	now     func() time.Time
	account map[string]*events
	pair    map[pairKey]*events
	network map[netip.Prefix]*netState
	ops     int
}

type pairKey struct {
	account string
	network netip.Prefix
}

type netState struct {
	failures events
	accounts map[string]time.Time // distinct failing accounts, last seen
}

const (
	maxEvents   = 64
	maxAccounts = 64
	maxKeys     = 200_000
	sweepEvery  = 1024
)

type events struct{ at []time.Time }

func (e *events) add(t time.Time) {
	if len(e.at) == maxEvents {
		copy(e.at, e.at[1:])
		e.at = e.at[:maxEvents-1]
	}
	e.at = append(e.at, t)
}

func (e *events) count(since time.Time) int {
	n := 0
	for _, t := range e.at {
		if t.After(since) {
			n++
		}
	}
	return n
}

func (e *events) last() time.Time {
	if len(e.at) == 0 {
		return time.Time{}
	}
	return e.at[len(e.at)-1]
}

// New returns an engine with the window (15 minutes when zero) and clock.
func New(window time.Duration, now func() time.Time) *Engine {
	if window <= 0 {
		window = 15 * time.Minute
	}
	return &Engine{
		window:  window,
		now:     now,
		account: make(map[string]*events),
		pair:    make(map[pairKey]*events),
		network: make(map[netip.Prefix]*netState),
	}
}

// Assess scores what is known before the password is checked. It depends
// only on the submitted username and the network, never on whether the
// account exists, so its answer cannot reveal that.
func (e *Engine) Assess(account string, network netip.Prefix) Assessment {
	e.mu.Lock()
	defer e.mu.Unlock()
	since := e.now().Add(-e.window)
	var s Signals
	if ev := e.account[account]; ev != nil {
		s.AccountFailures = ev.count(since)
	}
	if ev := e.pair[pairKey{account, network}]; ev != nil {
		s.PairFailures = ev.count(since)
	}
	if ns := e.network[network]; ns != nil {
		s.NetworkFailures = ns.failures.count(since)
		for _, t := range ns.accounts {
			if t.After(since) {
				s.DistinctAccounts++
			}
		}
	}
	return Score(s)
}

// Failure records a failed attempt.
func (e *Engine) Failure(account string, network netip.Prefix) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	e.maybeSweep(now)
	get(e.account, account).add(now)
	get(e.pair, pairKey{account, network}).add(now)
	ns := e.network[network]
	if ns == nil {
		ns = &netState{accounts: make(map[string]time.Time)}
		e.network[network] = ns
	}
	ns.failures.add(now)
	if _, ok := ns.accounts[account]; ok || len(ns.accounts) < maxAccounts {
		ns.accounts[account] = now
	} else {
		// Replace the stalest account so the count stays saturated.
		var oldest string
		var ot time.Time
		for a, t := range ns.accounts {
			if oldest == "" || t.Before(ot) {
				oldest, ot = a, t
			}
		}
		delete(ns.accounts, oldest)
		ns.accounts[account] = now
	}
}

// Success forgets the account's failures after a complete sign-in. The
// network's counters stay: one good sign-in does not launder a network
// that is stuffing credentials.
func (e *Engine) Success(account string, network netip.Prefix) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.account, account)
	delete(e.pair, pairKey{account, network})
}

func get[K comparable](m map[K]*events, k K) *events {
	ev := m[k]
	if ev == nil {
		ev = &events{}
		m[k] = ev
	}
	return ev
}

func (e *Engine) maybeSweep(now time.Time) {
	e.ops++
	total := len(e.account) + len(e.pair) + len(e.network)
	if e.ops%sweepEvery != 0 && total < maxKeys {
		return
	}
	since := now.Add(-e.window)
	sweep(e.account, since)
	sweep(e.pair, since)
	for k, ns := range e.network {
		if !ns.failures.last().After(since) {
			delete(e.network, k)
		}
	}
	// Still over the bound: drop the stalest account keys. The window is
	// already lost for them; this only happens under a flood of distinct
	// usernames, which the network counters still see.
	for len(e.account)+len(e.pair) > maxKeys/2 {
		keys := make([]string, 0, len(e.account))
		for k := range e.account {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b string) int {
			if c := e.account[a].last().Compare(e.account[b].last()); c != 0 {
				return c
			}
			return strings.Compare(a, b)
		})
		drop := keys[:len(keys)/2]
		for _, k := range drop {
			delete(e.account, k)
		}
		for k := range e.pair {
			if _, ok := e.account[k.account]; !ok {
				delete(e.pair, k)
			}
		}
		if len(drop) == 0 {
			break
		}
	}
	// One account hammered from very many networks: drop arbitrary pairs.
	for k := range e.pair {
		if len(e.pair) <= maxKeys/2 {
			break
		}
		delete(e.pair, k)
	}
}

func sweep[K comparable](m map[K]*events, since time.Time) {
	for k, ev := range m {
		if !ev.last().After(since) {
			delete(m, k)
		}
	}
}

// Tracked returns how many keys the engine holds (for tests and metrics).
func (e *Engine) Tracked() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.account) + len(e.pair) + len(e.network)
}
