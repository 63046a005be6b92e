package clientip

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/malai-sec/malai/problem"
)

// Header names the resolver understands.
const (
	// XForwardedFor is the de-facto list header: "client, proxy1, proxy2".
	XForwardedFor = "X-Forwarded-For"
	// Forwarded is the RFC 7239 header: `for=192.0.2.1;proto=https, for="[2001:db8::1]:443"`.
	Forwarded = "Forwarded"
)

// Errors returned by [Resolver.Resolve]. Callers use errors.Is.
var (
	// ErrMalformed reports a client address that could not be parsed: a
	// garbage RemoteAddr, or a garbage hop in a forwarding header that a
	// trusted proxy vouched for. The request must not be attributed to
	// any address.
	ErrMalformed = errors.New("clientip: malformed client address")
	// ErrNoAddress reports a request without a RemoteAddr (for example one
	// built by hand instead of by net/http's server).
	ErrNoAddress = errors.New("clientip: request has no remote address")
	// ErrInvalidConfig wraps every configuration error returned by [New].
	ErrInvalidConfig = errors.New("clientip: invalid config")
)

// Config configures a [Resolver]. The zero Config is the strict default:
// the client is the TCP peer (RemoteAddr) and every header is ignored.
type Config struct {
	// TrustedProxies are the networks whose forwarding header is believed.
	// A request whose TCP peer is outside them is attributed to the peer,
	// whatever headers it carries. Empty (the default) trusts no one.
	TrustedProxies []netip.Prefix
	// Header is the one header the trusted proxies write. It must be the
	// header the nearest proxy appends to (or overwrites): a client can
	// send any other header verbatim through the proxy.
	//   - "" or [XForwardedFor]: walk X-Forwarded-For right to left.
	//   - [Forwarded]: walk the RFC 7239 "for=" parameters right to left.
	//   - any other name (X-Real-IP, CF-Connecting-IP, True-Client-IP): a
	//     vendor header holding exactly one address, set by the proxy.
	// Whatever the header, it is read only when the TCP peer is trusted.
	Header string
	// ErrorHandler answers a request [Resolver.Handler] cannot attribute
	// to an address; err wraps [ErrMalformed] or [ErrNoAddress]. Default
	// [DefaultErrorHandler].
	ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)
}

// Resolver finds the client address of a request. Its zero value is not
// usable; build one with [New]. A Resolver is immutable and safe for
// concurrent use.
type Resolver struct {
	trusted []netip.Prefix
	header  string
	mode    mode
	onError func(http.ResponseWriter, *http.Request, error)
}

type mode uint8

const (
	modeXFF mode = iota
	modeForwarded
	modeVendor
)

// New validates cfg and returns a Resolver. It copies the prefix list.
func New(cfg Config) (*Resolver, error) {
	r := &Resolver{onError: cfg.ErrorHandler}
	if r.onError == nil {
		r.onError = DefaultErrorHandler
	}
	for i, p := range cfg.TrustedProxies {
		if !p.IsValid() {
			return nil, fmt.Errorf("%w: TrustedProxies[%d] is not a valid prefix", ErrInvalidConfig, i)
		}
		r.trusted = append(r.trusted, normalizePrefix(p))
	}
	h := http.CanonicalHeaderKey(strings.TrimSpace(cfg.Header))
	switch h {
	case "", XForwardedFor:
		r.header, r.mode = XForwardedFor, modeXFF
	case Forwarded:
		r.header, r.mode = Forwarded, modeForwarded
	default:
		if !validHeaderName(h) {
			return nil, fmt.Errorf("%w: Header %q is not a valid header name", ErrInvalidConfig, cfg.Header)
		}
		r.header, r.mode = h, modeVendor
	}
	return r, nil
}

// normalizePrefix turns ::ffff:a.b.c.d/n (n >= 96) into a.b.c.d/(n-96) so
// that unmapped client addresses match it, and masks it.
func normalizePrefix(p netip.Prefix) netip.Prefix {
	a := p.Addr()
	if a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked()
	}
	return p.Masked()
}

func validHeaderName(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// Trusted reports whether addr is inside one of the trusted proxy networks.
func (r *Resolver) Trusted(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range r.trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Resolve returns the client address of req: IPv4-mapped IPv6 addresses
// are unmapped and zones removed. It never returns an address it could not
// parse; on malformed input it returns an error wrapping [ErrMalformed].
//
// When the TCP peer is trusted, Resolve walks the configured header from
// right to left, skipping hops inside the trusted networks, and returns the
// first untrusted hop. Hops to the left of it were written by the client
// and are never looked at. When every hop is trusted, the leftmost one is
// the client. A trusted peer that sent no header is the client itself.
func (r *Resolver) Resolve(req *http.Request) (netip.Addr, error) {
	peer, err := remoteAddr(req.RemoteAddr)
	if err != nil {
		return netip.Addr{}, err
	}
	if len(r.trusted) == 0 || !r.Trusted(peer) {
		return peer, nil
	}
	values := req.Header.Values(r.header)
	if len(values) == 0 {
		return peer, nil
	}
	if r.mode == modeVendor {
		if len(values) != 1 {
			return netip.Addr{}, fmt.Errorf("%w: %d %s headers", ErrMalformed, len(values), r.header)
		}
		a, ok := parseHop(strings.TrimSpace(values[0]))
		if !ok {
			return netip.Addr{}, fmt.Errorf("%w: in %s", ErrMalformed, r.header)
		}
		return a, nil
	}
	client := peer
	// Header lines are one list in order (RFC 9110 §5.3): walk the last
	// line first, each line from its end.
	for i := len(values) - 1; i >= 0; i-- {
		line := values[i]
		for len(line) > 0 {
			var elem string
			if j := strings.LastIndexByte(line, ','); j >= 0 {
				elem, line = line[j+1:], line[:j]
			} else {
				elem, line = line, ""
			}
			elem = strings.TrimSpace(elem)
			if elem == "" {
				// Empty list elements are allowed by RFC 9110 §5.6.1.
				continue
			}
			var a netip.Addr
			var ok bool
			if r.mode == modeForwarded {
				a, ok = parseForwardedElement(elem)
			} else {
				a, ok = parseHop(elem)
			}
			if !ok {
				return netip.Addr{}, fmt.Errorf("%w: in %s", ErrMalformed, r.header)
			}
			client = a
			if !r.Trusted(a) {
				return a, nil
			}
		}
	}
	return client, nil
}

// remoteAddr parses net/http's RemoteAddr ("ip:port", "[ip%zone]:port").
func remoteAddr(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, ErrNoAddress
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().WithZone("").Unmap(), nil
	}
	// Some servers (unix sockets, tests) put a bare address here.
	if a, err := netip.ParseAddr(s); err == nil {
		return a.WithZone("").Unmap(), nil
	}
	return netip.Addr{}, fmt.Errorf("%w: RemoteAddr", ErrMalformed)
}

// parseHop parses one X-Forwarded-For or vendor header value: "ip",
// "ipv4:port", "[ipv6]" or "[ipv6]:port". Zones are refused: a zone names
// an interface of the host that wrote it and means nothing here.
func parseHop(s string) (netip.Addr, bool) {
	if s == "" || len(s) > 64 {
		return netip.Addr{}, false
	}
	var a netip.Addr
	var err error
	switch {
	case s[0] == '[':
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return netip.Addr{}, false
		}
		if rest := s[end+1:]; rest != "" && !validPort(rest) {
			return netip.Addr{}, false
		}
		a, err = netip.ParseAddr(s[1:end])
		if err != nil || !a.Is6() {
			return netip.Addr{}, false
		}
	case strings.Count(s, ":") == 1:
		// IPv4 with a port.
		host, port, _ := strings.Cut(s, ":")
		if !validPort(":" + port) {
			return netip.Addr{}, false
		}
		a, err = netip.ParseAddr(host)
		if err != nil || !a.Is4() {
			return netip.Addr{}, false
		}
	default:
		a, err = netip.ParseAddr(s)
		if err != nil {
			return netip.Addr{}, false
		}
	}
	if a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func validPort(s string) bool {
	if len(s) < 2 || len(s) > 6 || s[0] != ':' {
		return false
	}
	n := 0
	for i := 1; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n <= 65535
}

// parseForwardedElement extracts the "for" node of one RFC 7239
// forwarded-element (";"-separated pairs). An element without "for", with
// two of them, or whose node is "unknown" or an obfuscated identifier
// ("_hidden") is malformed for our purpose: it names no address.
func parseForwardedElement(elem string) (netip.Addr, bool) {
	var node string
	found := false
	for pair := range strings.SplitSeq(elem, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok {
			return netip.Addr{}, false
		}
		if !strings.EqualFold(strings.TrimSpace(k), "for") {
			continue
		}
		if found {
			return netip.Addr{}, false
		}
		found = true
		node = strings.TrimSpace(v)
	}
	if !found {
		return netip.Addr{}, false
	}
	if len(node) >= 2 && node[0] == '"' {
		if node[len(node)-1] != '"' {
			return netip.Addr{}, false
		}
		node = node[1 : len(node)-1]
		if strings.ContainsAny(node, `"\`) {
			return netip.Addr{}, false
		}
	}
	// RFC 7239 §6: an IPv6 node is always bracketed; an IPv4 node may carry
	// a port; "unknown" and "_obfuscated" identifiers carry no address.
	if node == "" || node[0] != '[' && strings.Contains(node, ":") && strings.Count(node, ":") > 1 {
		return netip.Addr{}, false
	}
	return parseHop(node)
}

type ctxKey struct{}

// NewContext returns a copy of ctx carrying the resolved client address,
// so that later handlers (rate limits, sign-in risk scoring, audit records)
// use the same answer without resolving again.
func NewContext(ctx context.Context, addr netip.Addr) context.Context {
	return context.WithValue(ctx, ctxKey{}, addr)
}

// FromContext returns the client address stored by [NewContext].
func FromContext(ctx context.Context) (netip.Addr, bool) {
	a, ok := ctx.Value(ctxKey{}).(netip.Addr)
	return a, ok && a.IsValid()
}

// Handler resolves the client address of every request once, before next
// runs, and stores it in the request context ([NewContext]) for every
// layer inside: ratelimit, headers, correlation and the application read
// it with [FromContext] instead of resolving again. An address already in
// the context is kept. A request whose address cannot be resolved (a
// trusted proxy sent garbage) is answered by Config.ErrorHandler and next
// is not called.
func (r *Resolver) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if _, ok := FromContext(req.Context()); ok {
			next.ServeHTTP(w, req)
			return
		}
		a, err := r.Resolve(req)
		if err != nil {
			r.onError(w, req, err)
			return
		}
		next.ServeHTTP(w, req.WithContext(NewContext(req.Context(), a)))
	})
}

// DefaultErrorHandler is the ErrorHandler of a zero Config: 400
// problem+json of type "client-address-invalid", with a generic detail.
func DefaultErrorHandler(w http.ResponseWriter, r *http.Request, _ error) {
	problem.Write(w, r, problem.Problem{Status: http.StatusBadRequest, Type: "client-address-invalid",
		Title: "Bad request", Detail: "The forwarding headers do not name a valid client address."})
}
