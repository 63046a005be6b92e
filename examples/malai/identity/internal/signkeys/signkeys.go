// Package signkeys keeps the identity service's token-signing keys in the
// identity store, sealed, and rotates them on a schedule that is itself
// stored, so a restart neither regenerates the keys nor resets the clock.
//
// The set holds three kinds of key:
//
//   - current: signs. It began signing at Activated; once Interval has
//     passed, the next rotation (by whichever replica sees it first)
//     retires it.
//   - next: published before it ever signs, so a verifier whose JWKS is
//     younger than one interval already knows it when it starts signing.
//   - retired: no longer signs, still published until PublishUntil —
//     after every token it signed has expired — then dropped.
//
// Every change is a compare-and-set of the whole set in the store: two
// replicas that both see a rotation due produce one rotation. Each
// replica re-reads the set at least every ReloadEvery, so it starts
// signing with the key another replica promoted within that time; until
// then it signs with a key that is still published, so nothing breaks.
//
// An emergency rotation replaces every key at once: tokens signed before
// it stop verifying as soon as verifiers refresh their JWKS.
//
// An operator's on-demand rotation reaches every replica as a numbered
// request ([Keys.RotateOnce]): the set records the newest request it
// answered, so the replicas that see it, and an identity that starts
// after it, rotate once between them.
package signkeys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/malai-sec/malai/examples/malai/identity/store"
	"github.com/malai-sec/malai/keyring"
)

// Algorithm is the signing algorithm of every key.
const Algorithm = jwa.ES256

// ErrClosed is returned once Close has run.
var ErrClosed = errors.New("signkeys: closed")

// Config configures [New].
type Config struct {
	Store store.Store
	// Ring seals the private keys at rest.
	Ring *keyring.Ring
	// Interval is how long a key signs before it is retired.
	Interval time.Duration
	// Overlap is how long a retired key stays published: at least the
	// longest token lifetime plus clock leeway.
	Overlap time.Duration
	// ReloadEvery bounds how stale a replica's view of the set may be.
	// Default one minute.
	ReloadEvery time.Duration
	Now         func() time.Time
}

// Keys is the loaded key set. It is safe for concurrent use.
type Keys struct {
	cfg Config

	mu       sync.RWMutex
	set      store.KeySet
	signer   jwk.Key
	signerID string
	jwks     []byte
	loaded   time.Time
	closed   bool
}

func aad(kid string) []byte { return []byte("malai.identity.signing-key:" + kid) }

// New loads the key set from the store, creating it on first start, and
// rotates it if a rotation is due.
func New(ctx context.Context, cfg Config) (*Keys, error) {
	if cfg.Store == nil || cfg.Ring == nil || cfg.Interval <= 0 || cfg.Overlap <= 0 || cfg.Now == nil {
		return nil, errors.New("signkeys: Store, Ring, Interval, Overlap and Now are required")
	}
	if cfg.ReloadEvery <= 0 {
		cfg.ReloadEvery = time.Minute
	}
	k := &Keys{cfg: cfg}
	if err := k.Refresh(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

// Refresh re-reads the set, creates it if the store has none, rotates it
// when due and drops keys past their publication.
func (k *Keys) Refresh(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		ks, err := k.cfg.Store.SigningKeys(ctx)
		if err != nil {
			return fmt.Errorf("signkeys: load: %w", err)
		}
		next, changed, err := k.plan(ks, false)
		if err != nil {
			return err
		}
		if changed {
			saved, err := k.cfg.Store.SaveSigningKeys(ctx, next)
			if errors.Is(err, store.ErrConflict) && attempt < 5 {
				continue // another replica rotated first: read its result
			}
			if err != nil {
				return fmt.Errorf("signkeys: save: %w", err)
			}
			ks = saved
		}
		return k.install(ks)
	}
}

// Rotate rotates now. A normal rotation promotes the next key and keeps
// the current one published for Overlap; an emergency rotation replaces
// every key, so tokens signed before it stop verifying.
func (k *Keys) Rotate(ctx context.Context, emergency bool) error {
	for attempt := 0; ; attempt++ {
		ks, err := k.cfg.Store.SigningKeys(ctx)
		if err != nil {
			return fmt.Errorf("signkeys: load: %w", err)
		}
		var next store.KeySet
		if emergency {
			next = store.KeySet{Version: ks.Version, Request: ks.Request}
			next, _, err = k.plan(next, false)
		} else {
			next, _, err = k.plan(ks, true)
		}
		if err != nil {
			return err
		}
		saved, err := k.cfg.Store.SaveSigningKeys(ctx, next)
		if errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			return fmt.Errorf("signkeys: save: %w", err)
		}
		return k.install(saved)
	}
}

// RotateOnce answers a numbered rotation request (an operator's
// on-demand rotation, numbered by whoever counts them): the first call
// with a request above the one the stored set last answered rotates as
// Rotate(ctx, false) does and records the request in the same
// compare-and-set, so however many replicas answer it, and however often,
// one rotation happens. A request already answered only reloads the set.
// It reports whether this call rotated.
func (k *Keys) RotateOnce(ctx context.Context, request uint64) (bool, error) {
	for attempt := 0; ; attempt++ {
		ks, err := k.cfg.Store.SigningKeys(ctx)
		if err != nil {
			return false, fmt.Errorf("signkeys: load: %w", err)
		}
		if request <= ks.Request && len(ks.Keys) > 0 {
			return false, k.install(ks)
		}
		next, _, err := k.plan(ks, len(ks.Keys) > 0)
		if err != nil {
			return false, err
		}
		next.Request = request
		saved, err := k.cfg.Store.SaveSigningKeys(ctx, next)
		if errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue // another replica answered (or rotated) first: look again
		}
		if err != nil {
			return false, fmt.Errorf("signkeys: save: %w", err)
		}
		return len(ks.Keys) > 0, k.install(saved)
	}
}

// plan returns the set as it should be now: a current and a next key,
// retired keys still within their publication, and a rotation when due
// (or forced).
func (k *Keys) plan(ks store.KeySet, force bool) (store.KeySet, bool, error) {
	now := k.cfg.Now()
	out := store.KeySet{Version: ks.Version, Request: ks.Request}
	var current, next *store.SigningKey
	changed := false
	for i := range ks.Keys {
		key := ks.Keys[i]
		switch {
		case !key.Retired.IsZero():
			if now.Before(key.PublishUntil) {
				out.Keys = append(out.Keys, key)
			} else {
				changed = true
			}
		case !key.Activated.IsZero() && current == nil:
			current = &key
		case key.Activated.IsZero() && next == nil:
			next = &key
		default:
			changed = true // a duplicate role: keep the first
		}
	}
	if current != nil && (force || now.Sub(current.Activated) >= k.cfg.Interval) {
		current.Retired = now
		current.PublishUntil = now.Add(k.cfg.Overlap)
		out.Keys = append(out.Keys, *current)
		current, changed = nil, true
	}
	if current == nil {
		if next != nil {
			current, next = next, nil
		} else {
			fresh, err := k.generate(now)
			if err != nil {
				return store.KeySet{}, false, err
			}
			current = &fresh
		}
		current.Activated = now
		changed = true
	}
	if next == nil {
		fresh, err := k.generate(now)
		if err != nil {
			return store.KeySet{}, false, err
		}
		next, changed = &fresh, true
	}
	out.Keys = append(out.Keys, *current, *next)
	return out, changed, nil
}

func (k *Keys) generate(now time.Time) (store.SigningKey, error) {
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return store.SigningKey{}, err
	}
	pub, kid, err := publicJWK(&raw.PublicKey)
	if err != nil {
		return store.SigningKey{}, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(raw)
	if err != nil {
		return store.SigningKey{}, err
	}
	sealed, err := k.cfg.Ring.Seal(nil, der, aad(kid))
	clear(der)
	if err != nil {
		return store.SigningKey{}, fmt.Errorf("signkeys: seal: %w", err)
	}
	return store.SigningKey{ID: kid, Private: sealed, Public: pub, Created: now}, nil
}

// publicJWK returns the public JWK (kid = RFC 7638 thumbprint, alg, use)
// as JSON, and the kid.
func publicJWK(pub *ecdsa.PublicKey) ([]byte, string, error) {
	key, err := jwk.FromRaw(pub)
	if err != nil {
		return nil, "", err
	}
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, "", err
	}
	kid := base64.RawURLEncoding.EncodeToString(tp)
	for name, v := range map[string]any{jwk.KeyIDKey: kid, jwk.AlgorithmKey: Algorithm, jwk.KeyUsageKey: jwk.ForSignature} {
		if err := key.Set(name, v); err != nil {
			return nil, "", err
		}
	}
	b, err := json.Marshal(key)
	return b, kid, err
}

// install makes ks the set this replica signs and publishes with.
func (k *Keys) install(ks store.KeySet) error {
	now := k.cfg.Now()
	var current *store.SigningKey
	set := jwk.NewSet()
	for i, key := range ks.Keys {
		if !key.Retired.IsZero() && !now.Before(key.PublishUntil) {
			continue
		}
		pub, err := jwk.ParseKey(key.Public)
		if err != nil {
			return fmt.Errorf("signkeys: stored public key %s: %w", key.ID, err)
		}
		if err := set.AddKey(pub); err != nil {
			return err
		}
		if key.Retired.IsZero() && !key.Activated.IsZero() {
			current = &ks.Keys[i]
		}
	}
	if current == nil {
		return errors.New("signkeys: the stored set has no signing key")
	}
	jwks, err := json.Marshal(set)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return ErrClosed
	}
	if k.signerID != current.ID {
		der, _, err := k.cfg.Ring.Open(nil, current.Private, aad(current.ID))
		if err != nil {
			return fmt.Errorf("signkeys: open signing key %s: %w", current.ID, err)
		}
		priv, err := x509.ParsePKCS8PrivateKey(der)
		clear(der)
		if err != nil {
			return fmt.Errorf("signkeys: signing key %s: %w", current.ID, err)
		}
		signer, err := jwk.FromRaw(priv)
		if err != nil {
			return err
		}
		for name, v := range map[string]any{jwk.KeyIDKey: current.ID, jwk.AlgorithmKey: Algorithm} {
			if err := signer.Set(name, v); err != nil {
				return err
			}
		}
		k.signer, k.signerID = signer, current.ID
	}
	k.set, k.jwks, k.loaded = ks, jwks, now
	return nil
}

// Signer returns the key to sign with now, refreshing the set first when
// it is older than ReloadEvery or a rotation is due.
func (k *Keys) Signer(ctx context.Context) (jwk.Key, error) {
	k.mu.RLock()
	closed, loaded, due := k.closed, k.loaded, k.dueLocked()
	k.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	if due || k.cfg.Now().Sub(loaded) >= k.cfg.ReloadEvery {
		if err := k.Refresh(ctx); err != nil {
			// Keep signing with the key we hold: it is still published.
			k.mu.RLock()
			defer k.mu.RUnlock()
			if k.signer == nil || k.closed {
				return nil, err
			}
			return k.signer, nil
		}
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.closed {
		return nil, ErrClosed
	}
	return k.signer, nil
}

func (k *Keys) dueLocked() bool {
	now := k.cfg.Now()
	for _, key := range k.set.Keys {
		if key.ID == k.signerID && now.Sub(key.Activated) >= k.cfg.Interval {
			return true
		}
		if !key.Retired.IsZero() && !now.Before(key.PublishUntil) {
			return true
		}
	}
	return false
}

// JWKS returns the published key set document (current, next and retired
// keys still within their publication). The slice must not be modified.
func (k *Keys) JWKS() []byte {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.jwks
}

// Published returns the ids of the published keys, current first.
func (k *Keys) Published() []string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	var ids []string
	for _, key := range k.set.Keys {
		if key.ID == k.signerID {
			ids = append([]string{key.ID}, ids...)
		} else if key.Retired.IsZero() || k.cfg.Now().Before(key.PublishUntil) {
			ids = append(ids, key.ID)
		}
	}
	return slices.Clip(ids)
}

// Close drops the private key from memory; Signer fails afterwards.
func (k *Keys) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	k.signer = nil
}
