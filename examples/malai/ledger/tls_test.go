package ledger

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/pgstore"
	"github.com/malai-sec/malai/examples/malai/internal/pki"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
	"github.com/malai-sec/malai/internal/servicetest"
)

// TestPostgresTLSOnly: the database itself enforces TLS. A throwaway
// cluster serves a certificate from the development CA and its pg_hba.conf
// admits the ledger's role only over hostssl. A plaintext connection with
// the right password is refused by the server; a client that trusts
// another CA refuses the server; the ledger, opened the way the component
// opens it (sslmode=verify-full, the CA file, the password file), runs
// transfers whose chain verifies and replays to the live balances.
func TestPostgresTLSOnly(t *testing.T) {
	ca, err := pki.NewCA(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("postgres", "127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leaf.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	const app, password = "ledger_app", "tls-only-test-password"
	srv := servicetest.NewPostgresServer(t, servicetest.PostgresConfig{
		Settings: []string{"ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'",
			"ssl_min_protocol_version = 'TLSv1.2'", "password_encryption = 'scram-sha-256'"},
		HBA: "local all postgres trust\n" +
			"hostssl all " + app + " 127.0.0.1/32 scram-sha-256\n" +
			"hostnossl all all 0.0.0.0/0 reject\n",
		Files: map[string][]byte{
			"server.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]}),
			"server.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		},
	})
	dir := t.TempDir()
	caFile, pwFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "db-password")
	writeFile(t, caFile, ca.PEM())
	writeFile(t, pwFile, []byte(password+"\n"))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", srv.SocketDir, srv.Port))
	if err != nil {
		t.Fatalf("admin over the Unix socket: %v", err)
	}
	defer admin.Close(context.Background())
	for _, q := range []string{"CREATE ROLE ledger_mig NOLOGIN", "CREATE ROLE " + app + " LOGIN PASSWORD '" + password + "'", "CREATE SCHEMA " + DefaultAuditSchema} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := pgstore.Migrate(ctx, admin, pgstore.MigrateConfig{Schema: DefaultAuditSchema, Owner: "ledger_mig", AppRole: app}); err != nil {
		t.Fatal(err)
	}

	base := fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/postgres?connect_timeout=5", app, password, srv.Port)
	t.Run("plaintext refused by the server", func(t *testing.T) {
		c, err := pgx.Connect(ctx, base+"&sslmode=disable")
		if err == nil {
			c.Close(ctx)
			t.Fatal("a plaintext connection with the right password was admitted")
		}
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "28000" || !strings.Contains(pe.Message, "no encryption") {
			t.Fatalf("plaintext connection: %v; want the server's pg_hba rejection (28000, no encryption)", err)
		}
	})
	t.Run("a server the CA did not certify is refused", func(t *testing.T) {
		other, err := pki.NewCA(nil)
		if err != nil {
			t.Fatal(err)
		}
		otherFile := filepath.Join(t.TempDir(), "other-ca.pem")
		writeFile(t, otherFile, other.PEM())
		c, err := pgx.Connect(ctx, base+"&sslmode=verify-full&sslrootcert="+otherFile)
		if err == nil {
			c.Close(ctx)
			t.Fatal("verify-full admitted a server certified by another CA")
		}
		var ue x509.UnknownAuthorityError
		if !errors.As(err, &ue) {
			t.Fatalf("connection under another CA: %v; want an unknown-authority error", err)
		}
	})

	pg := platform.Postgres{
		URL:          fmt.Sprintf("postgres://%s@127.0.0.1:%d/postgres?sslmode=verify-full&sslrootcert=%s&connect_timeout=5", app, srv.Port, caFile),
		PasswordFile: pwFile,
	}
	e := newEnv(t, withAudit(func() auditlog.Store {
		st, err := OpenAuditStore(context.Background(), dir, pg)
		if err != nil {
			t.Fatalf("the ledger's audit store over verify-full TLS: %v", err)
		}
		return st
	}))
	alice := fundedPair(e)
	for i := range 3 {
		if r := e.do("POST", "/v1/transfers", alice, transferBody("acc-a", "acc-b", 100), fmt.Sprint("tls-", i)); r.code != 201 {
			t.Fatalf("transfer %d over TLS: %s", i, r)
		}
	}
	e.restart()
	f := e.checkChain()
	if f.balances["acc-a"] != 100_000-300 || f.balances["acc-b"] != 300 {
		t.Fatalf("replayed balances %v", f.balances)
	}
	var ssl bool
	if err := admin.QueryRow(ctx, `SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = $1`, app).Scan(&ssl); err != nil || !ssl {
		t.Fatalf("the ledger's sessions: all TLS = %v, %v", ssl, err)
	}
}
