package jwtverify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// RefreshEvent reports one key-set fetch attempt, for metrics and alerts.
type RefreshEvent struct {
	Issuer string
	// Err is nil on success. It never contains key material.
	Err error
	// Keys is the number of usable keys now in use.
	Keys int
	// Added and Removed count keys that appeared or left on this fetch.
	Added, Removed int
	// Age is how old the key set in use is (time since the last successful
	// fetch). When fetches fail it grows until MaxStaleness, after which
	// tokens are refused: alert on it.
	Age time.Duration
	// Trigger says why the fetch ran: "start", "schedule", "unknown_kid"
	// (a token named a key not in the set) or "no_keys" (a token arrived
	// while no usable key set was held).
	Trigger string
}

// keySource holds one issuer's keys: static, or fetched from a JWKS URL and
// refreshed in the background. Lookups never block on a fetch, except that
// a token with an unknown kid (or arriving before the first fetch) may wait
// for the single fetch in flight.
type keySource struct {
	cfg    *Issuer
	client *http.Client
	now    func() time.Time
	hook   func(RefreshEvent)
	static bool

	set atomic.Pointer[keySet]
	// fetchedAt is the time of the last successful fetch (UnixNano, on the
	// injected clock); 0 before the first one.
	fetchedAt atomic.Int64
	nextAt    atomic.Int64 // when the next scheduled fetch is due

	mu          sync.Mutex
	inflight    chan struct{}
	lastUnknown time.Time            // last fetch started for an unknown kid
	unknown     map[string]time.Time // kid → remembered until

	ready    chan struct{}
	readyOne sync.Once
	wake     chan struct{}
	ctx      context.Context
	wg       *sync.WaitGroup
	fetches  atomic.Int64
}

func newStaticSource(is *Issuer) (*keySource, error) {
	keys, err := parseJWKS(is.Keys, true)
	if err != nil {
		return nil, configErr("issuer %q: Keys: %v", is.Issuer, err)
	}
	s := &keySource{cfg: is, static: true, ready: make(chan struct{})}
	s.set.Store(&keySet{keys: keys})
	close(s.ready)
	return s, nil
}

func newRemoteSource(ctx context.Context, wg *sync.WaitGroup, is *Issuer, client *http.Client, now func() time.Time, hook func(RefreshEvent)) *keySource {
	return &keySource{
		cfg: is, client: client, now: now, hook: hook, ctx: ctx, wg: wg,
		ready: make(chan struct{}), wake: make(chan struct{}, 1),
		unknown: make(map[string]time.Time),
	}
}

// start runs the first fetch and the background refresh loop.
func (s *keySource) start() {
	s.mu.Lock()
	s.beginLocked("start")
	s.mu.Unlock()
	s.wg.Add(1)
	go s.loop()
}

// loop wakes when the next scheduled refresh is due (measured on the real
// timer from the injected clock's view) or after a fetch finishes.
func (s *keySource) loop() {
	defer s.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		d := time.Duration(s.nextAt.Load() - s.now().UnixNano())
		if d < time.Second {
			d = time.Second
		}
		t.Reset(d)
		select {
		case <-s.ctx.Done():
			return
		case <-s.wake:
		case <-t.C:
			s.maybeRefresh(s.now())
		}
	}
}

// usable reports whether the key set may be used at now.
func (s *keySource) usable(now time.Time) bool {
	if s.static {
		return true
	}
	at := s.fetchedAt.Load()
	return at != 0 && now.UnixNano()-at <= int64(s.cfg.MaxStaleness)
}

// maybeRefresh starts a scheduled fetch if one is due; it never waits.
func (s *keySource) maybeRefresh(now time.Time) {
	if s.static || now.UnixNano() < s.nextAt.Load() {
		return
	}
	s.mu.Lock()
	if s.inflight == nil && now.UnixNano() >= s.nextAt.Load() {
		s.beginLocked("schedule")
	}
	s.mu.Unlock()
}

// lookup finds the key for kid and alg.
func (s *keySource) lookup(ctx context.Context, kid, alg string) (*publicKey, *Error) {
	if s.static {
		return s.set.Load().find(kid, alg)
	}
	now := s.now()
	s.maybeRefresh(now)
	set := s.set.Load()
	if set != nil && s.usable(now) {
		k, e := set.find(kid, alg)
		if e != errUnknownKey {
			return k, e
		}
	}
	// Unknown kid, or no usable keys: at most one fetch in flight, none
	// within the cooldown, kids already looked for are not looked for again.
	s.mu.Lock()
	if until, ok := s.unknown[kid]; ok && set != nil && s.usable(now) && now.Before(until) {
		s.mu.Unlock()
		return nil, errUnknownKey
	}
	ch := s.inflight
	if ch == nil && (s.lastUnknown.IsZero() || now.Sub(s.lastUnknown) >= s.cfg.Cooldown) {
		trigger := "unknown_kid"
		if set == nil || !s.usable(now) {
			trigger = "no_keys"
		}
		if ch = s.beginLocked(trigger); ch != nil {
			s.lastUnknown = now
		}
	}
	s.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, errCancelled
		}
		now = s.now()
		set = s.set.Load()
	}
	if set == nil || !s.usable(now) {
		return nil, errKeys
	}
	k, e := set.find(kid, alg)
	if e == errUnknownKey {
		s.rememberUnknown(kid, now)
	}
	return k, e
}

func (s *keySource) rememberUnknown(kid string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.unknown) >= maxUnknownKIDsRemember {
		clear(s.unknown)
	}
	s.unknown[kid] = now.Add(s.cfg.Cooldown)
}

// beginLocked starts a fetch; s.mu is held. It returns the channel closed
// when the fetch ends.
func (s *keySource) beginLocked(trigger string) chan struct{} {
	if s.inflight != nil {
		return s.inflight
	}
	if s.ctx.Err() != nil {
		return nil
	}
	ch := make(chan struct{})
	s.inflight = ch
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ev := s.fetch(trigger)
		s.mu.Lock()
		s.inflight = nil
		s.mu.Unlock()
		close(ch)
		select {
		case s.wake <- struct{}{}:
		default:
		}
		// The hook runs once the fetch is over: a lookup it triggers (or
		// one that follows it) sees the result and may start the next
		// fetch instead of waiting on this finished one.
		if s.hook != nil {
			s.hook(ev)
		}
	}()
	return ch
}

var errStatus = errors.New("jwtverify: key set fetch: unexpected status")
var errTooBig = errors.New("jwtverify: key set document too large")

// fetch downloads and installs the key set, keeping the old one on error,
// and returns the event to report.
func (s *keySource) fetch(trigger string) RefreshEvent {
	s.fetches.Add(1)
	keys, maxAge, err := s.download()
	now := s.now()
	ev := RefreshEvent{Issuer: s.cfg.Issuer, Err: err, Trigger: trigger}
	if err != nil {
		s.nextAt.Store(now.Add(s.cfg.Cooldown).UnixNano())
	} else {
		old := s.set.Load()
		keys, ev.Added, ev.Removed = merge(old, keys)
		s.set.Store(&keySet{keys: keys})
		s.fetchedAt.Store(now.UnixNano())
		every := s.cfg.RefreshInterval
		if maxAge >= 0 {
			every = min(max(maxAge, s.cfg.MinRefresh), s.cfg.MaxRefresh)
		}
		// Leave room to retry a failed refresh before the keys go stale.
		every = min(every, s.cfg.MaxStaleness/2)
		s.nextAt.Store(now.Add(every).UnixNano())
		s.mu.Lock()
		clear(s.unknown)
		s.mu.Unlock()
		s.readyOne.Do(func() { close(s.ready) })
	}
	if set := s.set.Load(); set != nil {
		ev.Keys = len(set.keys)
	}
	if at := s.fetchedAt.Load(); at != 0 {
		ev.Age = time.Duration(now.UnixNano() - at)
	}
	return ev
}

// merge keeps the *publicKey of keys that did not change (so cached
// verifications made with them stay valid) and marks keys that left.
func merge(old *keySet, fresh []*publicKey) (keys []*publicKey, added, removed int) {
	if old == nil {
		return fresh, len(fresh), 0
	}
	kept := make([]bool, len(old.keys))
	for i, nk := range fresh {
		found := false
		for j, ok := range old.keys {
			if !kept[j] && sameKey(ok, nk) {
				fresh[i], kept[j], found = ok, true, true
				break
			}
		}
		if !found {
			added++
		}
	}
	for j, ok := range old.keys {
		if !kept[j] {
			ok.removed.Store(true)
			removed++
		}
	}
	return fresh, added, removed
}

func (s *keySource) download() ([]*publicKey, time.Duration, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.FetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.JWKSURL, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("jwtverify: key set fetch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, 0, fmt.Errorf("%w %d", errStatus, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, s.cfg.MaxJWKSSize+1))
	if err != nil {
		return nil, 0, fmt.Errorf("jwtverify: key set fetch: %w", err)
	}
	if int64(len(body)) > s.cfg.MaxJWKSSize {
		return nil, 0, errTooBig
	}
	keys, err := parseJWKS(body, false)
	if err != nil {
		return nil, 0, err
	}
	return keys, maxAge(resp.Header), nil
}

// maxAge returns the Cache-Control max-age of a response, 0 for no-cache or
// no-store, or -1 when there is none.
func maxAge(h http.Header) time.Duration {
	age := time.Duration(-1)
	for _, v := range h.Values("Cache-Control") {
		for _, d := range strings.Split(v, ",") {
			d = strings.ToLower(strings.TrimSpace(d))
			switch {
			case d == "no-store" || d == "no-cache":
				return 0
			case strings.HasPrefix(d, "max-age="):
				n, err := strconv.ParseInt(strings.Trim(d[len("max-age="):], `"`), 10, 64)
				if err == nil && n >= 0 && n < 1<<31 {
					age = time.Duration(n) * time.Second
				}
			}
		}
	}
	return age
}
