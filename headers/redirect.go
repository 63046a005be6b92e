package headers

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/malai-sec/malai/problem"
)

// ErrHostNotAllowed is passed to [RedirectConfig.ErrorHandler] when the
// request's Host is not one of the allowed hosts.
var ErrHostNotAllowed = errors.New("headers: host not allowed")

// RedirectConfig configures [NewRedirect].
type RedirectConfig struct {
	// AllowedHosts are the host names (no port, no scheme) the redirect
	// may point to. Required: redirecting to whatever Host the client sent
	// would make the plain-HTTP port an open redirect. Matching is exact
	// and case-insensitive; a trailing dot is ignored.
	AllowedHosts []string
	// HTTPSPort is the port of the HTTPS listener; 0 means 443, which is
	// left out of the Location.
	HTTPSPort int
	// ErrorHandler answers a request whose Host is not allowed
	// ([ErrHostNotAllowed]). The default writes a 400 problem+json of type
	// host-not-allowed.
	ErrorHandler func(http.ResponseWriter, *http.Request, error)
}

// Redirect is the plain-HTTP handler: it answers every request with 308
// Permanent Redirect to the same host, path and query over HTTPS, so the
// method and body are kept. Built by [NewRedirect]; safe for concurrent
// use.
type Redirect struct {
	hosts     map[string]bool
	port      string
	errorFunc func(http.ResponseWriter, *http.Request, error)
}

// NewRedirect validates cfg and returns the redirect handler. Wrap it with
// [Middleware.Handler] so its responses carry the headers too.
func NewRedirect(cfg RedirectConfig) (*Redirect, error) {
	if len(cfg.AllowedHosts) == 0 {
		return nil, fmt.Errorf("%w: RedirectConfig.AllowedHosts is empty", ErrInvalidConfig)
	}
	rd := &Redirect{hosts: make(map[string]bool, len(cfg.AllowedHosts)), errorFunc: cfg.ErrorHandler}
	for _, h := range cfg.AllowedHosts {
		n := normaliseHost(h)
		if a, err := netip.ParseAddr(strings.Trim(n, "[]")); err == nil && a.Is6() && a.Zone() == "" {
			// An IPv6 literal ("::1" or "[::1]") is kept without brackets.
			rd.hosts[a.String()] = true
			continue
		}
		if n == "" || strings.ContainsAny(n, "/:@?#[]\\ ") || !validToken(n) {
			return nil, fmt.Errorf("%w: AllowedHosts: %q is not a bare host name", ErrInvalidConfig, truncate(h))
		}
		rd.hosts[n] = true
	}
	switch {
	case cfg.HTTPSPort < 0 || cfg.HTTPSPort > 65535:
		return nil, fmt.Errorf("%w: HTTPSPort %d out of range", ErrInvalidConfig, cfg.HTTPSPort)
	case cfg.HTTPSPort != 0 && cfg.HTTPSPort != 443:
		rd.port = ":" + strconv.Itoa(cfg.HTTPSPort)
	}
	if rd.errorFunc == nil {
		rd.errorFunc = func(w http.ResponseWriter, r *http.Request, _ error) {
			problem.Write(w, r, problem.Problem{Status: http.StatusBadRequest, Type: "host-not-allowed",
				Title: "Host not allowed", Detail: "This server does not answer for the requested host."})
		}
	}
	return rd, nil
}

func normaliseHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
}

// ServeHTTP redirects to https://<host>[:port]<path>?<query> when the
// request's Host is allowed, and refuses it otherwise.
func (rd *Redirect) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = normaliseHost(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
		host = a.String()
	}
	if !rd.hosts[host] {
		rd.errorFunc(w, r, ErrHostNotAllowed)
		return
	}
	path := r.URL.EscapedPath()
	if !strings.HasPrefix(path, "/") {
		path = "/" // "OPTIONS *" and CONNECT have no path of their own
	}
	authority := host
	if strings.Contains(host, ":") {
		authority = "[" + host + "]"
	}
	target := "https://" + authority + rd.port + path
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	h := w.Header()
	h.Set("Location", target)
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusPermanentRedirect)
}
