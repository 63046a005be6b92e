package identity

import (
	"context"
	"crypto/rand"
	"net/url"
	"testing"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/note"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/examples/malai/identity/internal/pgtest"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
	"github.com/malai-sec/malai/internal/servicetest"
)

// TestPostgresMode migrates identity's schema with least-privilege roles
// and runs the service on it as the application role: accounts and the
// audit chain live in PostgreSQL, and a second replica on the same schema
// sees the first one's accounts and refuses its usernames.
func TestPostgresMode(t *testing.T) {
	ctx := context.Background()
	pg := pgtest.New(t)
	admin, err := pgx.Connect(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	suffix := servicetest.Unique()
	owner, app := "idown_"+suffix, "idapp_"+suffix
	for _, q := range []string{"CREATE ROLE " + owner + " NOLOGIN", "CREATE ROLE " + app + " LOGIN"} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), pg.URL)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		for _, r := range []string{owner, app} {
			c.Exec(context.Background(), "REASSIGN OWNED BY "+r+" TO CURRENT_USER")
			c.Exec(context.Background(), "DROP OWNED BY "+r)
			c.Exec(context.Background(), "DROP ROLE "+r)
		}
	})
	if err := MigratePostgres(ctx, admin, pg.Name, owner, app); err != nil {
		t.Fatal(err)
	}
	if err := MigratePostgres(ctx, admin, pg.Name, owner, app); err != nil {
		t.Fatalf("a second migration: %v", err)
	}
	u, _ := url.Parse(pg.URL)
	u.User = url.User(app)
	env := &platform.Env{Postgres: platform.Postgres{URL: u.String(), Schema: pg.Name}}

	h := newHarness(t, nil) // for its clock and key ring; its own stores are unused
	replica := func() (*Service, func()) {
		st, ast, err := openStores(ctx, env)
		if err != nil {
			t.Fatal(err)
		}
		skey, _, _ := note.GenerateKey(rand.Reader, AuditOrigin)
		signer, _ := note.NewSigner(skey)
		audit, err := auditlog.New(auditlog.Config{Store: ast, Origin: AuditOrigin, Signers: []note.Signer{signer}, Ring: h.ring})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := New(Config{Issuer: testIssuer, Store: st, Ring: h.ring, Audit: audit, Now: h.clock.Now,
			Argon2: Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}})
		if err != nil {
			t.Fatal(err)
		}
		return svc, func() { svc.Close(); audit.Close(); ast.Close(); st.Close() }
	}
	a, closeA := replica()
	defer closeA()
	if _, err := a.CreateUser(ctx, "alice", strongPW); err != nil {
		t.Fatal(err)
	}
	// The second replica shares nothing in memory with the first, only
	// the key ring every replica is given.
	b, closeB := replica()
	defer closeB()
	if _, err := b.CreateUser(ctx, "alice", otherPW); err == nil {
		t.Fatal("a second replica registered a taken username")
	}
	if u, err := b.LookupUser(ctx, "alice"); err != nil || u.Username != "alice" {
		t.Fatalf("the second replica does not see the account: %+v %v", u, err)
	}
	if string(a.JWKS()) != string(b.JWKS()) {
		t.Fatal("replicas publish different keys")
	}
}
