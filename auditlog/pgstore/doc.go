// Package pgstore is the PostgreSQL [auditlog.Store], with the database
// role separation the audit log needs.
//
// # Guarantees
//
//   - Each Append is one transaction: pg_advisory_xact_lock, a head check,
//     one COPY of the whole batch, commit. With [auditlog.Log]'s group
//     commit that is one transaction per batch, never per event, and two
//     processes appending to one table produce one linear chain (the loser
//     of a race gets auditlog.ErrConflict, catches up and retries).
//   - [Migrate], run with a privileged role the runtime never holds,
//     creates the tables owned by a migrator role and grants the
//     application role SELECT and INSERT only. The application role's
//     UPDATE, DELETE, TRUNCATE, SELECT … FOR UPDATE and DDL are refused by
//     the server (tested). ENABLE ALWAYS triggers refuse UPDATE, DELETE and
//     TRUNCATE even for a superuser under session_replication_role =
//     replica.
//   - Re-encryption goes through a SECURITY DEFINER function that can only
//     swap a row's sealed payload and key id (a trigger refuses any other
//     change), so the application role needs no UPDATE privilege.
//   - [Config.Password] is called for every new connection (pgxpool
//     BeforeConnect): a rotated credential is used without a restart.
//   - [New] refuses a DSN that does not verify the server
//     (sslmode=verify-full) unless the host is loopback or a Unix socket.
//
// # Usage
//
//	// once, as the privileged role:
//	err := pgstore.Migrate(ctx, adminConn, pgstore.MigrateConfig{
//		Schema: "audit", Owner: "audit_migrator", AppRole: "ledger_app"})
//	// at run time, as the application role:
//	st, err := pgstore.New(ctx, pgstore.Config{
//		DSN:      "postgres://ledger_app@db.internal/ledger?sslmode=verify-full",
//		Password: vault.CurrentPassword,
//		Schema:   "audit",
//	})
//
// # Security caveats
//
// The tables' owner and any superuser can disable the triggers and
// rewrite rows: only checkpoints signed with a key the database never sees
// and kept by a witness detect that ([auditlog.Verify]). Errors never
// include the DSN, which may hold a password.
package pgstore
