// Package auditlog is an append-only, tamper-evident audit log. Every
// event is hash-chained to the one before it (prev_hash, for cheap
// replay) and is a leaf of an RFC 6962 Merkle tree (transparency-dev/merkle,
// for O(log n) inclusion and consistency proofs). The log signs C2SP
// tlog-checkpoint signed notes (Ed25519, golang.org/x/mod/sumdb/note) over
// its durable rows and hands each to a [Witness] kept out of the
// operator's reach.
//
// # Guarantees
//
//   - [Log.Append] and [Log.AppendBatch] return only after the events are
//     durable in the [Store]. Concurrent appends are group-committed: one
//     store call (one fsync in filestore, one transaction with one COPY in
//     pgstore) covers every event waiting, and the next group starts as
//     soon as the previous one is durable. The result is one linear chain,
//     also with several processes on one PostgreSQL table.
//   - [Log.AppendIf] appends only on top of the head its caller planned
//     against, and is never re-chained: a writer that keeps state folded
//     from the log (a ledger checking balances) reads the rows another
//     process appended with [Log.ReadFrom], plans again and retries, so
//     several processes on one PostgreSQL table stay consistent through
//     the database. [Log.ReadFrom] and [Log.Event] also read back the
//     outcome of an append that ended in an ambiguous error.
//   - The leaf hash covers the plaintext canonical encoding ([LeafHash]):
//     sealing payloads with a keyring.Ring, rotating the key and
//     re-encrypting old rows ([Log.Reencrypt]) never change a hash.
//     [SealedBy] counts the rows each key seals, so an operator knows when
//     an old key seals nothing left and may be retired.
//   - Checkpoints are issued only over durable rows: at most
//     Config.CheckpointInterval (default one second) apart while rows
//     arrive, and by [Log.Checkpoint] and [Log.Close]. Several keys may sign
//     (rotation). A store keeps them in issue order ([Store.AddCheckpoint]):
//     when several processes share one store, a process whose view lags
//     never stores a checkpoint smaller than another's; its attempt is
//     skipped, and a checkpoint of the same size with another root is an
//     error ([ErrFork]).
//   - [New] refuses a store whose rows contradict the newest checkpoint the
//     log signed, that holds fewer rows than its witness has seen, or that
//     lacks a checkpoint its witness holds (the log stores every checkpoint
//     before publishing it). Stored checkpoints the log did not sign
//     (malformed, forged, another key's) are skipped and reported through
//     Config.OnError, never fatal; [Verify] locates them. The log
//     recognises its own checkpoints by signing them again: its signers
//     must be deterministic, as Ed25519 note signers are.
//   - [Verify] works offline from an [Export] and public keys and reports,
//     by row position: modified, deleted (gap), reordered, duplicated and
//     forged rows, damaged bytes in a store's file ([Damage]), a truncated
//     tail, a rewritten history (root differs from a signed checkpoint,
//     localised between checkpoints), forks,
//     rollbacks, bad, unknown-key and wrong-origin signatures, a replayed
//     state that differs from the application's, and rows not yet anchored
//     by a checkpoint. See [FindingKind].
//   - [Replay] checks every row and folds the events, in order, into the
//     caller's state (a ledger's balances).
//   - [Log.Sample] exports recent rows with chosen fields redacted and
//     inclusion proofs to a signed checkpoint; [VerifySample] checks it.
//
// # Usage
//
//	st, err := filestore.Open(filepath.Join(dataDir, "audit")) // or pgstore.New, memstore.New
//	log, err := auditlog.New(auditlog.Config{
//		Store:   st,
//		Origin:  "ledger.example.com/audit",
//		Signers: []note.Signer{signer},  // note.NewSigner(skey)
//		Witness: witness,                // auditlog.NewWitness over a separate store
//		Ring:    ring,                   // keyring.NewRing: payloads sealed at rest
//	})
//	if err != nil { ... }
//	defer log.Close()
//	rcpt, err := log.Append(ctx, auditlog.Event{Type: "ledger.transfer",
//		Actor: subject, CorrelationID: requestID, Payload: body})
//
//	// state check
//	head, err := log.Replay(ctx, balances.Fold)
//
//	// offline verification (the reference binary's verify command)
//	exp, err := auditlog.ReadExport(file)
//	rep := auditlog.Verify(ctx, exp, auditlog.VerifyConfig{
//		Origin: origin, Verifiers: publicKeys, Trusted: witnessCheckpoints})
//	for _, f := range rep.Findings { fmt.Println(f) }
//
// # Key rotation
//
// Several keys may sign each checkpoint. A Log given Config.Signers signs
// with those keys until it is closed; one given Config.GetSigners asks
// for its signers every time it signs a checkpoint, so a key rotated in
// while it runs signs the next checkpoint, with no restart and nothing
// for appenders to notice. Return the new key and the previous one: a
// verifier or witness that has not learnt the new key yet keeps accepting
// the new checkpoints through the previous key. A [CheckpointWitness]
// built with WitnessConfig.GetVerifiers learns the new public keys the
// same way. Rotation never touches rows: checkpoints signed by retired
// keys stay in the store, [Verify] checks them with those keys'
// verifiers, and a Log still recognises a checkpoint signed by any key it
// has held (another replica of the same store may not have rotated yet).
//
// # Security caveats
//
// A hash chain alone detects nothing against someone who can rewrite the
// whole store: they recompute every hash. Only checkpoints signed with a
// key the store's operator does not hold, kept by a witness the operator
// cannot rewrite, detect a rewrite, a truncated tail or a fork. Keep the
// signing key away from the database, pass the witness's checkpoints to
// [Verify] as Trusted, and treat unanchored rows as unprotected.
//
// Encryption at rest covers the payload only: the event type, actor,
// correlation id, time and hashes stay in clear so the chain can be
// checked and searched without keys. Put personal or secret data in the
// payload, not in Actor.
//
// An export made with a key ring ([LoadExport]) holds plaintext payloads;
// handle it as the data it is. A sample's redacted rows prove only that
// their leaf hash is in the log, not the fields still shown.
//
// The Log keeps every Merkle node in memory (about 64 bytes per event)
// and reads the whole store at [New] (within Config.CommitTimeout): a log
// of 100 million events holds about 6.4 GB of tree in memory and replays
// every row at start. Tiled storage of the tree, which would lift that
// bound, is not part of this package: size a deployment below it.
//
// A [Log] is safe for concurrent use.
package auditlog
