package clientip

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

var proxies = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("fd00::/8"),
}

type hdr struct{ name, value string }

type resolveCase struct {
	name    string
	cfg     Config
	remote  string
	headers []hdr
	want    string // "" means an error is expected
	wantErr error
}

func resolveCases() []resolveCase {
	xff := Config{TrustedProxies: proxies}
	fwd := Config{TrustedProxies: proxies, Header: Forwarded}
	vendor := Config{TrustedProxies: proxies, Header: "cf-connecting-ip"}
	return []resolveCase{
		{name: "zero config uses RemoteAddr", remote: "198.51.100.7:5555", want: "198.51.100.7"},
		{name: "zero config ignores XFF", remote: "198.51.100.7:5555",
			headers: []hdr{{XForwardedFor, "1.2.3.4"}}, want: "198.51.100.7"},
		{name: "spoofed XFF from untrusted peer", cfg: xff, remote: "198.51.100.7:5555",
			headers: []hdr{{XForwardedFor, "1.2.3.4, 10.0.0.1"}}, want: "198.51.100.7"},
		{name: "spoofed vendor header from untrusted peer", cfg: vendor, remote: "198.51.100.7:5555",
			headers: []hdr{{"CF-Connecting-IP", "1.2.3.4"}}, want: "198.51.100.7"},
		{name: "one trusted proxy", cfg: xff, remote: "10.0.0.2:80",
			headers: []hdr{{XForwardedFor, "203.0.113.9"}}, want: "203.0.113.9"},
		{name: "client-supplied prefix ignored", cfg: xff, remote: "10.0.0.2:80",
			headers: []hdr{{XForwardedFor, "1.2.3.4, 203.0.113.9"}}, want: "203.0.113.9"},
		{name: "garbage left of the client is never read", cfg: xff, remote: "10.0.0.2:80",
			headers: []hdr{{XForwardedFor, "not-an-ip, 203.0.113.9"}}, want: "203.0.113.9"},
		{name: "chain through several trusted proxies", cfg: xff, remote: "10.0.0.3:80",
			headers: []hdr{{XForwardedFor, "1.1.1.1, 203.0.113.9, 10.1.1.1, 10.2.2.2"}}, want: "203.0.113.9"},
		{name: "chain split over several header lines", cfg: xff, remote: "10.0.0.3:80",
			headers: []hdr{{XForwardedFor, "1.1.1.1, 203.0.113.9"}, {XForwardedFor, "10.1.1.1"}}, want: "203.0.113.9"},
		{name: "all hops trusted gives leftmost", cfg: xff, remote: "10.0.0.3:80",
			headers: []hdr{{XForwardedFor, "10.9.9.9, 10.1.1.1"}}, want: "10.9.9.9"},
		{name: "trusted peer without header is the client", cfg: xff, remote: "10.0.0.3:80", want: "10.0.0.3"},
		{name: "empty list elements skipped", cfg: xff, remote: "10.0.0.3:80",
			headers: []hdr{{XForwardedFor, "203.0.113.9,, ,"}}, want: "203.0.113.9"},
		{name: "IPv4 hop with port", cfg: xff, remote: "10.0.0.3:80",
			headers: []hdr{{XForwardedFor, "203.0.113.9:4711"}}, want: "203.0.113.9"},
		{name: "bracketed IPv6 hop with port", cfg: xff, remote: "10.0.0.3:80",
			headers: []hdr{{XForwardedFor, "[2001:db8::1]:4711"}}, want: "2001:db8::1"},
		{name: "bare IPv6 hop", cfg: xff, remote: "[fd00::1]:80",
			headers: []hdr{{XForwardedFor, "2001:db8::1"}}, want: "2001:db8::1"},
		{name: "mapped hop is unmapped", cfg: xff, remote: "10.0.0.3:80",
			headers: []hdr{{XForwardedFor, "::ffff:203.0.113.9"}}, want: "203.0.113.9"},
		{name: "mapped RemoteAddr is unmapped", remote: "[::ffff:198.51.100.7]:80", want: "198.51.100.7"},
		{name: "mapped trusted peer is trusted", cfg: xff, remote: "[::ffff:10.0.0.3]:80",
			headers: []hdr{{XForwardedFor, "203.0.113.9"}}, want: "203.0.113.9"},
		{name: "mapped trusted hop is skipped", cfg: xff, remote: "10.0.0.3:80",
			headers: []hdr{{XForwardedFor, "203.0.113.9, ::ffff:10.1.1.1"}}, want: "203.0.113.9"},
		{name: "RemoteAddr zone stripped", remote: "[fe80::1%eth0]:80", want: "fe80::1"},
		{name: "zone in hop rejected", cfg: xff, remote: "10.0.0.3:80",
			headers: []hdr{{XForwardedFor, "fe80::1%eth0"}}, wantErr: ErrMalformed},
		{name: "bracketed zone in hop rejected", cfg: xff, remote: "10.0.0.3:80",
			headers: []hdr{{XForwardedFor, "[fe80::1%25eth0]:80"}}, wantErr: ErrMalformed},
		{name: "garbage hop from trusted proxy", cfg: xff, remote: "10.0.0.3:80",
			headers: []hdr{{XForwardedFor, "203.0.113.9, garbage"}}, wantErr: ErrMalformed},
		{name: "hostname hop rejected", cfg: xff, remote: "10.0.0.3:80",
			headers: []hdr{{XForwardedFor, "example.com"}}, wantErr: ErrMalformed},
		{name: "bad port rejected", cfg: xff, remote: "10.0.0.3:80",
			headers: []hdr{{XForwardedFor, "203.0.113.9:99999"}}, wantErr: ErrMalformed},
		{name: "IPv6 in brackets must be IPv6", cfg: xff, remote: "10.0.0.3:80",
			headers: []hdr{{XForwardedFor, "[203.0.113.9]"}}, wantErr: ErrMalformed},
		{name: "garbage RemoteAddr", remote: "nonsense", wantErr: ErrMalformed},
		{name: "missing RemoteAddr", remote: "", wantErr: ErrNoAddress},
		{name: "Forwarded simple", cfg: fwd, remote: "10.0.0.3:80",
			headers: []hdr{{Forwarded, "for=203.0.113.9;proto=https"}}, want: "203.0.113.9"},
		{name: "Forwarded chain with quoted IPv6", cfg: fwd, remote: "10.0.0.3:80",
			headers: []hdr{{Forwarded, `for=1.1.1.1, For="[2001:db8:cafe::17]:4711";by=10.0.0.1, for=10.2.2.2`}}, want: "2001:db8:cafe::17"},
		{name: "Forwarded ignores X-Forwarded-For", cfg: fwd, remote: "10.0.0.3:80",
			headers: []hdr{{Forwarded, "for=203.0.113.9"}, {XForwardedFor, "1.2.3.4"}}, want: "203.0.113.9"},
		{name: "XFF mode ignores Forwarded", cfg: xff, remote: "10.0.0.3:80",
			headers: []hdr{{Forwarded, "for=1.2.3.4"}, {XForwardedFor, "203.0.113.9"}}, want: "203.0.113.9"},
		{name: "Forwarded unknown rejected", cfg: fwd, remote: "10.0.0.3:80",
			headers: []hdr{{Forwarded, "for=unknown"}}, wantErr: ErrMalformed},
		{name: "Forwarded obfuscated rejected", cfg: fwd, remote: "10.0.0.3:80",
			headers: []hdr{{Forwarded, "for=_hidden"}}, wantErr: ErrMalformed},
		{name: "Forwarded unbracketed IPv6 rejected", cfg: fwd, remote: "10.0.0.3:80",
			headers: []hdr{{Forwarded, "for=2001:db8::1"}}, wantErr: ErrMalformed},
		{name: "Forwarded element without for rejected", cfg: fwd, remote: "10.0.0.3:80",
			headers: []hdr{{Forwarded, "proto=https"}}, wantErr: ErrMalformed},
		{name: "Forwarded two for rejected", cfg: fwd, remote: "10.0.0.3:80",
			headers: []hdr{{Forwarded, "for=1.2.3.4;for=203.0.113.9"}}, wantErr: ErrMalformed},
		{name: "Forwarded unterminated quote rejected", cfg: fwd, remote: "10.0.0.3:80",
			headers: []hdr{{Forwarded, `for="203.0.113.9`}}, wantErr: ErrMalformed},
		{name: "vendor header from trusted peer", cfg: vendor, remote: "10.0.0.3:80",
			headers: []hdr{{"Cf-Connecting-Ip", "2001:db8::7"}, {XForwardedFor, "1.2.3.4"}}, want: "2001:db8::7"},
		{name: "vendor header absent falls back to peer", cfg: vendor, remote: "10.0.0.3:80",
			headers: []hdr{{XForwardedFor, "1.2.3.4"}}, want: "10.0.0.3"},
		{name: "vendor header twice rejected", cfg: vendor, remote: "10.0.0.3:80",
			headers: []hdr{{"CF-Connecting-IP", "2001:db8::7"}, {"CF-Connecting-IP", "2001:db8::8"}}, wantErr: ErrMalformed},
		{name: "vendor header list rejected", cfg: vendor, remote: "10.0.0.3:80",
			headers: []hdr{{"CF-Connecting-IP", "2001:db8::7, 1.2.3.4"}}, wantErr: ErrMalformed},
	}
}

func TestResolve(t *testing.T) {
	for _, tc := range resolveCases() {
		t.Run(tc.name, func(t *testing.T) {
			res, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tc.remote
			for _, h := range tc.headers {
				r.Header.Add(h.name, h.value)
			}
			got, err := res.Resolve(r)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Resolve = %v, %v; want error %v", got, err, tc.wantErr)
				}
				if got.IsValid() {
					t.Fatalf("Resolve returned address %v with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if got != netip.MustParseAddr(tc.want) {
				t.Fatalf("Resolve = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"invalid prefix": {TrustedProxies: []netip.Prefix{{}}},
		"bad header":     {Header: "X Bad:Header"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := New(cfg); err == nil {
				t.Fatal("New accepted a bad config")
			}
		})
	}
}

func TestNewCopiesAndNormalizesPrefixes(t *testing.T) {
	in := []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}
	res, err := New(Config{TrustedProxies: in})
	if err != nil {
		t.Fatal(err)
	}
	in[0] = netip.MustParsePrefix("0.0.0.0/0")
	if !res.Trusted(netip.MustParseAddr("10.1.2.3")) {
		t.Fatal("mapped prefix ::ffff:10.0.0.0/104 does not trust 10.1.2.3")
	}
	if res.Trusted(netip.MustParseAddr("11.1.2.3")) {
		t.Fatal("resolver kept a reference to the caller's slice")
	}
}

func TestContext(t *testing.T) {
	if _, ok := FromContext(context.Background()); ok {
		t.Fatal("empty context has an address")
	}
	a := netip.MustParseAddr("2001:db8::1")
	got, ok := FromContext(NewContext(context.Background(), a))
	if !ok || got != a {
		t.Fatalf("FromContext = %v, %v", got, ok)
	}
}

func FuzzResolve(f *testing.F) {
	for _, tc := range resolveCases() {
		v := ""
		for _, h := range tc.headers {
			v += h.value + "\n"
		}
		f.Add(tc.remote, v, uint8(0))
		f.Add(tc.remote, v, uint8(1))
		f.Add(tc.remote, v, uint8(2))
	}
	f.Fuzz(func(t *testing.T, remote, values string, m uint8) {
		cfg := Config{TrustedProxies: proxies}
		name := XForwardedFor
		switch m % 3 {
		case 1:
			cfg.Header, name = Forwarded, Forwarded
		case 2:
			cfg.Header, name = "X-Real-IP", "X-Real-Ip"
		}
		res, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		r := &http.Request{RemoteAddr: remote, Header: http.Header{}}
		for v := range strings.SplitSeq(values, "\n") {
			r.Header.Add(name, v)
		}
		got, err := res.Resolve(r)
		if err != nil {
			if got.IsValid() {
				t.Fatalf("address %v returned with error %v", got, err)
			}
			return
		}
		if !got.IsValid() || got.Zone() != "" || got.Is4In6() {
			t.Fatalf("Resolve returned %v (valid %v)", got, got.IsValid())
		}
		peer, perr := remoteAddr(remote)
		if perr != nil {
			t.Fatalf("Resolve succeeded on bad RemoteAddr %q", remote)
		}
		// Invariant: an untrusted peer is always the answer, whatever
		// the headers say.
		if !res.Trusted(peer) && got != peer {
			t.Fatalf("untrusted peer %v, headers chose %v", peer, got)
		}
		// Invariant: the answer is the peer or one of the header's hops.
		if got != peer && !inHeaders(got, values, m%3) {
			t.Fatalf("answer %v is not a hop of %q", got, values)
		}
	})
}

func inHeaders(a netip.Addr, values string, m uint8) bool {
	for line := range strings.SplitSeq(values, "\n") {
		if m == 2 {
			if h, ok := parseHop(strings.TrimSpace(line)); ok && h == a {
				return true
			}
			continue
		}
		for elem := range strings.SplitSeq(line, ",") {
			elem = strings.TrimSpace(elem)
			var h netip.Addr
			var ok bool
			if m == 1 {
				h, ok = parseForwardedElement(elem)
			} else {
				h, ok = parseHop(elem)
			}
			if ok && h == a {
				return true
			}
		}
	}
	return false
}

func TestConfigErrorsMatch(t *testing.T) {
	for _, cfg := range []Config{
		{TrustedProxies: []netip.Prefix{{}}},
		{Header: "Bad Header"},
	} {
		if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%+v: %v, want ErrInvalidConfig", cfg, err)
		}
	}
}
