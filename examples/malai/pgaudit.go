package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/pgstore"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
	"github.com/malai-sec/malai/keyring"
)

// PGAudit names the PostgreSQL objects of the audit chain: the schema,
// the migrator role that owns the tables, and the application role the
// ledger connects as (SELECT and INSERT only).
type PGAudit struct {
	Schema, Owner, AppRole string
}

// defaultPGAudit is what "malai migrate" creates.
var defaultPGAudit = PGAudit{Schema: "malai_audit", Owner: "malai_audit_owner", AppRole: "malai_ledger_app"}

// migrateCmd runs the audit chain's migration as a privileged role and
// prints the application role's DSN for "malai -audit-dsn".
func migrateCmd(args []string) error {
	fs := flag.NewFlagSet("migrate", flag.ExitOnError)
	admin := fs.String("admin-url", "", "PostgreSQL URL of a privileged role (superuser or schema owner); used only here")
	fs.Parse(args)
	if *admin == "" {
		return errors.New("migrate needs -admin-url")
	}
	if err := defaultPGAudit.migrate(context.Background(), *admin); err != nil {
		return err
	}
	dsn, err := appDSN(*admin, defaultPGAudit.AppRole)
	if err != nil {
		return err
	}
	fmt.Printf("audit schema %s migrated; run the system as the application role:\n  go run ./examples/malai -audit-dsn '%s'\n", defaultPGAudit.Schema, dsn)
	return nil
}

var pgName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func (p PGAudit) validate() error {
	for _, n := range []string{p.Schema, p.Owner, p.AppRole} {
		if !pgName.MatchString(n) {
			return fmt.Errorf("invalid PostgreSQL name %q", n)
		}
	}
	return nil
}

// migrate creates the roles and schema if missing and runs
// pgstore.Migrate, connected as the privileged role of adminURL. The
// runtime never receives adminURL.
func (p PGAudit) migrate(ctx context.Context, adminURL string) error {
	if err := p.validate(); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("migrate: connect as the privileged role: %w", errors.Unwrap(err))
	}
	defer conn.Close(context.Background())
	for _, q := range []string{
		fmt.Sprintf(`DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname='%s') THEN CREATE ROLE %s NOLOGIN; END IF; END$$`, p.Owner, p.Owner),
		fmt.Sprintf(`DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname='%s') THEN CREATE ROLE %s LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE; END IF; END$$`, p.AppRole, p.AppRole),
		"CREATE SCHEMA IF NOT EXISTS " + p.Schema,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	return pgstore.Migrate(ctx, conn, pgstore.MigrateConfig{Schema: p.Schema, Owner: p.Owner, AppRole: p.AppRole})
}

// auditRekeyCmd re-encrypts the PostgreSQL audit rows sealed under older
// data keys, connected as the migrator role: the runtime's application
// role may not rewrite a row. Run it after a data-key rotation.
func auditRekeyCmd(args []string) error {
	fs := flag.NewFlagSet("audit-rekey", flag.ExitOnError)
	admin := fs.String("admin-url", "", "PostgreSQL URL of a privileged role that may SET ROLE to the migrator; used only here")
	dataDir := fs.String("data", "malai-data", "data directory holding the key file")
	fs.Parse(args)
	if *admin == "" {
		return errors.New("audit-rekey needs -admin-url")
	}
	keys, err := platform.LoadKeys(*dataDir)
	if err != nil {
		return err
	}
	ring, err := keys.Ring()
	if err != nil {
		return err
	}
	n, err := defaultPGAudit.rekey(context.Background(), *admin, ring)
	if err != nil {
		return err
	}
	fmt.Printf("%d audit rows re-encrypted under the current data key\n", n)
	return nil
}

// rekey re-encrypts every audit row sealed under an older key of ring,
// connected through adminURL as the migrator role (the tables' owner).
func (p PGAudit) rekey(ctx context.Context, adminURL string, ring *keyring.Ring) (int, error) {
	if err := p.validate(); err != nil {
		return 0, err
	}
	st, err := pgstore.New(ctx, pgstore.Config{DSN: adminURL, Schema: p.Schema, Role: p.Owner})
	if err != nil {
		return 0, fmt.Errorf("audit-rekey: connect as the migrator: %w", err)
	}
	defer st.Close()
	return auditlog.Reencrypt(ctx, st, ring)
}

// drop removes what migrate created (the evidence pass cleans up after
// itself).
func (p PGAudit) drop(ctx context.Context, adminURL string) error {
	if err := p.validate(); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var errs []error
	for _, q := range []string{
		"DROP SCHEMA IF EXISTS " + p.Schema + " CASCADE",
		"DROP OWNED BY " + p.AppRole, "DROP ROLE IF EXISTS " + p.AppRole,
		"DROP OWNED BY " + p.Owner, "DROP ROLE IF EXISTS " + p.Owner,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// appDSN turns the admin URL into the application role's DSN: same host,
// port, database and TLS settings, the app role as user, no password (it
// comes from the password provider).
func appDSN(adminURL, role string) (string, error) {
	cfg, err := pgx.ParseConfig(adminURL)
	if err != nil {
		return "", errors.New("invalid PostgreSQL URL")
	}
	ssl := "disable"
	if cfg.TLSConfig != nil {
		ssl = "verify-full"
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=%s", role, cfg.Host, cfg.Port, cfg.Database, ssl), nil
}
