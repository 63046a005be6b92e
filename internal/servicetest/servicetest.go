// Package servicetest hands tests real Redis connections, a Redis Cluster
// of their own ([NewRedisCluster]: three masters on loopback ports) and a
// TCP proxy that injects faults in front of any server.
//
// Tests read MALAI_TEST_REDIS_URL (for example redis://127.0.0.1:6379/0).
// Without it a test skips and says why; with MALAI_REQUIRE_SERVICES=1 a
// missing or unreachable service fails the test instead, so CI cannot go
// green by skipping. Every test gets its own Redis key prefix, removed at
// cleanup, so packages can run their tests in parallel against one server.
// [NewPostgresServer] starts a throwaway PostgreSQL cluster (initdb on a
// free port) for tests that must shape the server itself (TLS only, a
// pg_hba.conf); connection helpers live with the stores that need them
// (auditlog/pgstore), so this package pulls no PostgreSQL driver.
package servicetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Environment variables read by this package.
const (
	EnvRedisURL        = "MALAI_TEST_REDIS_URL"
	EnvRequireServices = "MALAI_REQUIRE_SERVICES"
)

// Required reports whether missing services must fail tests.
func Required() bool { return os.Getenv(EnvRequireServices) == "1" }

// Unavailable skips t with the message, or fails it when services are
// [Required].
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("%s (%s=1)", msg, EnvRequireServices)
	}
	t.Skip(msg)
}

// Unique returns a short random token for names that must not collide
// between tests or runs.
func Unique() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

var nonName = regexp.MustCompile(`[^a-z0-9_]+`)

// Redis is a real Redis connection scoped to one test.
type Redis struct {
	Client *redis.Client
	// Prefix is unique to the test; keys under it are deleted at cleanup.
	Prefix string
	// Addr is host:port of the server, for tests that put a proxy in front.
	Addr string
	opts *redis.Options
}

// NewClient returns a new client to the same server with addr replaced,
// for example a [Proxy] in front of it. It is closed at cleanup.
func (r *Redis) NewClient(t testing.TB, addr string) *redis.Client {
	o := *r.opts
	o.Addr = addr
	c := redis.NewClient(&o)
	t.Cleanup(func() { c.Close() })
	return c
}

// RedisURL returns MALAI_TEST_REDIS_URL or skips (fails when required).
func RedisURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvRedisURL)
	if u == "" {
		Unavailable(t, "Redis test skipped: set %s (e.g. redis://127.0.0.1:6379/0) to run it", EnvRedisURL)
	}
	return u
}

// NewRedis connects to the test Redis server and gives the test a unique
// key prefix. Keys under the prefix are removed when the test ends.
func NewRedis(t testing.TB) *Redis {
	t.Helper()
	opts, err := redis.ParseURL(RedisURL(t))
	if err != nil {
		t.Fatalf("%s is not a Redis URL: %v", EnvRedisURL, err)
	}
	c := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		Unavailable(t, "Redis at %s does not answer: %v", opts.Addr, err)
	}
	prefix := "malai-test:" + nonName.ReplaceAllString(strings.ToLower(t.Name()), "_") + ":" + Unique() + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 500).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
			if len(keys) == 500 {
				c.Unlink(ctx, keys...)
				keys = keys[:0]
			}
		}
		if len(keys) > 0 {
			c.Unlink(ctx, keys...)
		}
		c.Close()
	})
	return &Redis{Client: c, Prefix: prefix, Addr: opts.Addr, opts: opts}
}
