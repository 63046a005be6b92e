package ratelimit_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/malai-sec/malai/ratelimit"
)

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReputationFilesAndReload(t *testing.T) {
	dir := t.TempDir()
	deny := writeFile(t, dir, "deny.txt", `
# known abusers
198.51.100.0/24
2001:db8:bad::/48   # a hosting range
192.0.2.77
::ffff:203.0.113.0/120
10.1.2.3/8           # host bits are masked
`)
	allow := writeFile(t, dir, "allow.txt", "198.51.100.10\n")
	rep, err := ratelimit.NewReputation(ratelimit.ReputationConfig{DenyFiles: []string{deny}, AllowFiles: []string{allow}})
	if err != nil {
		t.Fatal(err)
	}
	check := func(want map[string]ratelimit.Verdict) {
		t.Helper()
		for a, v := range want {
			if got := rep.Lookup(netip.MustParseAddr(a)); got != v {
				t.Errorf("Lookup(%s) = %v, want %v", a, got, v)
			}
		}
	}
	check(map[string]ratelimit.Verdict{
		"198.51.100.1":         ratelimit.Denied,
		"198.51.100.10":        ratelimit.Allowed,
		"198.51.101.1":         ratelimit.Unlisted,
		"2001:db8:bad:ffff::1": ratelimit.Denied,
		"2001:db8:bae::1":      ratelimit.Unlisted,
		"192.0.2.77":           ratelimit.Denied,
		"192.0.2.78":           ratelimit.Unlisted,
		"203.0.113.9":          ratelimit.Denied,
		"::ffff:203.0.113.9":   ratelimit.Denied,
		"10.200.0.1":           ratelimit.Denied,
		"11.0.0.1":             ratelimit.Unlisted,
	})
	if rep.Len() != 6 {
		t.Fatalf("Len = %d, want 6", rep.Len())
	}

	// Reload picks up the new file content.
	writeFile(t, dir, "deny.txt", "192.0.2.78\n")
	if err := rep.Reload(); err != nil {
		t.Fatal(err)
	}
	check(map[string]ratelimit.Verdict{
		"198.51.100.1":  ratelimit.Unlisted,
		"192.0.2.78":    ratelimit.Denied,
		"198.51.100.10": ratelimit.Allowed,
	})

	// A broken file keeps the previous lists and names the line.
	writeFile(t, dir, "deny.txt", "192.0.2.79\nnot-a-prefix\n")
	err = rep.Reload()
	if !errors.Is(err, ratelimit.ErrReputationFile) || !strings.Contains(err.Error(), "deny.txt:2") {
		t.Fatalf("Reload of a broken file: %v", err)
	}
	check(map[string]ratelimit.Verdict{"192.0.2.78": ratelimit.Denied, "192.0.2.79": ratelimit.Unlisted})

	// A missing file fails too.
	os.Remove(deny)
	if err := rep.Reload(); !errors.Is(err, ratelimit.ErrReputationFile) {
		t.Fatalf("Reload of a missing file: %v", err)
	}
	check(map[string]ratelimit.Verdict{"192.0.2.78": ratelimit.Denied})
}

func TestReputationRejects(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"zone":     "fe80::1%eth0\n",
		"hostname": "example.com\n",
		"bits":     "10.0.0.0/33\n",
	} {
		f := writeFile(t, dir, name, content)
		if _, err := ratelimit.NewReputation(ratelimit.ReputationConfig{DenyFiles: []string{f}}); err == nil {
			t.Errorf("%s: accepted %q", name, content)
		}
	}
	if _, err := ratelimit.NewReputation(ratelimit.ReputationConfig{Deny: []netip.Prefix{{}}}); err == nil {
		t.Error("accepted an invalid prefix")
	}
}

func TestReputationSamePrefixDenyWins(t *testing.T) {
	p := netip.MustParsePrefix("192.0.2.0/24")
	rep, err := ratelimit.NewReputation(ratelimit.ReputationConfig{Allow: []netip.Prefix{p}, Deny: []netip.Prefix{p}})
	if err != nil {
		t.Fatal(err)
	}
	if v := rep.Lookup(netip.MustParseAddr("192.0.2.1")); v != ratelimit.Denied {
		t.Fatalf("prefix on both lists: %v", v)
	}
	var nilRep *ratelimit.Reputation
	if nilRep.Lookup(netip.MustParseAddr("192.0.2.1")) != ratelimit.Unlisted || nilRep.Len() != 0 {
		t.Fatal("nil Reputation lists something")
	}
}

// FuzzReputation checks the trie against a brute-force longest-prefix
// match over the same list.
func FuzzReputation(f *testing.F) {
	f.Add([]byte{10, 0, 0, 0, 8, 1, 10, 1, 0, 0, 16, 2}, []byte{10, 1, 2, 3})
	f.Add([]byte{192, 0, 2, 0, 24, 2, 192, 0, 2, 128, 25, 1, 0, 0, 0, 0, 0, 2}, []byte{192, 0, 2, 200})
	f.Add([]byte{0x20, 0x01, 0x0d, 0xb8, 40, 2, 0x20, 0x01, 0x0d, 0xb8, 64, 1}, []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, list, addrBytes []byte) {
		// The list is records of 4 address bytes, a length and a verdict
		// (all IPv4), or, when the first byte is 0x20, 4 bytes that open an
		// IPv6 address in 2001:db8::/32-ish space.
		type entry struct {
			p netip.Prefix
			v ratelimit.Verdict
		}
		var entries []entry
		var deny, allow []netip.Prefix
		for len(list) >= 6 {
			rec := list[:6]
			list = list[6:]
			var a netip.Addr
			if rec[0] == 0x20 {
				var b [16]byte
				copy(b[:], rec[:4])
				a = netip.AddrFrom16(b)
			} else {
				a = netip.AddrFrom4([4]byte(rec[:4]))
			}
			bits := int(rec[4]) % (a.BitLen() + 1)
			p := netip.PrefixFrom(a, bits).Masked()
			v := ratelimit.Allowed
			if rec[5]%2 == 0 {
				v = ratelimit.Denied
				deny = append(deny, p)
			} else {
				allow = append(allow, p)
			}
			entries = append(entries, entry{p, v})
		}
		rep, err := ratelimit.NewReputation(ratelimit.ReputationConfig{Deny: deny, Allow: allow})
		if err != nil {
			t.Fatal(err)
		}
		var addr netip.Addr
		switch len(addrBytes) {
		case 4:
			addr = netip.AddrFrom4([4]byte(addrBytes))
		case 16:
			addr = netip.AddrFrom16([16]byte(addrBytes)).Unmap()
		default:
			return
		}
		want, bestBits := ratelimit.Unlisted, -1
		for _, e := range entries {
			if !e.p.Contains(addr) {
				continue
			}
			switch {
			case e.p.Bits() > bestBits:
				want, bestBits = e.v, e.p.Bits()
			case e.p.Bits() == bestBits && e.v == ratelimit.Denied:
				want = ratelimit.Denied
			}
		}
		if got := rep.Lookup(addr); got != want {
			t.Fatalf("Lookup(%v) = %v, brute force says %v for %v", addr, got, want, entries)
		}
	})
}
