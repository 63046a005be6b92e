package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/auditlog/pgstore"
	"github.com/malai-sec/malai/examples/malai/identity"
	"github.com/malai-sec/malai/examples/malai/internal/platform"
	"github.com/malai-sec/malai/keyring"
)

// PGAudit names the PostgreSQL objects of one component: the schema, the
// migrator role that owns its tables, and the application role the
// component connects as (only the privileges its runtime needs).
type PGAudit struct {
	Schema, Owner, AppRole string
}

// defaultPGAudit is the audit chain's objects that "malai migrate"
// creates with the default prefix.
var defaultPGAudit = pgNamesFor(defaultPGPrefix).Audit

// defaultPGPrefix starts the name of every PostgreSQL schema and role the
// system creates.
const defaultPGPrefix = "malai"

// pgNames are the PostgreSQL objects "malai migrate -prefix P" creates:
// the ledger's audit chain (P_audit, its app role P_ledger_app) and
// identity's accounts, sessions, keys and security events (P_identity,
// P_identity_app). Each component has its own roles: the ledger's role
// cannot read identity's tables, nor identity's the chain.
type pgNames struct{ Audit, Identity PGAudit }

func pgNamesFor(prefix string) pgNames {
	return pgNames{
		Audit:    PGAudit{Schema: prefix + "_audit", Owner: prefix + "_audit_owner", AppRole: prefix + "_ledger_app"},
		Identity: PGAudit{Schema: prefix + "_identity", Owner: prefix + "_identity_owner", AppRole: prefix + "_identity_app"},
	}
}

// migrate creates both components' roles, schemas and tables.
func (n pgNames) migrate(ctx context.Context, adminURL string) error {
	if err := n.Audit.migrate(ctx, adminURL); err != nil {
		return err
	}
	return n.Identity.migrateWith(ctx, adminURL, func(ctx context.Context, conn *pgx.Conn) error {
		return identity.MigratePostgres(ctx, conn, n.Identity.Schema, n.Identity.Owner, n.Identity.AppRole)
	})
}

// migrateCmd runs the migrations as a privileged role and prints how to
// run the system as the application roles.
func migrateCmd(args []string) error {
	fs := flag.NewFlagSet("migrate", flag.ExitOnError)
	admin := fs.String("admin-url", "", "PostgreSQL URL of a privileged role (superuser or schema owner); used only here, never by the runtime")
	prefix := fs.String("prefix", defaultPGPrefix, "prefix of every schema and role created (the same -postgres-prefix the components get)")
	usage(fs, "migrate -admin-url URL [-prefix P]", `Creates (idempotently) the PostgreSQL schemas, tables and least-privilege
roles of the ledger's audit chain (P_audit, role P_ledger_app) and of
identity's data (P_identity, role P_identity_app), connected as a
privileged role. The components then connect with -postgres-url as their
own application roles.`)
	fs.Parse(args)
	if *admin == "" {
		return errors.New("migrate needs -admin-url")
	}
	if !pgName.MatchString(*prefix + "_identity_owner") {
		return fmt.Errorf("invalid -prefix %q (lower-case letters, digits and _)", *prefix)
	}
	n := pgNamesFor(*prefix)
	if err := n.migrate(context.Background(), *admin); err != nil {
		return err
	}
	server, err := serverURL(*admin)
	if err != nil {
		return err
	}
	pfx := ""
	if *prefix != defaultPGPrefix {
		pfx = " -postgres-prefix " + *prefix
	}
	fmt.Printf(`schemas %s and %s migrated; roles %s and %s created.
Run the system as the application roles:
  go run ./examples/malai -postgres-url '%s'%s
`, n.Audit.Schema, n.Identity.Schema, n.Audit.AppRole, n.Identity.AppRole, server, pfx)
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

// migrate creates the roles and schema if missing and runs the audit
// chain's pgstore.Migrate, connected as the privileged role of adminURL.
// The runtime never receives adminURL.
func (p PGAudit) migrate(ctx context.Context, adminURL string) error {
	return p.migrateWith(ctx, adminURL, func(ctx context.Context, conn *pgx.Conn) error {
		return pgstore.Migrate(ctx, conn, pgstore.MigrateConfig{Schema: p.Schema, Owner: p.Owner, AppRole: p.AppRole})
	})
}

// migrateWith creates the roles and schema if missing, then runs tables.
func (p PGAudit) migrateWith(ctx context.Context, adminURL string, tables func(context.Context, *pgx.Conn) error) error {
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
	return tables(ctx, conn)
}

// auditRekeyCmd re-encrypts the PostgreSQL audit rows sealed under older
// data keys, connected as the migrator role: the runtime's application
// role may not rewrite a row. Run it after a data-key rotation.
func auditRekeyCmd(args []string) error {
	fs := flag.NewFlagSet("audit-rekey", flag.ExitOnError)
	admin := fs.String("admin-url", "", "PostgreSQL URL of a privileged role that may SET ROLE to the migrator; used only here")
	dataDir := fs.String("data", "malai-data", "data directory holding the key file")
	usage(fs, "audit-rekey -admin-url URL [-data DIR]", `Re-encrypts the PostgreSQL audit rows sealed under older data keys, as the
migrator role (the ledger's role may not rewrite a row). Run it after a
data-key rotation ("malai rotate-keys" or -rotate-keys-every), once the new
key seals (-activate-in after the rotation; it refuses before). It may run
while the ledgers append, and again after an interruption. "malai verify
-postgres-url URL" then reports "sealed_by": the rows under each data key.`)
	fs.Parse(args)
	if *admin == "" {
		return errors.New("audit-rekey needs -admin-url")
	}
	n, err := defaultPGAudit.rekeyWithKeyFile(context.Background(), *admin, *dataDir)
	if err != nil {
		return err
	}
	fmt.Printf("%d audit rows re-encrypted under the current data key\n", n)
	return nil
}

// rekeyWithKeyFile re-encrypts the rows sealed under older keys with the
// key file under dataDir. It refuses while the newest data key is not yet
// sealing (a rotation's activation delay): re-encrypting then would keep
// the rows under the key being retired.
func (p PGAudit) rekeyWithKeyFile(ctx context.Context, adminURL, dataDir string) (int, error) {
	keys, err := platform.LoadKeys(dataDir)
	if err != nil {
		return 0, err
	}
	if newest := keys.DataKeys[len(keys.DataKeys)-1]; time.Now().Before(newest.ActiveFrom) {
		return 0, fmt.Errorf("audit-rekey: the newest data key seals from %s; run audit-rekey after then", newest.ActiveFrom.UTC().Format(time.RFC3339))
	}
	ring, err := keys.Ring()
	if err != nil {
		return 0, err
	}
	return p.rekey(ctx, adminURL, ring)
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

// appDSN turns the admin URL into the application role's URL: same host,
// port, database and TLS settings, the app role as user, no password (it
// comes from the password provider).
func appDSN(adminURL, role string) (string, error) {
	srv, err := serverURL(adminURL)
	if err != nil {
		return "", err
	}
	return asRole(srv, role)
}

// serverURL is adminURL without its user and password: the server,
// database and TLS settings every component's -postgres-url names.
func serverURL(adminURL string) (string, error) {
	if u, err := url.Parse(adminURL); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.User = nil
		return u.String(), nil
	}
	cfg, err := pgx.ParseConfig(adminURL)
	if err != nil {
		return "", errors.New("invalid PostgreSQL URL")
	}
	ssl := "disable"
	if cfg.TLSConfig != nil {
		ssl = "verify-full"
	}
	return fmt.Sprintf("postgres://%s/%s?sslmode=%s", net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), url.PathEscape(cfg.Database), ssl), nil
}

// asRole returns the postgres:// URL u connecting as role, unless u
// names a user already (an operator's explicit choice).
func asRole(u, role string) (string, error) {
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "postgres" && pu.Scheme != "postgresql") {
		return "", errors.New("the PostgreSQL URL must be a postgres:// URL")
	}
	if pu.User == nil {
		pu.User = url.User(role)
	}
	return pu.String(), nil
}
