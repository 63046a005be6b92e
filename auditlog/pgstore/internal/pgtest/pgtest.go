// Package pgtest hands the PostgreSQL store's tests a real server: a fresh
// schema per test on the server MALAI_TEST_POSTGRES_URL names (for example
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable), dropped at
// cleanup. Without the variable a test skips; with
// MALAI_REQUIRE_SERVICES=1 it fails instead.
package pgtest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/malai-sec/malai/internal/servicetest"
)

// EnvPostgresURL names the test server.
const EnvPostgresURL = "MALAI_TEST_POSTGRES_URL"

// PostgresURL returns MALAI_TEST_POSTGRES_URL or skips (fails when
// required). The URL must name a role that may create schemas and roles.
func PostgresURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvPostgresURL)
	if u == "" {
		servicetest.Unavailable(t, "PostgreSQL test skipped: set %s (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable) to run it", EnvPostgresURL)
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
		servicetest.Unavailable(t, "PostgreSQL does not answer: %v", err)
	}
	defer admin.Close(context.Background())
	schema := "t_" + servicetest.Unique()
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
