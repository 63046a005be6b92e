package pgstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/malai-sec/malai/examples/malai/identity/internal/pgtest"
	"github.com/malai-sec/malai/examples/malai/identity/store"
	"github.com/malai-sec/malai/examples/malai/identity/store/pgstore"
	"github.com/malai-sec/malai/examples/malai/identity/store/storetest"
	"github.com/malai-sec/malai/internal/servicetest"
)

func migrated(t *testing.T, cfg pgstore.MigrateConfig) pgtest.Schema {
	t.Helper()
	pg := pgtest.New(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	cfg.Schema = pg.Name
	if err := pgstore.Migrate(ctx, conn, cfg); err != nil {
		t.Fatal(err)
	}
	// Twice: Migrate is idempotent.
	if err := pgstore.Migrate(ctx, conn, cfg); err != nil {
		t.Fatal(err)
	}
	return pg
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Open {
		pg := migrated(t, pgstore.MigrateConfig{})
		return func() store.Store {
			s, err := pgstore.New(context.Background(), pgstore.Config{DSN: pg.URL, Schema: pg.Name})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	})
}

// TestLeastPrivilege runs the store as the application role Migrate
// grants, and shows that role can neither delete a username (so it can
// never be registered again) nor change the schema.
func TestLeastPrivilege(t *testing.T) {
	ctx := context.Background()
	admin := pgtest.New(t)
	suffix := servicetest.Unique()
	owner, app := "idowner_"+suffix, "idapp_"+suffix
	conn, err := pgx.Connect(ctx, admin.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		"CREATE ROLE " + owner + " NOLOGIN",
		"CREATE ROLE " + app + " LOGIN",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), admin.URL)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		// The schema is dropped by servicetest after this cleanup runs,
		// so hand what the roles own to the admin first.
		for _, r := range []string{owner, app} {
			c.Exec(context.Background(), "REASSIGN OWNED BY "+r+" TO CURRENT_USER")
			c.Exec(context.Background(), "DROP OWNED BY "+r)
			c.Exec(context.Background(), "DROP ROLE "+r)
		}
	})
	if err := pgstore.Migrate(ctx, conn, pgstore.MigrateConfig{Schema: admin.Name, Owner: owner, AppRole: app}); err != nil {
		t.Fatal(err)
	}
	appURL := strings.Replace(admin.URL, "//"+userOf(admin.URL)+"@", "//"+app+"@", 1)
	s, err := pgstore.New(ctx, pgstore.Config{DSN: appURL, Schema: admin.Name})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateUser(ctx, store.User{ID: "u-1", NameKey: "alice", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUser(ctx, "u-1"); err != nil {
		t.Fatal(err)
	}
	appConn, err := pgx.Connect(ctx, appURL)
	if err != nil {
		t.Fatal(err)
	}
	defer appConn.Close(ctx)
	for _, q := range []string{
		"DELETE FROM " + admin.Name + ".usernames WHERE name_key = 'alice'",
		"UPDATE " + admin.Name + ".usernames SET name_key = 'alice2'",
		"TRUNCATE " + admin.Name + ".usernames",
		"DROP TABLE " + admin.Name + ".sessions",
		"ALTER TABLE " + admin.Name + ".users ADD COLUMN x int",
	} {
		if _, err := appConn.Exec(ctx, q); err == nil {
			t.Fatalf("the application role ran %q", q)
		}
	}
	// Even the privileged role cannot free the name: the trigger refuses.
	if _, err := conn.Exec(ctx, "DELETE FROM "+admin.Name+".usernames WHERE name_key = 'alice'"); err == nil {
		t.Fatal("a superuser deleted a username past the trigger")
	}
	_, err = s.CreateUser(ctx, store.User{ID: "u-2", NameKey: "alice", Created: time.Now()})
	if !errors.Is(err, store.ErrUsernameTaken) {
		t.Fatalf("re-registering a deleted name: %v", err)
	}
}

func userOf(url string) string {
	rest, _ := strings.CutPrefix(url, "postgres://")
	u, _, _ := strings.Cut(rest, "@")
	u, _, _ = strings.Cut(u, ":")
	return u
}

func TestInsecureDSNRefused(t *testing.T) {
	_, err := pgstore.New(context.Background(), pgstore.Config{DSN: "postgres://app@db.example.com/identity?sslmode=require", Schema: "identity"})
	if err == nil {
		t.Fatal("a DSN that does not verify the server was accepted for a remote host")
	}
}
