package pgstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// MigrateConfig configures [Migrate].
type MigrateConfig struct {
	// Schema holds the tables; it must exist. Required.
	Schema string
	// Owner is the migrator role that owns the tables and triggers; the
	// runtime never connects as it. AppRole is the role the runtime
	// connects as. Both empty: the tables stay owned by the connecting
	// role and no grant is made (tests). Otherwise both must exist.
	Owner, AppRole string
}

// Migrate creates the tables, the trigger that keeps usernames forever,
// and the grants. Run it as a privileged role the runtime never holds. It
// is idempotent. After it, AppRole may read and write the identity tables
// but holds no DDL and cannot TRUNCATE; on the usernames table it may
// only SELECT and INSERT, and an ENABLE ALWAYS trigger refuses UPDATE and
// DELETE whoever runs them (short of the owner disabling it), so a
// username once registered can never be registered again.
func Migrate(ctx context.Context, conn *pgx.Conn, cfg MigrateConfig) error {
	if !validName(cfg.Schema) || (cfg.Owner == "") != (cfg.AppRole == "") {
		return fmt.Errorf("%w: Migrate needs Schema, and Owner and AppRole together", ErrInvalidConfig)
	}
	n := names(cfg.Schema)
	id := func(s string) string { return pgx.Identifier{s}.Sanitize() }
	refuse := pgx.Identifier{cfg.Schema, "usernames_refuse"}.Sanitize()
	stmts := []string{
		`CREATE TABLE IF NOT EXISTS ` + n.usernames + ` (
			name_key text PRIMARY KEY,
			user_id text NOT NULL UNIQUE,
			registered timestamptz NOT NULL DEFAULT now())`,
		`CREATE TABLE IF NOT EXISTS ` + n.users + ` (
			id text PRIMARY KEY REFERENCES ` + n.usernames + ` (user_id),
			name_key text NOT NULL UNIQUE,
			version bigint NOT NULL,
			doc jsonb NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS ` + n.sessions + ` (
			id text PRIMARY KEY,
			user_id text NOT NULL,
			created timestamptz NOT NULL,
			last_used timestamptz NOT NULL,
			revoked boolean NOT NULL DEFAULT false,
			current bytea NOT NULL,
			doc jsonb NOT NULL)`,
		`CREATE INDEX IF NOT EXISTS sessions_user_id ON ` + n.sessions + ` (user_id)`,
		`CREATE TABLE IF NOT EXISTS ` + n.refresh + ` (
			digest bytea PRIMARY KEY CHECK (octet_length(digest) = 32),
			session_id text NOT NULL REFERENCES ` + n.sessions + ` (id) ON DELETE CASCADE)`,
		`CREATE TABLE IF NOT EXISTS ` + n.events + ` (
			key text NOT NULL,
			member text NOT NULL,
			at timestamptz NOT NULL)`,
		`CREATE INDEX IF NOT EXISTS risk_events_key_at ON ` + n.events + ` (key, at DESC)`,
		`CREATE INDEX IF NOT EXISTS risk_events_at ON ` + n.events + ` (at)`,
		`CREATE TABLE IF NOT EXISTS ` + n.keys + ` (
			id integer PRIMARY KEY CHECK (id = 1),
			version bigint NOT NULL,
			doc jsonb NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS ` + n.secrets + ` (
			name text PRIMARY KEY,
			value bytea NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS ` + n.clientKeys + ` (
			client_id text NOT NULL,
			kid text NOT NULL,
			doc jsonb NOT NULL,
			revoked timestamptz,
			PRIMARY KEY (client_id, kid))`,
		`CREATE TABLE IF NOT EXISTS ` + n.assertions + ` (
			client_id text NOT NULL,
			jti text NOT NULL,
			expires timestamptz NOT NULL,
			PRIMARY KEY (client_id, jti))`,
		`CREATE INDEX IF NOT EXISTS client_assertions_expires ON ` + n.assertions + ` (expires)`,
		`CREATE OR REPLACE FUNCTION ` + refuse + `() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			RAISE EXCEPTION 'usernames are kept forever: % refused', TG_OP
				USING ERRCODE = 'insufficient_privilege';
		END $$`,
	}
	for _, tr := range []struct{ name, when string }{
		{"usernames_no_update", "BEFORE UPDATE ON " + n.usernames + " FOR EACH ROW"},
		{"usernames_no_delete", "BEFORE DELETE ON " + n.usernames + " FOR EACH ROW"},
		{"usernames_no_truncate", "BEFORE TRUNCATE ON " + n.usernames + " FOR EACH STATEMENT"},
	} {
		stmts = append(stmts,
			`DROP TRIGGER IF EXISTS `+id(tr.name)+` ON `+n.usernames,
			`CREATE TRIGGER `+id(tr.name)+` `+tr.when+` EXECUTE FUNCTION `+refuse+`()`,
			`ALTER TABLE `+n.usernames+` ENABLE ALWAYS TRIGGER `+id(tr.name))
	}
	if cfg.Owner != "" {
		owner, app, schema := id(cfg.Owner), id(cfg.AppRole), id(cfg.Schema)
		rw := n.users + ", " + n.sessions + ", " + n.refresh + ", " + n.events + ", " + n.keys + ", " +
			n.secrets + ", " + n.clientKeys + ", " + n.assertions
		for _, t := range append([]string{n.usernames}, n.list()[1:]...) {
			stmts = append(stmts, `ALTER TABLE `+t+` OWNER TO `+owner)
		}
		stmts = append(stmts,
			`ALTER FUNCTION `+refuse+`() OWNER TO `+owner,
			`GRANT USAGE ON SCHEMA `+schema+` TO `+owner+`, `+app,
			`REVOKE ALL ON `+n.usernames+`, `+rw+` FROM PUBLIC, `+app,
			`GRANT SELECT, INSERT ON `+n.usernames+` TO `+app,
			`GRANT SELECT, INSERT, UPDATE, DELETE ON `+rw+` TO `+app,
		)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// Migrations from several processes at once take turns.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext($1))", "malai.identity.migrate:"+cfg.Schema); err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("pgstore: migrate: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	return nil
}
