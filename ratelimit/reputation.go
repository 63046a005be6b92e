package ratelimit

import (
	"bufio"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
)

// Verdict is what a [Reputation] says about an address.
type Verdict uint8

// Verdicts. The most specific listed prefix decides; a prefix on both lists
// is denied.
const (
	// Unlisted: on neither list; the rate limits apply.
	Unlisted Verdict = iota
	// Listed on the allow list: exempt from deny entries of shorter
	// prefixes and from every rate limit (monitoring, partner ranges).
	Allowed
	// Listed on the deny list: refused with 403 before any store call.
	Denied
)

func (v Verdict) String() string {
	switch v {
	case Allowed:
		return "allowed"
	case Denied:
		return "denied"
	default:
		return "unlisted"
	}
}

// ReputationConfig lists the allow and deny prefixes. Files hold one
// address or CIDR prefix per line; '#' starts a comment; blank lines are
// ignored; host bits of a prefix are masked; IPv4-mapped IPv6 prefixes are
// read as IPv4. A malformed line fails the whole load.
type ReputationConfig struct {
	DenyFiles  []string
	AllowFiles []string
	// Deny and Allow are added to whatever the files say, on every load.
	Deny  []netip.Prefix
	Allow []netip.Prefix
}

// Reputation is an IP allow/deny list held in a path-compressed binary
// trie, one per address family. Lookups take no lock; [Reputation.Reload]
// swaps in a whole new trie atomically. Build it with [NewReputation]; a
// nil *Reputation lists nothing. It is safe for concurrent use.
type Reputation struct {
	cfg    ReputationConfig
	reload sync.Mutex
	cur    atomic.Pointer[trie]
}

// NewReputation loads cfg. The files are read again by Reload.
func NewReputation(cfg ReputationConfig) (*Reputation, error) {
	c := ReputationConfig{
		DenyFiles:  append([]string(nil), cfg.DenyFiles...),
		AllowFiles: append([]string(nil), cfg.AllowFiles...),
		Deny:       append([]netip.Prefix(nil), cfg.Deny...),
		Allow:      append([]netip.Prefix(nil), cfg.Allow...),
	}
	r := &Reputation{cfg: c}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the files again and swaps the lists in one step. On any
// error the previous lists stay in force and the error says which file and
// line failed. Call it on SIGHUP or when a file watcher fires.
func (r *Reputation) Reload() error {
	r.reload.Lock()
	defer r.reload.Unlock()
	t := &trie{}
	add := func(p netip.Prefix, v Verdict, src string) error {
		if !p.IsValid() {
			return fmt.Errorf("ratelimit: reputation: invalid prefix in %s", src)
		}
		t.insert(normalize(p), v)
		return nil
	}
	for _, p := range r.cfg.Deny {
		if err := add(p, Denied, "Deny"); err != nil {
			return err
		}
	}
	for _, p := range r.cfg.Allow {
		if err := add(p, Allowed, "Allow"); err != nil {
			return err
		}
	}
	for _, f := range r.cfg.DenyFiles {
		if err := loadFile(t, f, Denied); err != nil {
			return err
		}
	}
	for _, f := range r.cfg.AllowFiles {
		if err := loadFile(t, f, Allowed); err != nil {
			return err
		}
	}
	r.cur.Store(t)
	return nil
}

// Lookup returns the verdict for addr (mapped IPv4 addresses are unmapped).
func (r *Reputation) Lookup(addr netip.Addr) Verdict {
	if r == nil || !addr.IsValid() {
		return Unlisted
	}
	t := r.cur.Load()
	if t == nil { // a zero Reputation, not built by NewReputation
		return Unlisted
	}
	return t.lookup(addr.Unmap())
}

// Len returns how many distinct prefixes are listed.
func (r *Reputation) Len() int {
	if r == nil || r.cur.Load() == nil {
		return 0
	}
	return r.cur.Load().n
}

func normalize(p netip.Prefix) netip.Prefix {
	a := p.Addr().WithZone("")
	if a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked()
	}
	return netip.PrefixFrom(a, p.Bits()).Masked()
}

// ErrReputationFile wraps every file loading error.
var ErrReputationFile = errors.New("ratelimit: reputation file")

func loadFile(t *trie, name string, v Verdict) error {
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrReputationFile, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		s := sc.Text()
		if i := strings.IndexByte(s, '#'); i >= 0 {
			s = s[:i]
		}
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := parsePrefix(s)
		if err != nil {
			return fmt.Errorf("%w: %s:%d: not an address or CIDR prefix", ErrReputationFile, name, line)
		}
		t.insert(normalize(p), v)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: %s:%d: %w", ErrReputationFile, name, line+1, err)
	}
	return nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.ContainsRune(s, '%') {
		return netip.Prefix{}, errors.New("zone")
	}
	if strings.ContainsRune(s, '/') {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// u128 is an address as two words, most significant first. IPv4 addresses
// sit in the top 32 bits of hi.
type u128 struct{ hi, lo uint64 }

func toU128(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{hi: uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32}
	}
	b := a.As16()
	var x u128
	for i := range 8 {
		x.hi = x.hi<<8 | uint64(b[i])
		x.lo = x.lo<<8 | uint64(b[8+i])
	}
	return x
}

// bit returns bit i (0 = most significant).
func (x u128) bit(i int) int {
	if i < 64 {
		return int(x.hi >> (63 - i) & 1)
	}
	return int(x.lo >> (127 - i) & 1)
}

// common returns the length of the common prefix of x and y, at most max.
func (x u128) common(y u128, max int) int {
	n := bits.LeadingZeros64(x.hi ^ y.hi)
	if n == 64 {
		n += bits.LeadingZeros64(x.lo ^ y.lo)
	}
	return min(n, max)
}

func (x u128) mask(n int) u128 {
	switch {
	case n <= 0:
		return u128{}
	case n < 64:
		return u128{hi: x.hi &^ (1<<(64-n) - 1)}
	case n == 64:
		return u128{hi: x.hi}
	case n < 128:
		return u128{hi: x.hi, lo: x.lo &^ (1<<(128-n) - 1)}
	}
	return x
}

type node struct {
	key   u128
	plen  int
	v     Verdict // Unlisted for branch-only nodes
	child [2]*node
}

// trie holds one root per family; IPv4 keys are 32 bits long at most.
type trie struct {
	v4, v6 *node
	n      int
}

func (t *trie) insert(p netip.Prefix, v Verdict) {
	root := &t.v6
	if p.Addr().Is4() {
		root = &t.v4
	}
	key, plen := toU128(p.Addr()).mask(p.Bits()), p.Bits()
	for {
		n := *root
		if n == nil {
			*root = &node{key: key, plen: plen, v: v}
			t.n++
			return
		}
		c := n.key.common(key, min(n.plen, plen))
		if c == n.plen {
			if plen == n.plen {
				if n.v == Unlisted {
					t.n++
				}
				if v == Denied || n.v == Unlisted {
					n.v = v // deny wins over allow for the same prefix
				}
				return
			}
			root = &n.child[key.bit(n.plen)]
			continue
		}
		if c == plen {
			// The new prefix contains n.
			nn := &node{key: key, plen: plen, v: v}
			nn.child[n.key.bit(plen)] = n
			*root = nn
			t.n++
			return
		}
		br := &node{key: key.mask(c), plen: c}
		br.child[n.key.bit(c)] = n
		br.child[key.bit(c)] = &node{key: key, plen: plen, v: v}
		*root = br
		t.n++
		return
	}
}

func (t *trie) lookup(a netip.Addr) Verdict {
	n, maxLen := t.v6, 128
	if a.Is4() {
		n, maxLen = t.v4, 32
	}
	key := toU128(a)
	best := Unlisted
	for n != nil {
		if key.common(n.key, n.plen) < n.plen {
			break
		}
		if n.v != Unlisted {
			best = n.v
		}
		if n.plen >= maxLen {
			break
		}
		n = n.child[key.bit(n.plen)]
	}
	return best
}
