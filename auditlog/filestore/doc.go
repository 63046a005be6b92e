// Package filestore is the embedded, append-only file [auditlog.Store]:
// one file under a data directory, each row and checkpoint a
// length-prefixed frame with a CRC-32C.
//
// # Guarantees
//
//   - Append writes a whole batch with one write and one fsync and returns
//     only after the fsync; with [auditlog.Log]'s group commit one fsync
//     covers every event waiting, and the next batch starts as soon as
//     the previous fsync ends.
//   - A frame cut short by a crash (an append that never returned) is
//     detected at [Open] and cut; the bytes are kept in a side file
//     ([Store.TornFile]) rather than discarded. Nothing acknowledged is
//     lost: acknowledged frames were fsynced before the acknowledgement.
//   - One process at a time: Open takes an exclusive flock on dir/LOCK.
//   - Rows are never rewritten in place. [Store.Rekey] (re-encryption)
//     writes a new file beside the old one, fsyncs it and renames it over.
//
// # Usage
//
//	st, err := filestore.Open(filepath.Join(dataDir, "audit"))
//	if err != nil { ... }
//	defer st.Close()
//	log, err := auditlog.New(auditlog.Config{Store: st, ...})
//
// # Security caveats
//
// Anyone who can write the file can rewrite it, CRCs included: the CRC
// catches torn writes, not attackers. Tampering is detected by
// [auditlog.Verify] against checkpoints kept by a witness elsewhere. A
// corrupt frame in the middle of the file is treated like a torn tail:
// everything from it on is moved to the side file and the verifier then
// reports the missing rows as truncated against the newest checkpoint.
// Payloads are sealed by the Log when it has a key ring; the store never
// sees keys.
package filestore
