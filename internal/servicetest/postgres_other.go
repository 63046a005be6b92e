//go:build !unix

package servicetest

import "testing"

// NewPostgresServer skips: starting the server as another user needs a
// Unix system.
func NewPostgresServer(t testing.TB, _ PostgresConfig) *PostgresServer {
	t.Helper()
	Unavailable(t, "PostgreSQL server test skipped: needs a Unix system")
	return nil
}
