// Package pgtest gives identity's tests a fresh schema on the PostgreSQL
// server MALAI_TEST_POSTGRES_URL names, dropped at cleanup. Without the
// variable a test skips; with MALAI_REQUIRE_SERVICES=1 it fails instead.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvPostgresURL names the test server; EnvRequireServices=1 turns a
// missing server into a failure.
const (
	EnvPostgresURL     = "MALAI_TEST_POSTGRES_URL"
	EnvRequireServices = "MALAI_REQUIRE_SERVICES"
)

// unavailable skips t, or fails it when services are required.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(EnvRequireServices) == "1" {
		t.Fatalf("%s (%s=1)", msg, EnvRequireServices)
	}
	t.Skip(msg)
}

// Schema is one test's schema on the test server.
type Schema struct {
	// URL connects as the server URL's (privileged) role.
	URL string
	// Name is the schema, created for the test and dropped with
	// everything in it at cleanup.
	Name string
}

// New creates a fresh schema.
func New(t testing.TB) Schema {
	t.Helper()
	url := os.Getenv(EnvPostgresURL)
	if url == "" {
		unavailable(t, "PostgreSQL test skipped: set %s (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable) to run it", EnvPostgresURL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		unavailable(t, "PostgreSQL does not answer: %v", err)
	}
	defer admin.Close(context.Background())
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("drop schema %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(ctx, "DROP SCHEMA "+name+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", name, err)
		}
	})
	return Schema{URL: url, Name: name}
}
