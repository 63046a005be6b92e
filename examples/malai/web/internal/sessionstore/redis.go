package sessionstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// unlockScript deletes the lease only if it is still ours, so a holder
// whose lease expired cannot release its successor's.
var unlockScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)

// Redis is the shared store for several replicas: records under
// prefix+"s:"+key with Redis's own expiry, leases under prefix+"l:"+key
// taken with SET NX PX. It works on Redis Cluster (every command touches
// one key). The store does not close the client.
type Redis struct {
	c      redis.UniversalClient
	prefix string
	// poll is the first wait between lease attempts; it doubles up to
	// maxPoll.
	poll, maxPoll time.Duration
}

var _ Store = (*Redis)(nil)

// NewRedis returns a store on c with keys under prefix.
func NewRedis(c redis.UniversalClient, prefix string) (*Redis, error) {
	if c == nil {
		return nil, errors.New("sessionstore: Redis client is nil")
	}
	return &Redis{c: c, prefix: prefix, poll: 5 * time.Millisecond, maxPoll: 100 * time.Millisecond}, nil
}

// Get implements Store.
func (s *Redis) Get(ctx context.Context, key string) ([]byte, bool, error) {
	v, err := s.c.Get(ctx, s.prefix+"s:"+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("sessionstore: %w", err)
	}
	return v, true, nil
}

// Set implements Store.
func (s *Redis) Set(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	if err := s.c.Set(ctx, s.prefix+"s:"+key, val, ttl).Err(); err != nil {
		return fmt.Errorf("sessionstore: %w", err)
	}
	return nil
}

// Delete implements Store.
func (s *Redis) Delete(ctx context.Context, key string) error {
	if err := s.c.Del(ctx, s.prefix+"s:"+key).Err(); err != nil {
		return fmt.Errorf("sessionstore: %w", err)
	}
	return nil
}

// Lock implements Store. The lease expires after ttl even if its holder
// dies, so a crashed replica blocks a session for at most ttl.
func (s *Redis) Lock(ctx context.Context, key string, ttl time.Duration) (func(), error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	lk := s.prefix + "l:" + key
	wait := s.poll
	for {
		ok, err := s.c.SetNX(ctx, lk, token, ttl).Result()
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w: %w", ErrLocked, ctx.Err())
			}
			return nil, fmt.Errorf("sessionstore: %w", err)
		}
		if ok {
			return func() {
				ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
				defer cancel()
				_ = unlockScript.Run(ctx, s.c, []string{lk}, token).Err()
			}, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w: %w", ErrLocked, ctx.Err())
		}
		wait = min(2*wait, s.maxPoll)
	}
}

// Close implements Store; the client is the caller's.
func (s *Redis) Close() error { return nil }
