package pgstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/malai-sec/malai/auditlog"
	"github.com/malai-sec/malai/keyring"
)

// Column bounds enforced by Migrate's CHECK constraints: a checkpoint
// note, and a payload at the limit sealed under a 255-byte key id.
const maxCheckpointNote = 64 << 10

// checkpointShape is a POSIX regular expression (PostgreSQL's ARE) for a
// signed checkpoint note: origin line, decimal size, base64 root hash,
// extension lines, blank line, one or more "— name base64" signature lines.
const checkpointShape = `^[^\n]+\n(0|[1-9][0-9]{0,19})\n[A-Za-z0-9+/]{43}=\n([^\n]+\n)*\n(— [^ \n]+ [A-Za-z0-9+/]+={0,2}\n)+$`

var maxStoredPayload = auditlog.MaxPayloadLen + keyring.Overhead(255)

// MigrateConfig configures [Migrate].
type MigrateConfig struct {
	// Schema and Table as in Config; Table defaults to "audit_log". The
	// schema must exist.
	Schema, Table string
	// Owner is the migrator role that owns the tables and triggers. The
	// runtime never connects as it; re-encryption ([Store.Rekey]) runs as
	// it, from its own command. Required; it must exist.
	Owner string
	// AppRole is the role the runtime connects as. It gets USAGE on the
	// schema and SELECT and INSERT on the tables; nothing else. Required;
	// it must exist.
	AppRole string
}

// Migrate creates the tables, triggers and grants. Run it with a
// privileged role (a superuser or the schema's owner) that the runtime
// never holds. It is idempotent: running it again re-applies the grants,
// constraints and triggers. After it:
//
//   - the tables are owned by Owner;
//   - AppRole may SELECT and INSERT, and nothing else: no UPDATE, DELETE,
//     TRUNCATE, row locks (SELECT … FOR UPDATE), DDL, temporary tables, or
//     any function that writes rows (the SECURITY DEFINER re-key function
//     of earlier versions is dropped);
//   - ENABLE ALWAYS triggers refuse UPDATE (except of the sealed payload and
//     key id, which Owner re-encrypts), DELETE and TRUNCATE even under
//     session_replication_role = replica. The tables' owner or a superuser
//     can still disable them: that is why checkpoints are signed and kept
//     by a witness;
//   - CHECK constraints bound every column AppRole can write (field
//     lengths as auditlog's limits, a checkpoint note at most 64 KiB and
//     shaped as a signed checkpoint in UTF-8), so a row it inserts can
//     neither make a reader allocate without bound nor be a note the
//     verifier cannot read; a well-formed note signed by another key is
//     skipped by auditlog.New and located by auditlog.Verify.
//
// Temporary tables are granted to PUBLIC on every database by default,
// and a role holds what PUBLIC holds, so Migrate revokes TEMPORARY on the
// current database from PUBLIC (and from AppRole). Grant it explicitly to
// any other role that needs temporary tables there.
func Migrate(ctx context.Context, conn *pgx.Conn, cfg MigrateConfig) error {
	if cfg.Table == "" {
		cfg.Table = "audit_log"
	}
	if !validName(cfg.Schema) || !validName(cfg.Table) || cfg.Owner == "" || cfg.AppRole == "" {
		return fmt.Errorf("%w: Migrate needs Schema, Owner and AppRole", ErrInvalidConfig)
	}
	id := func(parts ...string) string { return pgx.Identifier(parts).Sanitize() }
	t := id(cfg.Schema, cfg.Table)
	cp := id(cfg.Schema, cfg.Table+"_checkpoint")
	refuse := id(cfg.Schema, cfg.Table+"_refuse")
	guard := id(cfg.Schema, cfg.Table+"_guard_update")
	rekey := id(cfg.Schema, cfg.Table+"_rekey")
	owner, app, schema := id(cfg.Owner), id(cfg.AppRole), id(cfg.Schema)
	stmts := []string{
		`CREATE TABLE IF NOT EXISTS ` + t + ` (
			seq bigint PRIMARY KEY CHECK (seq >= 0),
			ts bigint NOT NULL,
			type text NOT NULL,
			actor text NOT NULL,
			correlation_id text NOT NULL,
			payload bytea NOT NULL,
			key_id text NOT NULL,
			prev_hash bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
			hash bytea NOT NULL CHECK (octet_length(hash) = 32))`,
		`CREATE TABLE IF NOT EXISTS ` + cp + ` (
			id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
			note bytea NOT NULL)`,
		`CREATE OR REPLACE FUNCTION ` + refuse + `() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			RAISE EXCEPTION 'audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
				USING ERRCODE = 'insufficient_privilege';
		END $$`,
		`CREATE OR REPLACE FUNCTION ` + guard + `() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF (NEW.seq, NEW.ts, NEW.type, NEW.actor, NEW.correlation_id, NEW.prev_hash, NEW.hash)
				IS DISTINCT FROM (OLD.seq, OLD.ts, OLD.type, OLD.actor, OLD.correlation_id, OLD.prev_hash, OLD.hash) THEN
				RAISE EXCEPTION 'audit log is append-only: only the sealed payload may be re-encrypted'
					USING ERRCODE = 'insufficient_privilege';
			END IF;
			RETURN NEW;
		END $$`,
		// earlier versions let the app role re-key through this function
		`DROP FUNCTION IF EXISTS ` + rekey + `(bigint, text, text, bytea)`,
	}
	for _, c := range []struct{ table, name, check string }{
		{t, cfg.Table + "_fields", fmt.Sprintf(`octet_length(type) BETWEEN 1 AND %d AND octet_length(actor) <= %d AND
			octet_length(correlation_id) <= %d AND octet_length(key_id) <= 255 AND octet_length(payload) <= %d`,
			auditlog.MaxTypeLen, auditlog.MaxActorLen, auditlog.MaxCorrelationLen, maxStoredPayload)},
		{cp, cfg.Table + "_cp_note", fmt.Sprintf(`octet_length(note) BETWEEN 1 AND %d`, maxCheckpointNote)},
		// The shape of a signed tlog checkpoint (origin, size, root, optional
		// extension lines, a blank line, signature lines), in UTF-8: whoever
		// holds the app role cannot store a note the verifier cannot read.
		// A well-formed note signed by another key is not refused here; the
		// log skips it at start-up and the verifier locates it.
		{cp, cfg.Table + "_cp_shape", `convert_from(note, 'UTF8') ~ '` + checkpointShape + `'`},
	} {
		// added once; a second run does not re-scan the table
		stmts = append(stmts, `DO $$ BEGIN
			IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = '`+c.table+`'::regclass AND conname = '`+c.name+`') THEN
				ALTER TABLE `+c.table+` ADD CONSTRAINT `+id(c.name)+` CHECK (`+c.check+`);
			END IF;
		END $$`)
	}
	for _, tr := range []struct{ table, name, when, fn string }{
		{t, cfg.Table + "_no_update", "BEFORE UPDATE ON " + t + " FOR EACH ROW", guard},
		{t, cfg.Table + "_no_delete", "BEFORE DELETE ON " + t + " FOR EACH ROW", refuse},
		{t, cfg.Table + "_no_truncate", "BEFORE TRUNCATE ON " + t + " FOR EACH STATEMENT", refuse},
		{cp, cfg.Table + "_cp_no_update", "BEFORE UPDATE ON " + cp + " FOR EACH ROW", refuse},
		{cp, cfg.Table + "_cp_no_delete", "BEFORE DELETE ON " + cp + " FOR EACH ROW", refuse},
		{cp, cfg.Table + "_cp_no_truncate", "BEFORE TRUNCATE ON " + cp + " FOR EACH STATEMENT", refuse},
	} {
		name := id(tr.name)
		stmts = append(stmts,
			`DROP TRIGGER IF EXISTS `+name+` ON `+tr.table,
			`CREATE TRIGGER `+name+` `+tr.when+` EXECUTE FUNCTION `+tr.fn+`()`,
			`ALTER TABLE `+tr.table+` ENABLE ALWAYS TRIGGER `+name)
	}
	stmts = append(stmts,
		`ALTER TABLE `+t+` OWNER TO `+owner,
		`ALTER TABLE `+cp+` OWNER TO `+owner,
		`ALTER FUNCTION `+refuse+`() OWNER TO `+owner,
		`ALTER FUNCTION `+guard+`() OWNER TO `+owner,
		`REVOKE ALL ON FUNCTION `+refuse+`(), `+guard+`() FROM PUBLIC`,
		`GRANT USAGE ON SCHEMA `+schema+` TO `+owner,
		`REVOKE ALL ON `+t+`, `+cp+` FROM PUBLIC, `+app,
		`GRANT SELECT, INSERT ON `+t+`, `+cp+` TO `+app,
		`GRANT USAGE ON SCHEMA `+schema+` TO `+app,
		`DO $$ BEGIN
			EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC, `+strings.ReplaceAll(app, "'", "''")+`', current_database());
		END $$`,
	)
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("pgstore: migrate: %s: %w", firstLine(s), err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	return nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
