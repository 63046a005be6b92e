package jwtverify

import (
	"context"
	"crypto/sha256"
	"net/http"
	"sync"
	"time"
	"unsafe"
)

// Event describes one verification or one refused route requirement, for
// metrics and audit. It holds identifiers only, never the token.
type Event struct {
	// Accepted is true when the token was verified (and, for a
	// requirement, met it).
	Accepted bool
	// Reason is empty when accepted.
	Reason Reason
	// Cached is true when the verification was served from the cache.
	Cached bool
	// Issuer, KeyID, Subject, ClientID and JTI are set from verified
	// claims; on a refusal before the signature check they are empty.
	Issuer, KeyID, Subject, ClientID, JTI string
	// Class is the verified token class (ClassAny when not verified).
	Class Class
}

// profile is one issuer after defaults, with its key source.
type profile struct {
	cfg  Issuer
	keys *keySource
	algs map[string]bool
}

// Verifier verifies bearer JWTs. Build it with [New]; the zero value is not
// usable. A Verifier is safe for concurrent use and never changes its
// configuration after New. Call [Verifier.Close] to stop the key-set
// refreshers.
type Verifier struct {
	cfg      Config
	byIssuer map[string]*profile
	cache    *tokenCache
	ready    chan struct{}
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	onError  func(http.ResponseWriter, *http.Request, error)
	closeOne sync.Once
}

// New validates cfg, starts fetching every issuer's key set in the
// background and returns the Verifier. It does not wait for the fetches:
// use [Verifier.Ready] to gate readiness.
func New(cfg Config) (*Verifier, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	client := c.HTTPClient
	if client == nil {
		client = &http.Client{Transport: &http.Transport{
			Proxy:               nil,
			TLSHandshakeTimeout: DefaultFetchTimeout,
			MaxIdleConnsPerHost: 2,
			IdleConnTimeout:     time.Minute,
			ForceAttemptHTTP2:   true,
		}}
		// A key set URL must not redirect elsewhere silently.
		client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	ctx, cancel := context.WithCancel(context.Background())
	v := &Verifier{cfg: c, byIssuer: make(map[string]*profile, len(c.Issuers)), cancel: cancel, ready: make(chan struct{})}
	v.onError = c.ErrorHandler
	if v.onError == nil {
		v.onError = DefaultErrorHandler
	}
	if c.CacheSize > 0 {
		v.cache = newTokenCache(c.CacheSize, c.CacheTTL)
	}
	var sources []*keySource
	for i := range c.Issuers {
		is := &c.Issuers[i]
		p := &profile{cfg: *is, algs: map[string]bool{}}
		for _, a := range is.Algorithms {
			p.algs[a] = true
		}
		if len(is.Keys) > 0 {
			if p.keys, err = newStaticSource(&p.cfg); err != nil {
				cancel()
				return nil, err
			}
		} else {
			p.keys = newRemoteSource(ctx, &v.wg, &p.cfg, client, c.Now, c.OnRefresh)
		}
		sources = append(sources, p.keys)
		v.byIssuer[is.Issuer] = p
	}
	for _, s := range sources {
		if !s.static {
			s.start()
		}
	}
	allStatic := true
	for _, s := range sources {
		allStatic = allStatic && s.static
	}
	if allStatic {
		close(v.ready)
		return v, nil
	}
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		for _, s := range sources {
			select {
			case <-s.ready:
			case <-ctx.Done():
				return
			}
		}
		close(v.ready)
	}()
	return v, nil
}

// Ready returns a channel closed once every issuer has a key set (static
// keys count at once). Use it for a readiness probe; it is never closed if
// a key set cannot be fetched before [Verifier.Close].
func (v *Verifier) Ready() <-chan struct{} { return v.ready }

// Close stops the background refreshers and waits for fetches in flight.
// A closed Verifier keeps verifying with the keys it has until they grow
// stale. Close is idempotent.
func (v *Verifier) Close() error {
	v.closeOne.Do(func() {
		v.cancel()
		// A fetch starts only under its source's lock after checking the
		// context, so once each lock has been taken no new one can begin
		// and Wait sees every goroutine.
		for _, p := range v.byIssuer {
			p.keys.mu.Lock()
			//lint:ignore SA2001 the empty critical section is the barrier
			p.keys.mu.Unlock()
		}
		v.wg.Wait()
	})
	return nil
}

// Verify verifies a compact JWT (without "Bearer ") and returns its claims.
// It is the entry point for non-HTTP callers such as queue consumers. Route
// requirements are not applied; use [Requirement.Check] for that. ctx
// bounds the wait for a key-set fetch when the token names an unknown key.
func (v *Verifier) Verify(ctx context.Context, token string) (*Claims, error) {
	c, cached, e := v.verify(ctx, token)
	v.observe(ctx, c, cached, e)
	if e != nil {
		return nil, e
	}
	return c, nil
}

func (v *Verifier) observe(ctx context.Context, c *Claims, cached bool, e *Error) {
	if v.cfg.Observe == nil {
		return
	}
	ev := Event{Accepted: e == nil, Cached: cached}
	if e != nil {
		ev.Reason = e.Reason
	}
	if c != nil {
		ev.Issuer, ev.KeyID, ev.Subject, ev.ClientID, ev.JTI, ev.Class = c.issuer, c.keyID, c.subject, c.clientID, c.jti, c.class
	}
	v.cfg.Observe(ctx, ev)
}

func (v *Verifier) verify(ctx context.Context, token string) (*Claims, bool, *Error) {
	if token == "" {
		return nil, false, errNoToken
	}
	if len(token) > v.cfg.MaxTokenSize {
		return nil, false, errTooLarge
	}
	var h [32]byte
	if v.cache != nil {
		h = hashToken(token)
		if e, ok := v.cache.get(&h, v.cfg.Now()); ok {
			return e.claims, true, nil
		}
	}
	t, e := parseToken(token, v.cfg.MaxTokenSize)
	if e != nil {
		return nil, false, e
	}
	// The profile is picked from the unverified "iss"; the same bytes are
	// then covered by the signature, so the verified "iss" equals it.
	raw, ok := t.claims.get("iss")
	if !ok {
		return nil, false, errMissingClaim
	}
	iss, ok := jsonString(raw)
	if !ok {
		return nil, false, errBadClaim
	}
	p := v.byIssuer[iss]
	if p == nil {
		return nil, false, errIssuer
	}
	if !p.algs[t.alg] {
		return nil, false, errAlgorithm
	}
	if !p.cfg.SkipTypeCheck && !p.typeOK(t) {
		return nil, false, errType
	}
	k, e := p.keys.lookup(ctx, t.kid, t.alg)
	if e != nil {
		return nil, false, e
	}
	if !verifySignature(t.alg, k, t.signingInput, t.sig) {
		return nil, false, errSignature
	}
	now := v.cfg.Now()
	c, e := p.buildClaims(t, now)
	if e != nil {
		return nil, false, e
	}
	c.v = v
	if v.cache != nil {
		v.cache.put(&h, &cacheEntry{claims: c, prof: p, key: k,
			until: c.expiresAt.Add(p.cfg.Leeway).UnixNano()}, now)
	}
	return c, false, nil
}

// hashToken hashes the token text without copying it: the cache lookup is
// the hot path of the second layer and must not allocate. The byte view is
// read-only and sha256 does not keep it.
func hashToken(token string) [32]byte {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
}
