package ratelimit

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/malai-sec/malai/clientip"
	"github.com/malai-sec/malai/problem"
)

// Header names written by the Limiter.
const (
	// HeaderPolicy lists the policies that applied (IETF
	// draft-ietf-httpapi-ratelimit-headers): `"ip";q=100;w=60`.
	HeaderPolicy = "RateLimit-Policy"
	// HeaderRateLimit gives each applied policy's remaining quota and the
	// seconds until it is full again: `"ip";r=42;t=35`.
	HeaderRateLimit = "RateLimit"
	// HeaderRetryAfter is set on 429 and 503, in delta seconds.
	HeaderRetryAfter = "Retry-After"

	legacyLimit     = "X-RateLimit-Limit"
	legacyRemaining = "X-RateLimit-Remaining"
	legacyReset     = "X-RateLimit-Reset"
)

// applied is one policy's decision for the response headers.
type applied struct {
	p *policy
	r Result
}

// Handler wraps next. It resolves the client address (and stores it in the
// request context for later handlers), consults the reputation lists, then
// applies each policy in order; the first refusal answers 429 through the
// ErrorHandler and next is not called. Requests Config.Skip exempts go
// straight to next.
//
// Limiters stack: an inner limiter adds its policies to the RateLimit and
// RateLimit-Policy fields an outer one set, so a client sees every limit
// that applied (give stacked limiters distinct policy names).
func (l *Limiter) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if l.skip != nil && l.skip(r) {
			next.ServeHTTP(w, r)
			return
		}
		addr, ok := clientip.FromContext(r.Context())
		if !ok {
			var err error
			addr, err = l.resolve(r)
			if err != nil || !addr.IsValid() {
				l.stats.badClient.Add(1)
				l.onError(w, r, errors.Join(ErrClientAddress, err))
				return
			}
			addr = addr.Unmap()
			r = r.WithContext(clientip.NewContext(r.Context(), addr))
		}
		switch l.reputation.Lookup(addr) {
		case Denied:
			l.stats.denied.Add(1)
			l.onError(w, r, ErrDenied)
			return
		case Allowed:
			l.stats.exempt.Add(1)
			next.ServeHTTP(w, r)
			return
		}
		var buf [4]applied
		done := buf[:0]
		for i := range l.policies {
			p := &l.policies[i]
			var key string
			if p.Key != nil {
				k, ok := p.Key(r, addr)
				if !ok {
					continue
				}
				key = k
			} else {
				key = IPKey(addr, p.IPv4Prefix, p.IPv6Prefix)
			}
			res, err := l.decide(r.Context(), p, key)
			if err != nil {
				l.writeHeaders(w.Header(), done)
				w.Header().Set(HeaderRetryAfter, "1")
				l.onError(w, r, err)
				return
			}
			done = append(done, applied{p, res})
			if !res.Allowed {
				l.stats.limited.Add(1)
				l.writeHeaders(w.Header(), done)
				w.Header().Set(HeaderRetryAfter, strconv.FormatInt(ceilSeconds(res.RetryAfter), 10))
				l.onError(w, r, &LimitedError{Policy: p.Name, RetryAfter: res.RetryAfter})
				return
			}
		}
		l.stats.allowed.Add(1)
		l.writeHeaders(w.Header(), done)
		next.ServeHTTP(w, r)
	})
}

func ceilSeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

func (l *Limiter) writeHeaders(h http.Header, done []applied) {
	if len(done) == 0 {
		return
	}
	var pol, rl []byte
	tightest := -1
	for i, a := range done {
		if a.r.Remaining < 0 {
			continue // FailOpen during an outage: nothing true to say
		}
		if len(pol) > 0 {
			pol = append(pol, ", "...)
			rl = append(rl, ", "...)
		}
		pol = append(pol, a.p.header...)
		rl = append(rl, '"')
		rl = append(rl, a.p.Name...)
		rl = append(rl, `";r=`...)
		rl = strconv.AppendInt(rl, int64(a.r.Remaining), 10)
		rl = append(rl, ";t="...)
		rl = strconv.AppendInt(rl, int64((a.r.ResetAfter+time.Second-1)/time.Second), 10)
		if tightest < 0 || a.r.Remaining < done[tightest].r.Remaining {
			tightest = i
		}
	}
	if tightest < 0 {
		return
	}
	// An outer limiter's fields come first; ours are appended as further
	// list members (RFC 9651 lists may be split or joined).
	if outer := h.Values(HeaderPolicy); len(outer) > 0 {
		h.Set(HeaderPolicy, strings.Join(outer, ", ")+", "+string(pol))
	} else if len(done) == len(l.policies) && len(pol) == len(l.allPolicy) {
		h.Set(HeaderPolicy, l.allPolicy)
	} else {
		h.Set(HeaderPolicy, string(pol))
	}
	if outer := h.Values(HeaderRateLimit); len(outer) > 0 {
		h.Set(HeaderRateLimit, strings.Join(outer, ", ")+", "+string(rl))
	} else {
		h.Set(HeaderRateLimit, string(rl))
	}
	if l.legacy {
		t := done[tightest]
		// Stacked legacy headers describe the most restrictive policy of
		// all limiters: keep an outer one that has less left.
		if prev, err := strconv.Atoi(h.Get(legacyRemaining)); err == nil && prev <= t.r.Remaining {
			return
		}
		h.Set(legacyLimit, strconv.Itoa(t.p.Burst))
		h.Set(legacyRemaining, strconv.Itoa(t.r.Remaining))
		h.Set(legacyReset, strconv.FormatInt(int64((t.r.ResetAfter+time.Second-1)/time.Second), 10))
	}
}

// DefaultErrorHandler is the ErrorHandler of a zero Config: RFC 9457
// problem+json with a generic detail (never the error text) and the
// request's correlation id. Retry-After and RateLimit headers set by the
// Limiter are kept.
func DefaultErrorHandler(w http.ResponseWriter, r *http.Request, err error) {
	var le *LimitedError
	switch {
	case errors.As(err, &le):
		problem.Write(w, r, problem.Problem{
			Status: http.StatusTooManyRequests, Type: "rate-limited", Title: "Too many requests",
			Detail:     "A rate limit is exhausted; retry after the delay in Retry-After.",
			Extensions: map[string]any{"policy": le.Policy, "retry_after": ceilSeconds(le.RetryAfter)},
		})
	case errors.Is(err, ErrDenied):
		problem.Write(w, r, problem.Problem{
			Status: http.StatusForbidden, Type: "ip-denied", Title: "Forbidden",
			Detail: "Requests from this network are not accepted.",
		})
	case errors.Is(err, ErrClientAddress):
		problem.Write(w, r, problem.Problem{
			Status: http.StatusBadRequest, Type: "client-address-invalid", Title: "Bad request",
			Detail: "The forwarding headers do not name a valid client address.",
		})
	case errors.Is(err, ErrUnavailable):
		if w.Header().Get(HeaderRetryAfter) == "" {
			w.Header().Set(HeaderRetryAfter, "1")
		}
		problem.Write(w, r, problem.Unavailable)
	default:
		problem.Write(w, r, problem.Internal)
	}
}
