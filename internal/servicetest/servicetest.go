// Package servicetest hands tests real Redis and PostgreSQL connections.
//
// Tests read MALAI_TEST_REDIS_URL (for example redis://127.0.0.1:6379/0)
// and MALAI_TEST_POSTGRES_URL (for example
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable). Without them a
// test skips and says why; with MALAI_REQUIRE_SERVICES=1 a missing or
// unreachable service fails the test instead, so CI cannot go green by
// skipping. Every test gets its own Redis key prefix and its own PostgreSQL
// schema, removed at cleanup, so packages can run their tests in parallel
// against one server.
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

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// Environment variables read by this package.
const (
	EnvRedisURL        = "MALAI_TEST_REDIS_URL"
	EnvPostgresURL     = "MALAI_TEST_POSTGRES_URL"
	EnvRequireServices = "MALAI_REQUIRE_SERVICES"
)

// Required reports whether missing services must fail tests.
func Required() bool { return os.Getenv(EnvRequireServices) == "1" }

func unavailable(t testing.TB, format string, args ...any) {
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
		unavailable(t, "Redis test skipped: set %s (e.g. redis://127.0.0.1:6379/0) to run it", EnvRedisURL)
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
		unavailable(t, "Redis at %s does not answer: %v", opts.Addr, err)
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

// PostgresURL returns MALAI_TEST_POSTGRES_URL or skips (fails when
// required). The URL must name a role that may create schemas and roles.
func PostgresURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvPostgresURL)
	if u == "" {
		unavailable(t, "PostgreSQL test skipped: set %s (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable) to run it", EnvPostgresURL)
	}
	return u
}

// Postgres is a real PostgreSQL pool scoped to a fresh schema.
type Postgres struct {
	// Pool connects as the URL's (privileged) role with search_path set to
	// Schema.
	Pool *pgxpool.Pool
	// Schema is created for this test and dropped, with everything in it,
	// at cleanup.
	Schema string
	// URL is the server URL from the environment.
	URL string
}

// NewPostgres creates a fresh schema on the test server and returns a pool
// whose search_path is that schema.
func NewPostgres(t testing.TB) *Postgres {
	t.Helper()
	url := PostgresURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		unavailable(t, "PostgreSQL does not answer: %v", err)
	}
	defer admin.Close(context.Background())
	schema := "t_" + Unique()
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("%s: %v", EnvPostgresURL, err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(func() {
		pool.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return &Postgres{Pool: pool, Schema: schema, URL: url}
}
