package waf

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/wasilibs/go-re2/experimental"
)

// noCapture is a transaction that captures nothing, of the client
// 192.0.2.1 (or of id's): all Evaluate asks of it outside a capturing
// rule.
type noCapture struct {
	plugintypes.TransactionState
	id string
}

func (noCapture) Capturing() bool { return false }

var testClientID = screenTxID(netip.MustParsePrefix("192.0.2.1/32"))

func (t noCapture) ID() string {
	if t.id == "" {
		return testClientID
	}
	return t.id
}

// screenValues are benign and hostile values of the kinds the CRS reads.
var screenValues = []string{
	"", "acc_1", "1500", "rent", "json.amount", "Go-http-client/1.1", "application/json", "gzip",
	"1' OR '1'='1' --", "<script>alert(1)</script>", "$(cat /etc/passwd)", "; cat /etc/passwd",
	"../../etc/passwd", "${jndi:ldap://x/a}", "union select password from users", "eval(atob('x'))",
	"İstanbul", "a\nb\r\nc",
}

// TestScreenCacheDecidesAsRegexp: every screened CRS pattern answers as
// Go's regexp on each value the first time (RE2 asked) and the second
// (RE2's answer remembered), and the answer is remembered.
func TestScreenCacheDecidesAsRegexp(t *testing.T) {
	pats := screenedPatterns(t)
	cached := 0
	for _, v := range screenValues {
		for _, c := range pats {
			want := c.re.MatchString(v)
			for round := range 2 {
				if got := c.Evaluate(noCapture{}, v); got != want {
					t.Fatalf("round %d: %q on %q: %v, Go's regexp %v", round, c.re.String(), v, got, want)
				}
			}
			if c.screen == nil || c.index < 0 {
				continue
			}
			client, _ := screenClient(testClientID)
			if _, known := verdictCache.verdicts(client, v).answer(c.index); known {
				cached++
			}
		}
	}
	// Every pattern RE2 compiled and every value was asked (none is
	// long enough to fill a DFA's memory).
	want := 0
	for _, c := range pats {
		if c.screen != nil && c.index >= 0 {
			want++
		}
	}
	if want < 250 || cached != want*len(screenValues) {
		t.Fatalf("%d answers remembered, want %d (%d patterns × %d values)", cached, want*len(screenValues), want, len(screenValues))
	}
}

// TestScreenCacheAnswers: a remembered answer is what decides, without
// RE2 (a screen that now matches nothing changes no remembered answer);
// a remembered "yes" still goes to Go's regexp, which decides.
func TestScreenCacheAnswers(t *testing.T) {
	o, err := newScreenedRx(pluginOptions(`attack-[0-9]+`))
	if err != nil {
		t.Fatal(err)
	}
	c := o.(*screenedRx)
	if c.screen == nil || c.index < 0 {
		t.Fatal("pattern not screened")
	}
	const hit, miss = "an attack-42 here", "benign words"
	if !c.Evaluate(noCapture{}, hit) || c.Evaluate(noCapture{}, miss) {
		t.Fatal("first answers wrong")
	}
	never, err := experimental.CompileSet([]string{`\A\z`}) // matches only ""
	if err != nil {
		t.Fatal(err)
	}
	c.screen = never
	if !c.Evaluate(noCapture{}, hit) {
		t.Fatal("a remembered RE2 match was not taken to Go's regexp")
	}
	if c.Evaluate(noCapture{}, miss) {
		t.Fatal("a remembered RE2 miss did not decide")
	}
	// A value not seen before asks the (new) screen.
	if c.Evaluate(noCapture{}, "another attack-"+strconv.FormatInt(time.Now().UnixNano(), 10)) {
		t.Fatal("a new value was not asked of the screen")
	}
	// Another client's remembered answers are not this one's: its
	// first question goes to the (new) screen.
	other := noCapture{id: screenTxID(netip.MustParsePrefix("198.51.100.7/32"))}
	if c.Evaluate(other, hit) {
		t.Fatal("one client's remembered answer decided for another")
	}
	// Nor for a transaction whose id carries no client.
	if c.Evaluate(noCapture{id: "AbCdEfGhIjKlMnOpQrS"}, hit) {
		t.Fatal("a transaction without a client was answered from the cache")
	}
	// Invalid UTF-8 is never screened, so never remembered: Go decides.
	if !c.Evaluate(noCapture{}, "\xffattack-1") {
		t.Fatal("an invalid value was not decided by Go's regexp")
	}
}

// TestScreenCacheBounds: values beyond the length bound are not kept, a
// cache holds no more than its shards' bound whatever it is sent, and the
// numbering of patterns stops at the cache's bits.
func TestScreenCacheBounds(t *testing.T) {
	c := newScreenCache()
	if c.verdicts(1, strings.Repeat("a", screenCacheMaxValue+1)) != nil {
		t.Fatal("a value above the bound was kept")
	}
	if c.verdicts(1, strings.Repeat("a", screenCacheMaxValue)) == nil {
		t.Fatal("a value at the bound was not kept")
	}
	const max = screenCacheShards * screenCacheShardValues
	for i := range 4 * max {
		v := c.verdicts(uint64(i%7), "value-"+strconv.Itoa(i))
		v.remember(i%screenCacheMaxPatterns, i%2 == 0)
		if m, known := v.answer(i % screenCacheMaxPatterns); !known || m != (i%2 == 0) {
			t.Fatalf("value %d: answer %v/%v", i, m, known)
		}
	}
	if n := c.len(); n > max || n < max/2 {
		t.Fatalf("cache holds %d values, bound %d", n, max)
	}
	// The same value, asked again, is the same entry.
	a, b := c.verdicts(1, "same"), c.verdicts(1, "same")
	if a != b {
		t.Fatal("one value, two entries")
	}
	if c.verdicts(2, "same") == a {
		t.Fatal("two clients' value, one entry")
	}
	// Two values of one slot (a hash collision, planted here) take
	// turns in it; neither gets the other's answers.
	h := c.hash(1, "slot-x")
	planted := &screenVerdicts{client: 2, value: "slot-y"}
	planted.remember(3, true)
	c.shards[h%screenCacheShards].values[h] = planted
	if _, known := c.verdicts(1, "slot-x").answer(3); known {
		t.Fatal("a value got the answers of another value of its slot")
	}
	// A cache's copy of the key does not alias the caller's bytes.
	buf := []byte("aliased-value")
	s := unsafe.String(&buf[0], len(buf))
	c.verdicts(1, s).remember(0, true)
	copy(buf, "XXXXXXXXXXXXX")
	if _, known := c.verdicts(1, "aliased-value").answer(0); !known {
		t.Fatal("the cache kept the caller's bytes, not a copy")
	}

	p := &patternIndexes{of: map[string]int{}}
	if i, j := p.index("(?sm)a"), p.index("(?sm)a"); i != 0 || j != 0 {
		t.Fatalf("one pattern, indexes %d and %d", i, j)
	}
	for k := range screenCacheMaxPatterns + 1 {
		p.index("(?sm)fill-" + strconv.Itoa(k))
	}
	if got := p.index("(?sm)after-fill"); got != -1 {
		t.Fatalf("index %d beyond the cache's %d bits", got, screenCacheMaxPatterns)
	}
	if got := p.index("(?sm)a"); got != 0 {
		t.Fatalf("a numbered pattern lost its index: %d", got)
	}
	if len(p.of) != screenCacheMaxPatterns {
		t.Fatalf("%d patterns numbered, bound %d", len(p.of), screenCacheMaxPatterns)
	}
}

// TestScreenCacheConcurrent: goroutines asking the same patterns about the
// same values at once all get Go's regexp's answer.
func TestScreenCacheConcurrent(t *testing.T) {
	pats := screenedPatterns(t)
	if raceEnabled || testing.Short() {
		pats = pats[:40]
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range screenValues {
				v := screenValues[(i+g)%len(screenValues)] + " concurrent"
				if !utf8.ValidString(v) {
					continue
				}
				for _, c := range pats {
					if got, want := c.Evaluate(noCapture{}, v), c.re.MatchString(v); got != want {
						errs <- c.re.String() + " on " + strconv.Quote(v)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error("disagrees with Go's regexp:", e)
	}
}

// TestScreenTxID: an id carries a keyed hash of its client, never the
// address; two clients' ids carry two hashes, one client's ids the same
// one and are each unique; an id without a client carries none.
func TestScreenTxID(t *testing.T) {
	a1 := screenTxID(netip.MustParsePrefix("203.0.113.9/32"))
	a2 := screenTxID(netip.MustParsePrefix("203.0.113.9/32"))
	b := screenTxID(netip.MustParsePrefix("2001:db8::/64"))
	if a1 == a2 {
		t.Fatal("two transactions, one id")
	}
	ha1, ok1 := screenClient(a1)
	ha2, ok2 := screenClient(a2)
	hb, ok3 := screenClient(b)
	if !ok1 || !ok2 || !ok3 || ha1 != ha2 || ha1 == hb {
		t.Fatalf("client hashes %x %x %x (%v %v %v)", ha1, ha2, hb, ok1, ok2, ok3)
	}
	if strings.Contains(a1, "203.0.113.9") || strings.Contains(b, "2001") {
		t.Fatalf("an id spells its client's address: %q %q", a1, b)
	}
	if _, ok := screenClient(screenTxID(netip.Prefix{})); ok {
		t.Fatal("an id without a client carries one")
	}
	for _, id := range []string{"", "s", "s0123456789abcdef", "x0123456789abcdef-1", "s0123456789abcdeg-1", "AbCdEfGhIjKlMnOpQrS"} {
		if _, ok := screenClient(id); ok {
			t.Errorf("%q read as an id with a client", id)
		}
	}
}

// TestScreenCacheSharesNothingAcrossClients runs the WAF's handler: one
// client's requests fill the cache for that client only.
func TestScreenCacheSharesNothingAcrossClients(t *testing.T) {
	w := newSuiteWAF(t, GatewayConfig())
	h := w.Handler(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { rw.WriteHeader(http.StatusNoContent) }))
	value := "probe-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	send := func(addr string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = addr + ":4000"
		r.Header.Set("User-Agent", value)
		r.Header.Set("Accept", "text/html")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != http.StatusNoContent {
			t.Fatalf("status %d", rec.Code)
		}
	}
	known := func(addr string) int {
		client, _ := screenClient(screenTxID(netip.MustParsePrefix(addr + "/32")))
		v := verdictCache.verdicts(client, value)
		n := 0
		for i := range screenCacheMaxPatterns {
			if _, ok := v.answer(i); ok {
				n++
			}
		}
		return n
	}
	send("192.0.2.10")
	if n := known("192.0.2.10"); n == 0 {
		t.Fatal("the sender's answers were not remembered")
	}
	if n := known("192.0.2.11"); n != 0 {
		t.Fatalf("another client holds %d of the sender's answers", n)
	}
}
