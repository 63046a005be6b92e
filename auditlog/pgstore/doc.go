// Package pgstore is the PostgreSQL [auditlog.Store], with the database
// role separation the audit log needs.
//
// # Guarantees
//
//   - Each Append is one transaction in one round trip: a pipeline of
//     pg_advisory_xact_lock and one INSERT of the whole batch whose WHERE
//     clause is the head check, committed together. With [auditlog.Log]'s
//     group commit that is one transaction per batch, never per event, and
//     two processes appending to one table produce one linear chain (the
//     loser of a race gets auditlog.ErrConflict, catches up and retries).
//   - [Migrate], run with a privileged role the runtime never holds,
//     creates the tables owned by a migrator role and grants the
//     application role SELECT and INSERT only. The application role's
//     UPDATE, DELETE, TRUNCATE, SELECT … FOR UPDATE and DDL are refused by
//     the server (tested), and so are temporary tables and any function
//     that writes rows. ENABLE ALWAYS triggers refuse UPDATE, DELETE and
//     TRUNCATE even for a superuser under session_replication_role =
//     replica. CHECK constraints bound every column it can write.
//   - Re-encryption ([Store.Rekey], auditlog.Reencrypt) runs as the
//     migrator role ([Config.Role]), from a command of its own, never from
//     the runtime: the application role cannot rewrite a row, and a
//     trigger lets the migrator change only a row's sealed payload and key
//     id.
//   - [Store.AddCheckpoint] keeps checkpoints in size order across
//     processes: under the append lock, one statement inserts the
//     checkpoint only when it is larger than the newest stored one (or of
//     its size and root). A replica whose view lags gets
//     auditlog.ErrStaleCheckpoint, which auditlog.Log skips silently, so
//     the stored checkpoints of replicas sharing the table never go back.
//   - A checkpoint row the application role inserts cannot stop the log
//     from starting: one that is not shaped as a signed checkpoint is
//     refused by the server (CHECK), and one signed by another key is
//     skipped by auditlog.New and reported by position by auditlog.Verify.
//     A forged one larger than the chain does hold back later checkpoints:
//     each then fails loudly (auditlog.ErrCheckpoint), never silently.
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
//	// after a data-key rotation, from an operator's command:
//	mig, err := pgstore.New(ctx, pgstore.Config{DSN: adminDSN, Schema: "audit", Role: "audit_migrator"})
//	n, err := auditlog.Reencrypt(ctx, mig, ring)
//
// # Security caveats
//
// The tables' owner and any superuser can disable the triggers and
// rewrite rows: only checkpoints signed with a key the database never sees
// and kept by a witness detect that ([auditlog.Verify]). Errors never
// include the DSN, which may hold a password.
package pgstore
