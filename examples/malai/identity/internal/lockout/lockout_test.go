package lockout

import (
	"slices"
	"testing"
	"time"

	"github.com/malai-sec/malai/examples/malai/identity/store"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func tally(events, members int, ago time.Duration) store.Tally {
	return store.Tally{Events: events, Members: members, Last: now.Add(-ago)}
}

func TestBefore(t *testing.T) {
	var c Config
	tests := []struct {
		name   string
		in     Before
		want   Decision
		reason string
		wait   time.Duration
		attack bool
	}{
		{"clean", Before{}, Allow, "", 0, false},
		{"four typos from one network", Before{Pair: tally(4, 1, 0), Account: tally(4, 1, 0)}, Allow, "", 0, false},
		{"five from one network: one second", Before{Pair: tally(5, 1, 0)}, Throttle, ReasonPair, time.Second, false},
		{"eight from one network: eight seconds", Before{Pair: tally(8, 1, 0)}, Throttle, ReasonPair, 8 * time.Second, false},
		{"the wait has passed", Before{Pair: tally(8, 1, 9*time.Second)}, Allow, ReasonPair, 0, false},
		{"capped at fifteen minutes", Before{Pair: tally(64, 1, 0)}, Throttle, ReasonPair, 15 * time.Minute, false},
		{"noisy network", Before{Network: tally(30, 2, 0)}, Throttle, ReasonNetwork, time.Second, false},
		{"stuffing ten accounts", Before{Network: tally(10, 10, 0)}, Throttle, ReasonStuffing, time.Second, false},
		{"one password on five accounts", Before{Spray: tally(5, 5, 0)}, Throttle, ReasonSpray, time.Second, false},
		{"one password on four accounts", Before{Spray: tally(4, 4, 0)}, Allow, "", 0, false},
		{"ten failures on the account", Before{Account: tally(10, 1, 0)}, Throttle, ReasonAccount, time.Second, true},
		{"three networks, five failures", Before{Account: tally(5, 3, 0)}, Throttle, ReasonAccount, time.Second, true},
		{"two networks, eight failures", Before{Account: tally(8, 2, 0)}, Allow, "", 0, false},
		{"four networks times five", Before{Account: tally(20, 4, 0)}, Throttle, ReasonAccount, 15 * time.Minute, true},
		{"known device ignores the attack", Before{KnownDevice: true, Pair: tally(64, 1, 0), Network: tally(64, 64, 0),
			Account: tally(64, 30, 0), Spray: tally(64, 64, 0)}, Allow, ReasonKnownDevice, 0, false},
		{"a known device's own failures", Before{KnownDevice: true, Device: tally(10, 1, 0)}, Throttle, ReasonDevice, time.Second, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := c.Before(tc.in, now)
			if v.Decision != tc.want || v.RetryAfter != tc.wait || v.UnderAttack != tc.attack {
				t.Fatalf("got %v wait %v attack %v (%v), want %v wait %v attack %v", v.Decision, v.RetryAfter, v.UnderAttack, v.Reasons, tc.want, tc.wait, tc.attack)
			}
			if tc.reason != "" && !slices.Contains(v.Reasons, tc.reason) {
				t.Fatalf("reasons %v lack %q", v.Reasons, tc.reason)
			}
		})
	}
}

func TestAfter(t *testing.T) {
	var c Config
	attack := Verdict{UnderAttack: true}
	tests := []struct {
		name                    string
		before                  Verdict
		known, newNet, enrolled bool
		want                    Decision
	}{
		{"ordinary", Verdict{}, false, false, false, Allow},
		{"new network alone", Verdict{}, false, true, false, Allow},
		{"enrolled always steps up", Verdict{}, false, false, true, StepUp},
		{"attack, known network", attack, false, false, false, Allow},
		{"attack, new network, no second factor: blocked", attack, false, true, false, Block},
		{"attack, new network, second factor", attack, false, true, true, StepUp},
		{"attack, known device, new network", attack, true, true, false, Allow},
		{"known device, enrolled", Verdict{}, true, false, true, StepUp},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.After(tc.before, tc.known, tc.newNet, tc.enrolled).Decision; got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCodes(t *testing.T) {
	var c Config
	for _, tc := range []struct {
		failures int
		ago      time.Duration
		want     Decision
		wait     time.Duration
	}{
		{0, 0, Allow, 0},
		{2, 0, Allow, 0},
		{3, 0, Throttle, 30 * time.Second},
		{4, 0, Throttle, time.Minute},
		{10, 0, Throttle, time.Hour},
		{10, time.Hour, Allow, 0},
	} {
		v := c.Codes(tally(tc.failures, 1, tc.ago), now)
		if v.Decision != tc.want || v.RetryAfter != tc.wait {
			t.Fatalf("%d failures %v ago: %v %v, want %v %v", tc.failures, tc.ago, v.Decision, v.RetryAfter, tc.want, tc.wait)
		}
	}
}
