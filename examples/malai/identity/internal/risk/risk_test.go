package risk

import (
	"fmt"
	"github.com/malai-sec/malai/internal/fakeclock"
	"net/netip"
	"testing"
	"time"
)

func TestScore(t *testing.T) {
	tests := []struct {
		name string
		s    Signals
		want Decision
	}{
		{"clean", Signals{}, Allow},
		{"new network alone", Signals{NewNetwork: true}, Allow},
		{"few typos", Signals{AccountFailures: 4, PairFailures: 4}, Allow},
		{"five from this network", Signals{AccountFailures: 5, PairFailures: 5}, Block},
		{"five elsewhere, known network", Signals{AccountFailures: 5}, Allow},
		{"five elsewhere, new network", Signals{AccountFailures: 5, NewNetwork: true}, StepUp},
		{"ten elsewhere", Signals{AccountFailures: 10}, StepUp},
		{"twenty elsewhere", Signals{AccountFailures: 20}, Block},
		{"noisy network", Signals{NetworkFailures: 10}, StepUp},
		{"very noisy network", Signals{NetworkFailures: 30}, Block},
		{"stuffing five accounts", Signals{DistinctAccounts: 5}, StepUp},
		{"stuffing ten accounts", Signals{DistinctAccounts: 10}, Block},
		{"breached", Signals{Breached: true}, Block},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := Score(tt.s)
			if a.Decision != tt.want {
				t.Fatalf("Score(%+v) = %v (score %d, %v), want %v", tt.s, a.Decision, a.Score, a.Reasons, tt.want)
			}
		})
	}
}

func TestNetwork(t *testing.T) {
	a := Network(netip.MustParseAddr("2001:db8:1:2:aaaa::1"))
	b := Network(netip.MustParseAddr("2001:db8:1:2:bbbb::9"))
	if a != b || a.Bits() != 64 {
		t.Fatalf("IPv6 addresses in one /64 map to %v and %v", a, b)
	}
	if got := Network(netip.MustParseAddr("::ffff:192.0.2.7")); got != netip.MustParsePrefix("192.0.2.7/32") {
		t.Fatalf("mapped IPv4 → %v", got)
	}
	if Network(netip.Addr{}).IsValid() {
		t.Fatal("zero address gave a valid network")
	}
}

func TestEngineWindow(t *testing.T) {
	c := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e := New(15*time.Minute, c.Now)
	n := Network(netip.MustParseAddr("192.0.2.1"))
	other := Network(netip.MustParseAddr("198.51.100.1"))
	for range 5 {
		e.Failure("alice", n)
	}
	if got := e.Assess("alice", n); got.Decision != Block || got.PairFailures != 5 {
		t.Fatalf("after 5 failures from one network: %+v", got)
	}
	if got := e.Assess("alice", other); got.Decision != Allow || got.AccountFailures != 5 {
		t.Fatalf("other network should be allowed: %+v", got)
	}
	c.Advance(15*time.Minute + time.Second)
	if got := e.Assess("alice", n); got.Decision != Allow || got.AccountFailures != 0 {
		t.Fatalf("failures outside the window still count: %+v", got)
	}
}

func TestEngineStuffingAndSuccess(t *testing.T) {
	c := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e := New(0, c.Now)
	n := Network(netip.MustParseAddr("203.0.113.9"))
	for i := range 10 {
		e.Failure(fmt.Sprintf("user%d", i), n)
	}
	got := e.Assess("somebody-else", n)
	if got.DistinctAccounts != 10 || got.Decision != Block {
		t.Fatalf("stuffing not detected: %+v", got)
	}
	e.Failure("bob", n)
	e.Failure("bob", n)
	e.Failure("bob", n)
	e.Success("bob", n)
	if got := e.Assess("bob", n); got.AccountFailures != 0 || got.PairFailures != 0 || got.NetworkFailures != 13 {
		t.Fatalf("Success should clear account counters only: %+v", got)
	}
}

func TestEngineBounded(t *testing.T) {
	c := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e := New(0, c.Now)
	n := Network(netip.MustParseAddr("203.0.113.9"))
	for i := range 3 * sweepEvery {
		e.Failure(fmt.Sprintf("u%d", i), n)
		c.Advance(time.Second)
	}
	// Per-network distinct-account memory is capped.
	if got := len(e.network[n].accounts); got != maxAccounts {
		t.Fatalf("distinct accounts kept %d, want cap %d", got, maxAccounts)
	}
	c.Advance(time.Hour)
	for i := range sweepEvery {
		e.Failure(fmt.Sprintf("v%d", i), Network(netip.MustParseAddr("192.0.2.200")))
	}
	// The sweep dropped everything from the first wave.
	if tr := e.Tracked(); tr > 2*sweepEvery+1 {
		t.Fatalf("expired keys not swept: %d tracked", tr)
	}
}
