// Package sessionstore keeps the web app's server-side session records:
// a durable embedded store (bbolt, one process) and a shared one (Redis,
// any number of replicas). Records arrive sealed; a store never sees a
// token in clear.
package sessionstore

import (
	"context"
	"errors"
	"time"
)

// ErrLocked is returned by Lock when the lease could not be taken before
// the context ended.
var ErrLocked = errors.New("sessionstore: session busy")

// Store keeps opaque records under opaque keys with an expiry, and gives
// a short exclusive lease per key so that one request at a time changes a
// session, across every replica that shares the store.
type Store interface {
	// Get returns the record; a missing or expired key is (nil, false, nil).
	Get(ctx context.Context, key string) ([]byte, bool, error)
	// Set stores the record for ttl.
	Set(ctx context.Context, key string, val []byte, ttl time.Duration) error
	// Delete removes the record; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Lock waits for the key's lease, held for at most ttl, and returns
	// the function that releases it. It returns ErrLocked (wrapping the
	// context's error) when ctx ends first.
	Lock(ctx context.Context, key string, ttl time.Duration) (unlock func(), err error)
	Close() error
}
