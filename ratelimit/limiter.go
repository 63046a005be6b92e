package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/malai-sec/malai/clientip"
	"github.com/malai-sec/malai/ratelimit/internal/gcra"
	"github.com/malai-sec/malai/ratelimit/memstore"
	"github.com/malai-sec/malai/route"
)

// Errors passed to [Config.ErrorHandler] and returned by [Limiter.Allow].
// Callers use errors.Is.
var (
	// ErrLimited: a policy's limit is exhausted. The error is a
	// *[LimitedError] carrying the policy and the retry delay.
	ErrLimited = errors.New("ratelimit: limit exceeded")
	// ErrDenied: the client address is on the reputation deny list.
	ErrDenied = errors.New("ratelimit: client address denied")
	// ErrUnavailable: the store failed and the policy fails closed. Every
	// package names its "dependency down" error ErrUnavailable.
	ErrUnavailable = errors.New("ratelimit: store unavailable")
	// ErrStoreUnavailable is the former name of ErrUnavailable (the same
	// value).
	//
	// Deprecated: use ErrUnavailable.
	ErrStoreUnavailable = ErrUnavailable
	// ErrClientAddress: the client address could not be resolved (a
	// trusted proxy sent a malformed forwarding header).
	ErrClientAddress = errors.New("ratelimit: client address could not be resolved")
	// ErrUnknownPolicy: [Limiter.Allow] was given a policy name not in
	// the Config.
	ErrUnknownPolicy = errors.New("ratelimit: unknown policy")
	// ErrInvalidConfig wraps every configuration error returned by [New].
	ErrInvalidConfig = errors.New("ratelimit: invalid config")
)

// LimitedError is the error for a request a policy refused.
type LimitedError struct {
	Policy     string
	RetryAfter time.Duration
}

func (e *LimitedError) Error() string {
	return fmt.Sprintf("ratelimit: limit %q exceeded, retry after %v", e.Policy, e.RetryAfter)
}

// Is makes errors.Is(err, ErrLimited) true.
func (e *LimitedError) Is(target error) bool { return target == ErrLimited }

// Outage says what a policy does when its store fails (unreachable,
// timed out).
type Outage uint8

const (
	// FailClosed refuses the request with 503 (the default).
	FailClosed Outage = iota
	// FailOpen lets the request through unlimited by this policy.
	FailOpen
	// FailLocal decides with an in-process memory store at
	// [Policy.LocalLimit] until the store answers again.
	FailLocal
)

func (o Outage) String() string {
	switch o {
	case FailClosed:
		return "fail-closed"
	case FailOpen:
		return "fail-open"
	case FailLocal:
		return "fail-local"
	}
	return "Outage(" + strconv.Itoa(int(o)) + ")"
}

// KeyFunc returns the key a policy counts the request under, given the
// resolved client address; ok == false means the policy does not apply
// (for example no verified principal yet). Keys longer than 128 bytes are
// replaced by their SHA-256, so a long caller-controlled value cannot bloat
// the store.
type KeyFunc func(r *http.Request, client netip.Addr) (key string, ok bool)

// ByRoute keys a request by its route pattern ([route.Pattern]: a pattern
// resolved in front of the router, or the ServeMux pattern), so every
// client shares one limit per route. It does not apply (ok is false) to an
// unrouted request: raw paths would give an attacker unbounded keys.
func ByRoute(r *http.Request, _ netip.Addr) (string, bool) {
	p := route.Pattern(r)
	return p, p != ""
}

// IPKey returns the key for addr bucketed to its /v4Bits (IPv4) or
// /v6Bits (IPv6) network, e.g. "2001:db8:1:2::/64". Mapped IPv4 addresses
// are unmapped first. For [Limiter.Allow] callers that limit by address
// outside HTTP (sign-in attempts).
func IPKey(addr netip.Addr, v4Bits, v6Bits int) string {
	addr = addr.Unmap().WithZone("")
	b := v6Bits
	if addr.Is4() {
		b = v4Bits
	}
	p, err := addr.Prefix(b)
	if err != nil {
		return addr.String()
	}
	return p.String()
}

// Policy is one limit. A request is checked against every policy that
// applies to it, in order.
type Policy struct {
	// Name identifies the policy in headers, store keys, metrics and
	// [Limiter.Allow]: 1–64 of A–Z a–z 0–9 _ . -, unique. Required.
	Name string
	// Limit requests are admitted per Period on average. Required.
	Limit int
	// Period is the window Limit refers to. Required; Period/Limit must be
	// at least 1 µs.
	Period time.Duration
	// Burst is how many requests a key that has been idle for a while may
	// send at once. Default Limit. With GCRA a key regains one request
	// every Period/Limit, so after a full burst it waits that long, not a
	// whole Period (unlike fixed windows, there is no double burst at a
	// window edge).
	Burst int
	// Key selects the counted key. Default: the client address bucketed
	// by IPv4Prefix/IPv6Prefix.
	Key KeyFunc
	// IPv4Prefix and IPv6Prefix bucket client addresses when Key is nil.
	// Defaults 32 and 64: an IPv6 attacker rotating through the 2^64
	// addresses of one /64 is one key. Use two policies for tiers (a /64
	// and a more generous /48).
	IPv4Prefix, IPv6Prefix int
	// OnOutage is what this policy does when the store fails. Default
	// FailClosed.
	OnOutage Outage
	// LocalLimit is the per-Period limit of the local fallback for
	// FailLocal (each node decides alone, so a share of Limit). Default
	// Limit. The local burst is scaled alike.
	LocalLimit int
}

// DefaultPolicy is the policy of a zero Config: 100 requests per minute
// per client address (IPv6 /64), burst 100, failing closed.
func DefaultPolicy() Policy {
	return Policy{Name: "ip", Limit: 100, Period: time.Minute}
}

// Config configures a [Limiter]. The zero Config is the strict default for
// one process: [DefaultPolicy], the client address is the TCP peer, no
// reputation lists, problem+json errors, and an in-process memory store,
// which is per replica: behind N replicas a client gets N times the limit.
// Set Store to a shared store (ratelimit/redisstore) for anything that runs
// more than one instance.
type Config struct {
	// Store decides. Default: an in-process memstore with its defaults,
	// owned by the Limiter and closed by Close. Its counts are per
	// process: with several replicas each one counts alone, so New logs a
	// warning through Logger when Store is nil. A Store passed here is
	// not closed.
	Store Store
	// Policies apply in order; a request denied by one is not counted by
	// the following ones (it was counted by the earlier ones). Default
	// [DefaultPolicy].
	Policies []Policy
	// Reputation refuses listed addresses (403) before any store call and
	// exempts allow-listed ones from every policy. Nil lists nothing.
	Reputation *Reputation
	// ClientIP resolves the client address, trusting forwarding headers
	// only from its proxies: build it once and share it with headers and
	// correlation. An address already in the request context
	// ([clientip.FromContext], put there by [clientip.Resolver.Handler],
	// correlation or another limiter) is used as is; otherwise the one
	// resolved here is stored there for later layers. Nil: the TCP peer.
	ClientIP *clientip.Resolver
	// TrustedProxies and ClientIPHeader build a resolver of this
	// Limiter's own when ClientIP and Resolver are nil, so the proxies are
	// configured again for every component.
	//
	// Deprecated: build one [clientip.Resolver] and set ClientIP.
	TrustedProxies []netip.Prefix
	// Deprecated: see TrustedProxies.
	ClientIPHeader string
	// Resolver, when ClientIP is nil, is any function resolving the client
	// address (for example a [clientip.Resolver]'s Resolve method wrapped
	// with a check of its own); ClientIP is the usual choice. Context
	// addresses are used and stored as with ClientIP.
	Resolver func(*http.Request) (netip.Addr, error)
	// Skip, when set, exempts the requests it returns true for from every
	// policy and the reputation lists, for example health checks from
	// the load balancer: func(r) bool { return r.URL.Path == "/healthz" }.
	// Base it only on what a client cannot use to escape limits on other
	// routes (an exact path, the TCP peer), never on a header.
	Skip func(*http.Request) bool
	// LegacyHeaders adds X-RateLimit-Limit/-Remaining/-Reset for the most
	// restrictive applied policy, for clients that predate the IETF fields.
	LegacyHeaders bool
	// ErrorHandler writes the response for ErrLimited (429), ErrDenied
	// (403), ErrUnavailable (503) and ErrClientAddress (400). The
	// RateLimit and Retry-After headers are already set. Default: RFC 9457
	// problem+json with a generic detail.
	ErrorHandler func(http.ResponseWriter, *http.Request, error)
	// OnStoreError is called on every store failure with the policy name
	// and the outage rule applied; for alerting. It must not block.
	OnStoreError func(ctx context.Context, policy string, applied Outage, err error)
	// Logger receives a warning when New falls back to the per-process
	// store, and store failures (at most one line per second, with the
	// policy and the outage rule; never the key). Default slog.Default().
	// Pass a logger with a discarding handler to silence it.
	Logger *slog.Logger
	// Now is the clock of the default memory store and of the local
	// fallback store. Default: their monotonic clock.
	Now func() time.Time
}

type policy struct {
	Policy
	limit      Limit
	localLimit Limit
	header     string // `"name";q=100;w=60`
}

// Limiter enforces policies. Build it with [New]; the zero value is not
// usable. It is safe for concurrent use.
type Limiter struct {
	store      Store
	ownStore   bool
	local      *memstore.Store
	policies   []policy
	byName     map[string]*policy
	reputation *Reputation
	resolve    func(*http.Request) (netip.Addr, error)
	skip       func(*http.Request) bool
	legacy     bool
	logger     *slog.Logger
	lastLog    atomic.Int64 // UnixNano of the last store-failure log line
	onError    func(http.ResponseWriter, *http.Request, error)
	onStoreErr func(context.Context, string, Outage, error)
	allPolicy  string // RateLimit-Policy when every policy applied

	stats stats
}

type stats struct {
	allowed, limited, denied, exempt, badClient        atomic.Uint64
	storeErrors, failedOpen, failedLocal, failedClosed atomic.Uint64
}

// Stats are counters since New, for metrics exporters.
type Stats struct {
	Allowed       uint64 // requests every applicable policy admitted
	Limited       uint64 // requests refused by a policy (429)
	Denied        uint64 // requests refused by the reputation deny list
	Exempt        uint64 // requests exempted by the reputation allow list
	BadClientAddr uint64 // requests whose client address did not resolve
	StoreErrors   uint64 // store failures (each policy call counts)
	FailedOpen    uint64 // store failures answered by FailOpen
	FailedLocal   uint64 // store failures answered by the local fallback
	FailedClosed  uint64 // store failures answered with 503
}

// Stats returns a snapshot of the counters.
func (l *Limiter) Stats() Stats {
	s := &l.stats
	return Stats{
		Allowed: s.allowed.Load(), Limited: s.limited.Load(), Denied: s.denied.Load(),
		Exempt: s.exempt.Load(), BadClientAddr: s.badClient.Load(), StoreErrors: s.storeErrors.Load(),
		FailedOpen: s.failedOpen.Load(), FailedLocal: s.failedLocal.Load(), FailedClosed: s.failedClosed.Load(),
	}
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == '.' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

func compile(name string, limit int, period time.Duration, burst int) (Limit, error) {
	if limit < 1 || period <= 0 || burst < 1 {
		return Limit{}, fmt.Errorf("%w: policy %q: Limit, Period and Burst must be positive", ErrInvalidConfig, name)
	}
	l := Limit{Interval: period / time.Duration(limit), Burst: burst}
	if l.Interval < time.Microsecond {
		return Limit{}, fmt.Errorf("%w: policy %q: Period/Limit is under 1µs", ErrInvalidConfig, name)
	}
	if _, err := gcra.Compile(l, 1); err != nil {
		return Limit{}, fmt.Errorf("%w: policy %q: %w", ErrInvalidConfig, name, err)
	}
	return l, nil
}

// New validates cfg and returns a Limiter. cfg is not modified.
func New(cfg Config) (*Limiter, error) {
	l := &Limiter{
		store:      cfg.Store,
		reputation: cfg.Reputation,
		skip:       cfg.Skip,
		legacy:     cfg.LegacyHeaders,
		onError:    cfg.ErrorHandler,
		onStoreErr: cfg.OnStoreError,
		logger:     cfg.Logger,
		byName:     map[string]*policy{},
	}
	now := cfg.Now // nil: the memory stores use their monotonic clock
	if l.onError == nil {
		l.onError = DefaultErrorHandler
	}
	if l.logger == nil {
		l.logger = slog.Default()
	}
	switch {
	case cfg.ClientIP != nil:
		l.resolve = cfg.ClientIP.Resolve
	case cfg.Resolver != nil:
		l.resolve = cfg.Resolver
	default:
		res, err := clientip.New(clientip.Config{TrustedProxies: cfg.TrustedProxies, Header: cfg.ClientIPHeader})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		l.resolve = res.Resolve
	}
	pols := cfg.Policies
	if len(pols) == 0 {
		pols = []Policy{DefaultPolicy()}
	}
	needLocal := false
	l.policies = make([]policy, len(pols))
	for i, p := range pols {
		if !validName(p.Name) {
			return nil, fmt.Errorf("%w: Policies[%d]: Name %q must be 1-64 of A-Z a-z 0-9 _ . -", ErrInvalidConfig, i, p.Name)
		}
		if _, dup := l.byName[p.Name]; dup {
			return nil, fmt.Errorf("%w: policy name %q used twice", ErrInvalidConfig, p.Name)
		}
		if p.Burst == 0 {
			p.Burst = p.Limit
		}
		lim, err := compile(p.Name, p.Limit, p.Period, p.Burst)
		if err != nil {
			return nil, err
		}
		if p.Key == nil {
			if p.IPv4Prefix == 0 {
				p.IPv4Prefix = 32
			}
			if p.IPv6Prefix == 0 {
				p.IPv6Prefix = 64
			}
			if p.IPv4Prefix < 1 || p.IPv4Prefix > 32 || p.IPv6Prefix < 1 || p.IPv6Prefix > 128 {
				return nil, fmt.Errorf("%w: policy %q: IPv4Prefix must be 1-32 and IPv6Prefix 1-128", ErrInvalidConfig, p.Name)
			}
		}
		if p.OnOutage == FailLocal && p.LocalLimit == 0 {
			p.LocalLimit = p.Limit
		}
		pc := policy{Policy: p, limit: lim}
		switch p.OnOutage {
		case FailClosed, FailOpen:
		case FailLocal:
			needLocal = true
			burst := max(1, int(int64(p.Burst)*int64(p.LocalLimit)/int64(p.Limit)))
			if pc.localLimit, err = compile(p.Name, p.LocalLimit, p.Period, burst); err != nil {
				return nil, fmt.Errorf("%w (LocalLimit)", err)
			}
		default:
			return nil, fmt.Errorf("%w: policy %q: unknown OnOutage %d", ErrInvalidConfig, p.Name, p.OnOutage)
		}
		w := int64((p.Period + time.Second - 1) / time.Second)
		pc.header = `"` + p.Name + `";q=` + strconv.Itoa(p.Limit) + ";w=" + strconv.FormatInt(w, 10)
		l.policies[i] = pc
		l.byName[p.Name] = &l.policies[i]
	}
	for i, p := range l.policies {
		if i > 0 {
			l.allPolicy += ", "
		}
		l.allPolicy += p.header
	}
	if l.store == nil {
		st, err := memstore.New(memstore.Config{Now: now})
		if err != nil {
			return nil, err
		}
		l.store, l.ownStore = st, true
		l.logger.Warn("ratelimit: no Store configured; counting in this process only, so each replica enforces its own limit",
			slog.String("policies", l.allPolicy))
	}
	if needLocal {
		st, err := memstore.New(memstore.Config{Now: now})
		if err != nil {
			l.Close()
			return nil, err
		}
		l.local = st
	}
	return l, nil
}

// Close releases the stores the Limiter created. A Store passed in Config
// is left to its owner.
func (l *Limiter) Close() error {
	var err error
	if l.ownStore {
		err = l.store.Close()
	}
	if l.local != nil {
		err = errors.Join(err, l.local.Close())
	}
	return err
}

// storeKey composes the store key: policy name, ':' and the caller's key
// (hashed when long).
func storeKey(name, key string) string {
	if len(key) > 128 {
		sum := sha256.Sum256([]byte(key))
		key = "sha256:" + hex.EncodeToString(sum[:])
	}
	return name + ":" + key
}

// decide applies one policy to key, with the outage rule.
func (l *Limiter) decide(ctx context.Context, p *policy, key string) (Result, error) {
	return l.decideN(ctx, p, key, 1)
}

func (l *Limiter) decideN(ctx context.Context, p *policy, key string, n int) (Result, error) {
	k := storeKey(p.Name, key)
	r, err := l.store.Allow(ctx, k, p.limit, n)
	if err == nil {
		return r, nil
	}
	if cerr := ctx.Err(); cerr != nil {
		// The caller gave up (client disconnected): not a store outage.
		return Result{}, fmt.Errorf("ratelimit: policy %q: %w", p.Name, cerr)
	}
	l.stats.storeErrors.Add(1)
	if l.onStoreErr != nil {
		l.onStoreErr(ctx, p.Name, p.OnOutage, err)
	}
	l.logStoreError(ctx, p, err)
	switch p.OnOutage {
	case FailOpen:
		l.stats.failedOpen.Add(1)
		return Result{Allowed: true, Remaining: -1}, nil
	case FailLocal:
		r, lerr := l.local.Allow(ctx, k, p.localLimit, min(n, p.localLimit.Burst))
		if lerr == nil {
			l.stats.failedLocal.Add(1)
			return r, nil
		}
		err = errors.Join(err, lerr)
	}
	l.stats.failedClosed.Add(1)
	return Result{}, fmt.Errorf("%w: policy %q: %w", ErrUnavailable, p.Name, err)
}

// logStoreError logs a store failure, at most once per second.
func (l *Limiter) logStoreError(ctx context.Context, p *policy, err error) {
	now := time.Now().UnixNano()
	last := l.lastLog.Load()
	if now-last < int64(time.Second) || !l.lastLog.CompareAndSwap(last, now) {
		return
	}
	l.logger.LogAttrs(ctx, slog.LevelWarn, "ratelimit: store failed",
		slog.String("policy", p.Name), slog.String("outage", p.OnOutage.String()), slog.String("error", err.Error()))
}

// Allow applies the named policy to key outside HTTP (queue consumers,
// sign-in attempts keyed with [IPKey]). It follows the policy's outage
// rule: with FailClosed a store failure returns an error wrapping
// [ErrUnavailable]. A limited key is a nil error with
// Result.Allowed false. With FailOpen during an outage Remaining is -1.
func (l *Limiter) Allow(ctx context.Context, policyName, key string) (Result, error) {
	p, ok := l.byName[policyName]
	if !ok {
		return Result{}, fmt.Errorf("%w: %q", ErrUnknownPolicy, policyName)
	}
	return l.decide(ctx, p, key)
}

// AllowN is [Limiter.Allow] for a request that costs n (1 <= n <= the
// policy's Burst): a request the caller found expensive (one a WAF
// refused) can be charged more than an ordinary one. A cost that does not
// fit is denied and charges nothing; Result.Remaining says what would.
func (l *Limiter) AllowN(ctx context.Context, policyName, key string, n int) (Result, error) {
	p, ok := l.byName[policyName]
	if !ok {
		return Result{}, fmt.Errorf("%w: %q", ErrUnknownPolicy, policyName)
	}
	if n < 1 || n > p.Burst {
		return Result{}, fmt.Errorf("ratelimit: policy %q: cost %d outside 1..%d", policyName, n, p.Burst)
	}
	return l.decideN(ctx, p, key, n)
}
