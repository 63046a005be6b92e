// Package keyring is Malai's at-rest record format: AES-256-GCM under a
// rotating key ring, with the key id stored in each record so that records
// sealed under an old key stay readable after rotation.
//
// One [Ring] is built by the caller and handed to every package that
// encrypts at rest: the encrypted log stream (correlation) and the audit
// log's payloads (auditlog), so a key rotation reaches both. A record is
//
//	version(1)=0x01 | len(keyID)(1) | keyID | nonce(12) | ciphertext||tag(16)
//
// The caller supplies additional authenticated data (a stream position, a
// row's sequence number and leaf hash) so a record moved to another place
// fails to open. Nonces are random; rotate the key well before 2^32
// records under one key.
package keyring

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Version is the record format version byte.
const Version = 0x01

// KeySize is the AES-256 key size in bytes.
const KeySize = 32

const nonceSize = 12

// Errors returned by Open. They never include key material or plaintext.
var (
	ErrMalformed  = errors.New("keyring: malformed record")
	ErrUnknownKey = errors.New("keyring: record sealed under an unknown key")
	ErrAuth       = errors.New("keyring: record failed authentication")
	// ErrInvalidConfig wraps the errors of [NewRing] and [Ring.Rotate]
	// about the keys given: a missing current key, a bad key id, an
	// all-zero key, a key id used twice.
	ErrInvalidConfig = errors.New("keyring: invalid key ring")
)

// Key is a 256-bit data key. It redacts itself in logs and fmt output.
type Key [KeySize]byte

// LogValue implements slog.LogValuer.
func (Key) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// String implements fmt.Stringer.
func (Key) String() string { return "[REDACTED]" }

// GoString implements fmt.GoStringer.
func (Key) GoString() string { return "keyring.Key{[REDACTED]}" }

// Overhead is the size a record adds to its plaintext for a key id of
// length n.
func Overhead(n int) int { return 2 + n + nonceSize + 16 }

type ringState struct {
	current string
	aeads   map[string]cipher.AEAD
}

// Ring is a key ring: one current key that seals, every known key opens.
// Its zero value is unusable; build one with NewRing. A Ring is safe for
// concurrent use; Rotate swaps the current key atomically.
type Ring struct {
	mu    sync.Mutex // serialises Rotate
	state atomic.Pointer[ringState]
}

// NewRing returns a ring whose current key is keys[current].
func NewRing(current string, keys map[string]Key) (*Ring, error) {
	if _, ok := keys[current]; !ok {
		return nil, fmt.Errorf("%w: current key %q is not in the ring", ErrInvalidConfig, current)
	}
	st := &ringState{current: current, aeads: make(map[string]cipher.AEAD, len(keys))}
	for id, k := range keys {
		a, err := newAEAD(id, k)
		if err != nil {
			return nil, err
		}
		st.aeads[id] = a
	}
	r := &Ring{}
	r.state.Store(st)
	return r, nil
}

func newAEAD(id string, k Key) (cipher.AEAD, error) {
	if id == "" || len(id) > 255 {
		return nil, fmt.Errorf("%w: key id must be 1-255 bytes, got %d", ErrInvalidConfig, len(id))
	}
	if k == (Key{}) {
		return nil, fmt.Errorf("%w: key %q is all zeros", ErrInvalidConfig, id)
	}
	b, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// Rotate adds key under id and makes it current. Records sealed under
// earlier keys still open. Re-adding an existing id is refused so a key id
// always names one key.
func (r *Ring) Rotate(id string, k Key) error {
	return r.add(id, k, true)
}

func (r *Ring) add(id string, k Key, use bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.state.Load()
	if _, ok := old.aeads[id]; ok {
		return fmt.Errorf("%w: key id %q already in the ring", ErrInvalidConfig, id)
	}
	a, err := newAEAD(id, k)
	if err != nil {
		return err
	}
	st := &ringState{current: old.current, aeads: make(map[string]cipher.AEAD, len(old.aeads)+1)}
	if use {
		st.current = id
	}
	for kid, v := range old.aeads {
		st.aeads[kid] = v
	}
	st.aeads[id] = a
	r.state.Store(st)
	return nil
}

// Add adds key under id for opening only: the current key still seals.
// A replica adds a key announced for later use before any replica seals
// with it, so it opens what the first one to switch seals. Re-adding an
// existing id is refused, as in Rotate.
func (r *Ring) Add(id string, k Key) error {
	return r.add(id, k, false)
}

// Use makes the key id, already in the ring, the one that seals.
func (r *Ring) Use(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.state.Load()
	if _, ok := old.aeads[id]; !ok {
		return fmt.Errorf("%w: key %q is not in the ring", ErrInvalidConfig, id)
	}
	r.state.Store(&ringState{current: id, aeads: old.aeads})
	return nil
}

// Current returns the id of the key that seals.
func (r *Ring) Current() string { return r.state.Load().current }

// Seal appends a sealed record of plaintext to dst under the current key.
func (r *Ring) Seal(dst, plaintext, aad []byte) ([]byte, error) {
	st := r.state.Load()
	a := st.aeads[st.current]
	id := st.current
	out := append(dst, Version, byte(len(id)))
	out = append(out, id...)
	var nonce [nonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return dst, fmt.Errorf("keyring: nonce: %w", err)
	}
	out = append(out, nonce[:]...)
	return a.Seal(out, nonce[:], plaintext, aad), nil
}

// KeyID returns the id of the key a record was sealed under.
func KeyID(record []byte) (string, error) {
	if len(record) < 2 || record[0] != Version {
		return "", ErrMalformed
	}
	n := int(record[1])
	if n == 0 || len(record) < 2+n+nonceSize+16 {
		return "", ErrMalformed
	}
	return string(record[2 : 2+n]), nil
}

// Open appends the plaintext of record to dst and returns it with the id
// of the key that sealed it.
func (r *Ring) Open(dst, record, aad []byte) ([]byte, string, error) {
	id, err := KeyID(record)
	if err != nil {
		return dst, "", err
	}
	a, ok := r.state.Load().aeads[id]
	if !ok {
		return dst, id, ErrUnknownKey
	}
	body := record[2+len(id):]
	out, err := a.Open(dst, body[:nonceSize], body[nonceSize:], aad)
	if err != nil {
		return dst, id, ErrAuth
	}
	return out, id, nil
}

// NewKey returns a random key.
func NewKey() (Key, error) {
	var k Key
	_, err := rand.Read(k[:])
	return k, err
}
