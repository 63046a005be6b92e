// Package keyring holds the identity service's token-signing keys: ES256
// (ECDSA P-256) keys generated in process, never exported in private form.
//
// The ring has three slots. The current key signs. The previous key is
// still published so tokens it signed stay verifiable until they expire.
// The next key is published before it ever signs, so a verifier whose JWKS
// cache is younger than one rotation interval already holds it when the
// ring rotates. Rotate moves next → current → previous and generates a new
// next; the old previous key is dropped and tokens it signed stop
// verifying, which is what an emergency rotation (two rotations in a row)
// wants.
package keyring

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// Algorithm is the signing algorithm of every key in the ring.
const Algorithm = jwa.ES256

// ErrClosed is returned once the ring has been closed.
var ErrClosed = errors.New("keyring: closed")

type entry struct {
	priv    jwk.Key
	pub     jwk.Key
	created time.Time
}

// Ring is a rotating set of signing keys. It is safe for concurrent use.
type Ring struct {
	mu       sync.RWMutex
	now      func() time.Time
	next     *entry
	current  *entry
	previous *entry
	jwks     []byte // cached JWKS document
	pubSet   jwk.Set
	closed   bool
}

// New returns a ring with a fresh current and next key.
func New(now func() time.Time) (*Ring, error) {
	r := &Ring{now: now}
	cur, err := generate(now())
	if err != nil {
		return nil, err
	}
	next, err := generate(now())
	if err != nil {
		return nil, err
	}
	r.current, r.next = cur, next
	if err := r.publishLocked(); err != nil {
		return nil, err
	}
	return r, nil
}

func generate(now time.Time) (*entry, error) {
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	priv, err := jwk.FromRaw(raw)
	if err != nil {
		return nil, err
	}
	tp, err := priv.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	kid := base64.RawURLEncoding.EncodeToString(tp) // RFC 7638 thumbprint
	for k, v := range map[string]any{jwk.KeyIDKey: kid, jwk.AlgorithmKey: Algorithm, jwk.KeyUsageKey: jwk.ForSignature} {
		if err := priv.Set(k, v); err != nil {
			return nil, err
		}
	}
	pub, err := priv.PublicKey()
	if err != nil {
		return nil, err
	}
	return &entry{priv: priv, pub: pub, created: now}, nil
}

func (r *Ring) publishLocked() error {
	set := jwk.NewSet()
	for _, e := range []*entry{r.current, r.previous, r.next} {
		if e != nil {
			if err := set.AddKey(e.pub); err != nil {
				return err
			}
		}
	}
	b, err := json.Marshal(set)
	if err != nil {
		return err
	}
	r.jwks, r.pubSet = b, set
	return nil
}

// Rotate promotes the next key to current, keeps the old current as
// previous, drops the old previous and generates a new next key.
func (r *Ring) Rotate() error {
	fresh, err := generate(r.now())
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	r.next.created = r.now()
	r.previous, r.current, r.next = r.current, r.next, fresh
	return r.publishLocked()
}

// Signer returns the current private key and when it began signing.
func (r *Ring) Signer() (jwk.Key, time.Time, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return nil, time.Time{}, ErrClosed
	}
	return r.current.priv, r.current.created, nil
}

// JWKS returns the published JSON Web Key Set: the current, previous (if
// any) and next public keys. The slice must not be modified.
func (r *Ring) JWKS() []byte {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.jwks
}

// PublicSet returns the published keys as a set for verification. The set
// is replaced, never modified, on rotation.
func (r *Ring) PublicSet() jwk.Set {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.pubSet
}

// Close drops the private keys; signing fails with [ErrClosed] afterwards.
func (r *Ring) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	r.current.priv, r.next.priv = nil, nil
	if r.previous != nil {
		r.previous.priv = nil
	}
}

// RotateIfOlder rotates only if the current key has signed for at least
// maxAge, so concurrent callers that all saw an old key rotate once.
func (r *Ring) RotateIfOlder(maxAge time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	now := r.now()
	if now.Sub(r.current.created) < maxAge {
		return nil
	}
	fresh, err := generate(now)
	if err != nil {
		return err
	}
	r.next.created = now
	r.previous, r.current, r.next = r.current, r.next, fresh
	return r.publishLocked()
}
