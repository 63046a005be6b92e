// Package auditlog is an append-only, tamper-evident audit log: every
// event is hash-chained to the one before it (prev_hash, for cheap replay)
// and is a leaf of an RFC 6962 Merkle tree (for O(log n) inclusion and
// consistency proofs), and the log signs C2SP checkpoints (signed notes,
// Ed25519) over its durable rows and hands them to a [Witness] kept out of
// the operator's reach.
//
// # Guarantees
//
//   - [Log.Append] returns only after the event is durable in the [Store];
//     concurrent appends are group-committed (one fsync or one PostgreSQL
//     transaction covers every event waiting) into one linear chain.
//   - The leaf hash covers the plaintext canonical encoding (see
//     [LeafHash]), so payload encryption and key rotation never change a
//     hash.
//   - Checkpoints are issued only over durable rows, at most
//     Config.CheckpointInterval apart while rows arrive, and by
//     [Log.Checkpoint] and [Log.Close].
//   - [Verify] works offline from an [Export] and public keys and locates
//     every kind of tampering by position: see [FindingKind].
//   - [Replay] folds events into application state (a ledger's balances)
//     after checking every row.
//
// # Usage
//
//	ring, _ := seal.NewRing("k1", keys)           // internal/seal
//	signer, _ := note.NewSigner(skey)             // golang.org/x/mod/sumdb/note
//	l, err := auditlog.New(auditlog.Config{
//		Store:   filestore.Open(dir),             // or pgstore, memstore
//		Origin:  "ledger.example.com/audit",
//		Signers: []note.Signer{signer},
//		Witness: witness,
//		Ring:    ring,
//	})
//	rcpt, err := l.Append(ctx, auditlog.Event{Type: "ledger.transfer",
//		Actor: sub, CorrelationID: reqid, Payload: body})
//
// # Security caveats
//
// A hash chain alone detects nothing against someone who can rewrite the
// whole store: they recompute every hash. Only checkpoints signed with a
// key the operator does not hold, kept by a witness the operator cannot
// rewrite, detect a rewrite, a truncated tail or a fork; rows past the
// newest checkpoint are reported as unanchored. Keep the signing key out of
// the database's reach and publish checkpoints.
//
// The Log keeps every Merkle node in memory (about 64 bytes per event) and
// reads the whole store at [New]; tiles for very large logs are not
// implemented.
package auditlog
