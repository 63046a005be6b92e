// Package lockout decides, from counts of recent failures, whether a
// sign-in attempt may proceed, must wait, needs a second factor or is
// refused. It is pure: the counts come from the identity store, so every
// replica decides the same and a restart forgets nothing.
//
// The policy protects the owner rather than punishing the account:
//
//   - A device that has completed a sign-in before (it holds a signed
//     device cookie for this account) is judged only by its own failures.
//     Nothing an attacker does from elsewhere — many networks, many
//     failures, a shared NAT address — slows it or blocks it.
//   - Everything else is throttled, never hard-blocked, per (account,
//     network), per network (many failures, or many accounts failing:
//     credential stuffing), per password fingerprint (one or a few
//     passwords failing against many accounts: spraying, from one
//     network or many), and per account (failures from several networks:
//     distributed guessing). A throttle is a progressive delay: the wait
//     after the limit doubles with every further failure, up to a cap,
//     and refused attempts are not failures, so hammering during the wait
//     does not lengthen it.
//   - Once the password is right, an unknown device on a network the
//     account never used, while the account is under attack, is high
//     risk: it needs the second factor, and an account without one is
//     refused.
//   - One-time codes are bounded per account and device class (known
//     device, or any unknown one) over a long window with exponential
//     back-off, so a stolen password does not buy unlimited code guesses.
package lockout

import (
	"time"

	"github.com/malai-sec/malai/examples/malai/identity/store"
)

// Config holds the thresholds. The zero value of a field selects the
// default named in its comment.
type Config struct {
	// Window is how far back failures count. Default 15 minutes.
	Window time.Duration
	// PairLimit: failures for one account from one network before that
	// pair is throttled. Default 5.
	PairLimit int
	// NetworkLimit: failures from one network (any account) before the
	// network is throttled. Default 30.
	NetworkLimit int
	// NetworkAccounts: distinct accounts failing from one network before
	// it is throttled (credential stuffing). Default 10.
	NetworkAccounts int
	// SprayAccounts: distinct accounts that failed with one password
	// before that password is throttled for unknown devices. Default 5.
	SprayAccounts int
	// AccountLimit: failures for one account from unknown devices, or
	// AccountNetworks distinct networks with at least half that many
	// failures, put the account under attack. Defaults 10 and 3.
	AccountLimit, AccountNetworks int
	// DeviceLimit: failures from one known device before it is
	// throttled. Default 10.
	DeviceLimit int
	// BaseDelay and MaxDelay shape the progressive delay. Defaults 1 s
	// and 15 minutes.
	BaseDelay, MaxDelay time.Duration
	// CodeFree one-time-code failures per account and device class are
	// free within CodeWindow; after them the wait starts at CodeBase and
	// doubles up to CodeMaxDelay. Defaults 3, 24 hours, 30 s, 1 hour.
	CodeFree                           int
	CodeWindow, CodeBase, CodeMaxDelay time.Duration
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	set := func(p *int, d int) {
		if *p <= 0 {
			*p = d
		}
	}
	setD := func(p *time.Duration, d time.Duration) {
		if *p <= 0 {
			*p = d
		}
	}
	setD(&c.Window, 15*time.Minute)
	set(&c.PairLimit, 5)
	set(&c.NetworkLimit, 30)
	set(&c.NetworkAccounts, 10)
	set(&c.SprayAccounts, 5)
	set(&c.AccountLimit, 10)
	set(&c.AccountNetworks, 3)
	set(&c.DeviceLimit, 10)
	setD(&c.BaseDelay, time.Second)
	setD(&c.MaxDelay, 15*time.Minute)
	set(&c.CodeFree, 3)
	setD(&c.CodeWindow, 24*time.Hour)
	setD(&c.CodeBase, 30*time.Second)
	setD(&c.CodeMaxDelay, time.Hour)
	return c
}

// Decision is the outcome.
type Decision int

const (
	// Allow: check the credentials.
	Allow Decision = iota
	// Throttle: refuse without checking; retry after RetryAfter.
	Throttle
	// StepUp: the password is right but a second factor is required.
	StepUp
	// Block: the password is right but the risk is too high and the
	// account has no second factor.
	Block
)

func (d Decision) String() string {
	switch d {
	case Allow:
		return "allow"
	case Throttle:
		return "throttle"
	case StepUp:
		return "step-up"
	case Block:
		return "block"
	}
	return "unknown"
}

// Reasons name the signals behind a decision; they reach logs, metrics
// and the audit chain.
const (
	ReasonDevice      = "device-failures"
	ReasonPair        = "network-account-failures"
	ReasonNetwork     = "network-failures"
	ReasonStuffing    = "credential-stuffing"
	ReasonSpray       = "password-spraying"
	ReasonAccount     = "account-under-attack"
	ReasonNewNetwork  = "new-network"
	ReasonCodes       = "one-time-code-failures"
	ReasonReauth      = "reauthentication-failures"
	ReasonKnownDevice = "known-device"
)

// Before are the counts known before the password is checked. They
// depend only on what the client sent (name, password, network, device
// cookie), never on whether the account exists.
type Before struct {
	KnownDevice bool
	// Device counts the known device's failures (only with KnownDevice).
	Device store.Tally
	// Pair: this account from this network. Network: this network, with
	// distinct accounts as members. Account: this account from unknown
	// devices, with distinct networks as members. Spray: this password's
	// fingerprint, with distinct accounts as members.
	Pair, Network, Account, Spray store.Tally
}

// Verdict is a decision with its reasons.
type Verdict struct {
	Decision Decision
	// RetryAfter is how long a throttled client must wait.
	RetryAfter time.Duration
	Reasons    []string
	// UnderAttack: the account shows distributed or sustained failures.
	UnderAttack bool
}

// backoff is the wait after the k-th failure at or beyond a limit.
func backoff(k int, base, max time.Duration) time.Duration {
	if k < 1 {
		return 0
	}
	d := base
	for i := 1; i < k; i++ {
		d *= 2
		if d >= max {
			return max
		}
	}
	return min(d, max)
}

// limiter adds a reason and moves until when the tally is over limit.
type limiter struct {
	now   time.Time
	until time.Time
	v     *Verdict
	base  time.Duration
	max   time.Duration
}

func (l *limiter) over(excess int, last time.Time, reason string) {
	if excess < 1 {
		return
	}
	u := last.Add(backoff(excess, l.base, l.max))
	l.v.Reasons = append(l.v.Reasons, reason)
	if u.After(l.until) {
		l.until = u
	}
}

// Before decides whether the attempt may check credentials at all.
func (c Config) Before(in Before, now time.Time) Verdict {
	c = c.WithDefaults()
	v := Verdict{}
	l := limiter{now: now, v: &v, base: c.BaseDelay, max: c.MaxDelay}
	if in.KnownDevice {
		v.Reasons = append(v.Reasons, ReasonKnownDevice)
		l.over(in.Device.Events-c.DeviceLimit+1, in.Device.Last, ReasonDevice)
	} else {
		l.over(in.Pair.Events-c.PairLimit+1, in.Pair.Last, ReasonPair)
		l.over(in.Network.Events-c.NetworkLimit+1, in.Network.Last, ReasonNetwork)
		l.over(in.Network.Members-c.NetworkAccounts+1, in.Network.Last, ReasonStuffing)
		l.over(in.Spray.Members-c.SprayAccounts+1, in.Spray.Last, ReasonSpray)
		if k := c.accountExcess(in.Account); k > 0 {
			v.UnderAttack = true
			l.over(k, in.Account.Last, ReasonAccount)
		}
	}
	if now.Before(l.until) {
		v.Decision = Throttle
		v.RetryAfter = l.until.Sub(now)
	}
	return v
}

// accountExcess is how far past the under-attack threshold the account
// is (0: not under attack).
func (c Config) accountExcess(t store.Tally) int {
	k := t.Events - c.AccountLimit + 1
	if t.Members >= c.AccountNetworks {
		k = max(k, t.Events-(c.AccountLimit+1)/2+1)
	}
	return max(k, 0)
}

// After decides once the password is known to be right. enrolled says
// whether the account has a second factor; newNetwork whether it never
// signed in from this network.
func (c Config) After(before Verdict, knownDevice, newNetwork, enrolled bool) Verdict {
	v := Verdict{UnderAttack: before.UnderAttack, Reasons: append([]string(nil), before.Reasons...)}
	if knownDevice {
		if enrolled {
			v.Decision = StepUp
		}
		return v
	}
	if newNetwork {
		v.Reasons = append(v.Reasons, ReasonNewNetwork)
	}
	switch {
	case before.UnderAttack && newNetwork && !enrolled:
		v.Decision = Block
	case enrolled:
		v.Decision = StepUp
	}
	return v
}

// Codes decides whether a one-time code may be checked, from the
// account's code failures for this device class within CodeWindow.
func (c Config) Codes(t store.Tally, now time.Time) Verdict {
	c = c.WithDefaults()
	return throttleAfter(t, c.CodeFree, c.CodeBase, c.CodeMaxDelay, ReasonCodes, now)
}

// Reauth decides whether a signed-in user may try their current password
// again (re-authentication for an account-security change), from their
// recent wrong answers: PairLimit are free, then the progressive delay.
// It stops a stolen access token from becoming a password oracle.
func (c Config) Reauth(t store.Tally, now time.Time) Verdict {
	c = c.WithDefaults()
	return throttleAfter(t, c.PairLimit, c.BaseDelay, c.MaxDelay, ReasonReauth, now)
}

// throttleAfter throttles once a tally reaches limit, with the wait
// starting at base and doubling up to max.
func throttleAfter(t store.Tally, limit int, base, max time.Duration, reason string, now time.Time) Verdict {
	v := Verdict{}
	l := limiter{now: now, v: &v, base: base, max: max}
	l.over(t.Events-limit+1, t.Last, reason)
	if now.Before(l.until) {
		v.Decision = Throttle
		v.RetryAfter = l.until.Sub(now)
	}
	return v
}
