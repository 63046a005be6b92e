package waf

import (
	"hash/maphash"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// RE2's answers on recurring values, remembered.
//
// A request's values recur across requests: its header values (the
// client's User-Agent, Accept, Content-Type, the host and the path), its
// JSON members' names (every transfer has "json.from" and "json.amount")
// and many of their values (a customer's account ids). Each is tested by
// every screened rule that reads it, 60-odd rules for an API argument,
// with the same pattern on the same string every time: RE2's answer is a
// function of the two. The screen therefore remembers, per value, which
// patterns it has run and which of those RE2 matched, and asks RE2 only
// the first time.
//
// What is remembered is RE2's answer and nothing more. A "no" decides as
// it does uncached (no match); a "yes" still goes to Go's regexp, which
// decides and captures as before. An error (a DFA out of memory) is not
// remembered: it says nothing about the value. A value that is not valid
// UTF-8 never reaches the screen, so never the cache.
//
// One client's values are not another's: an answer is remembered for the
// client that sent the value (its address, or its IPv6 /64, as the
// trusted-proxy resolver gave it), under a keyed hash of it carried in
// the transaction's id (screenTxID). Otherwise how fast the WAF answered
// would tell a client whether anyone had sent a value lately (an email
// address at sign-in, an account id). A transaction whose id carries no
// client (one not started by the WAF's handler) is screened uncached.
//
// Bounds, whatever requests arrive: values up to screenCacheMaxValue
// bytes, screenCacheShards × screenCacheShardValues values, the first
// screenCacheMaxPatterns patterns the process compiles (the CRS has 305;
// a pattern beyond them is screened uncached). A full shard drops one of
// its values at random to take a new one, so a flood of new values costs
// what the screen cost before the cache (plus one lookup per rule and two
// small allocations per new value) and evicts values a flood does not
// repeat. At most ~2 MiB.

const (
	screenCacheMaxValue    = 256
	screenCacheShards      = 32
	screenCacheShardValues = 128
	screenCacheMaxPatterns = 512
	screenCacheWords       = screenCacheMaxPatterns / 64
)

// screenVerdicts are RE2's answers on one client's value, one bit per
// pattern index: asked (the answer is in matched), matched (RE2
// matched); and the value they are for.
type screenVerdicts struct {
	asked, matched [screenCacheWords]atomic.Uint64
	client         uint64
	value          string
}

// A shard's values are found by their hash (of client and value) and
// checked against the value kept: two that share a hash take turns in
// one slot, never each other's answers.
type screenShard struct {
	mu     sync.Mutex
	values map[uint64]*screenVerdicts
}

// screenCache is the process's cache: every rule set of the process shares
// the compiled patterns (the Memoizer), so it shares their answers.
type screenCache struct {
	seed   maphash.Seed
	shards [screenCacheShards]screenShard
}

var verdictCache = newScreenCache()

func newScreenCache() *screenCache {
	c := &screenCache{seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].values = make(map[uint64]*screenVerdicts, screenCacheShardValues)
	}
	return c
}

// verdicts are client's answers on value, made empty for a value not yet
// seen; nil for a value too long to keep.
func (c *screenCache) verdicts(client uint64, value string) *screenVerdicts {
	if len(value) > screenCacheMaxValue {
		return nil
	}
	h := c.hash(client, value)
	s := &c.shards[h%screenCacheShards]
	s.mu.Lock()
	v := s.values[h]
	if v == nil || v.client != client || v.value != value {
		if v == nil && len(s.values) >= screenCacheShardValues {
			for k := range s.values { // a random one: map order
				delete(s.values, k)
				break
			}
		}
		// The value may alias a request's buffer: keep a copy.
		v = &screenVerdicts{client: client, value: strings.Clone(value)}
		s.values[h] = v
	}
	s.mu.Unlock()
	return v
}

// hash is the slot of client's value. The client's hash is keyed
// already; mixing it into the value's keeps one client's values from
// crowding one shard.
func (c *screenCache) hash(client uint64, value string) uint64 {
	return maphash.String(c.seed, value) ^ (client * 0x9e3779b97f4a7c15)
}

// len is how many values c holds.
func (c *screenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.values)
		s.mu.Unlock()
	}
	return n
}

// answer is RE2's remembered answer for pattern index i: known is false
// when it has not been asked.
func (v *screenVerdicts) answer(i int) (matched, known bool) {
	w, bit := i/64, uint64(1)<<(i%64)
	if v.asked[w].Load()&bit == 0 {
		return false, false
	}
	return v.matched[w].Load()&bit != 0, true
}

// remember records RE2's answer for pattern index i; the answer is
// stored before the bit that says it is there.
func (v *screenVerdicts) remember(i int, matched bool) {
	w, bit := i/64, uint64(1)<<(i%64)
	if matched {
		v.matched[w].Or(bit)
	}
	v.asked[w].Or(bit)
}

// patternIndexes number the patterns the process has screened: the same
// pattern, compiled again (another rule set, a test), has the same index,
// so the numbering is bounded by the distinct patterns of the process,
// and stops at screenCacheMaxPatterns.
type patternIndexes struct {
	mu sync.Mutex
	of map[string]int
}

var screenIndexes = &patternIndexes{of: map[string]int{}}

// index is expr's index, or -1 when the cache holds no bit for it.
func (p *patternIndexes) index(expr string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i, ok := p.of[expr]; ok {
		return i
	}
	i := len(p.of)
	if i >= screenCacheMaxPatterns {
		return -1
	}
	p.of[expr] = i
	return i
}

// Transaction ids that carry their client.
//
// screenTxID is a new transaction's id for the client key: "s", 16 hex
// digits of a keyed hash of the key (never the address itself: ids reach
// Coraza's logs), "-", and a process-wide sequence number that keeps the
// id unique. screenClient reads the hash back.

var (
	clientSeed = maphash.MakeSeed()
	txSeq      atomic.Uint64
)

const screenIDPrefix = "s"

func screenTxID(client netip.Prefix) string {
	if !client.IsValid() {
		// No client to hold the answers for: screened uncached.
		return "u-" + strconv.FormatUint(txSeq.Add(1), 36)
	}
	h := maphash.Comparable(clientSeed, client)
	b := make([]byte, 0, 1+16+1+13)
	b = append(b, screenIDPrefix...)
	const hexdigits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, hexdigits[h>>uint(shift)&0xf])
	}
	b = append(b, '-')
	b = strconv.AppendUint(b, txSeq.Add(1), 36)
	return string(b)
}

// screenClient is the client hash an id of screenTxID's carries.
func screenClient(id string) (uint64, bool) {
	if len(id) < 18 || id[:1] != screenIDPrefix || id[17] != '-' {
		return 0, false
	}
	var v uint64
	for i := 1; i < 17; i++ {
		c := id[i]
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(c)
	}
	return v, true
}
