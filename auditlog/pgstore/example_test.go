package pgstore_test

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/malai-sec/malai/auditlog/pgstore"
)

// Migrations run once under a privileged role; the service connects as
// the application role with a password fetched for every new connection.
// (Not run: it needs a server.)
func Example() {
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, "postgres://migrator@db.internal/ledger?sslmode=verify-full")
	if err != nil {
		fmt.Println(err)
		return
	}
	err = pgstore.Migrate(ctx, admin, pgstore.MigrateConfig{Schema: "audit", Owner: "audit_owner", AppRole: "ledger_app"})
	admin.Close(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	currentPassword := func(ctx context.Context) (string, error) { return readSecret(ctx, "ledger_app") }
	st, err := pgstore.New(ctx, pgstore.Config{
		DSN:      "postgres://ledger_app@db.internal/ledger?sslmode=verify-full",
		Password: currentPassword,
		Schema:   "audit",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()
}

// readSecret stands for the deployment's secret store.
func readSecret(context.Context, string) (string, error) { return "", nil }
