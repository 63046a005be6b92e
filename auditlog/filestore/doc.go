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
//   - A crash can only cut the last append short. An incomplete final
//     frame (it runs past the end of the file and no valid frame starts
//     after it) is detected at [Open] and cut; the bytes are kept in a side
//     file ([Store.TornFile]) rather than discarded. Nothing acknowledged
//     is lost: acknowledged frames were fsynced before the
//     acknowledgement.
//   - Anything else that is not a valid frame is corruption, never a torn
//     tail: a checksum mismatch anywhere, a bad frame followed by valid
//     data, a malformed row. [Open] refuses the file with a
//     [*CorruptError] naming the byte offset and the rows before it, and
//     changes nothing.
//   - [OpenReadOnly] never writes (no file created, no tail cut, a shared
//     lock): it skips damaged stretches, reads the rows after them and
//     reports each stretch through [Store.Damage], so auditlog.LoadExport
//     and auditlog.Verify locate it. Offline verification uses it.
//   - One process at a time: Open takes an exclusive lock on dir/LOCK,
//     held until [Store.Close], and a second Open (in any process, this
//     one included) fails with [ErrLocked] rather than waiting;
//     [OpenReadOnly] takes a shared lock, so readers share the store with
//     each other but not with a writer. On Unix the lock is flock(2),
//     which is advisory: it binds only processes that take it. On
//     Windows it is LockFileEx, which the system enforces (mandatory) but
//     only on the bytes of dir/LOCK, which holds no data; the log file
//     itself is not locked on either. The system releases the lock
//     however the process ends.
//   - Rows are never rewritten in place. [Store.Rekey] (re-encryption)
//     writes a new file beside the old one, fsyncs it and renames it over.
//   - Windows cannot fsync a directory: there a new log file's directory
//     entry and a Rekey's rename are as durable as NTFS's metadata
//     journal makes them (never torn, possibly undone by a crash soon
//     after). Appends are fsynced the same on every system.
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
// catches torn writes and damage, not attackers. Tampering is detected by
// [auditlog.Verify] against checkpoints kept by a witness elsewhere, and
// rows past the newest witnessed checkpoint can be removed without a
// trace: nothing signed covers them yet. A refused file is for the
// operator to examine (verify it read-only) and restore from a backup;
// the store never repairs it on its own. Payloads are sealed by the Log
// when it has a key ring; the store never sees keys.
//
// The torn-tail rule relies on a file system that never shows appended
// bytes it did not write (ext4's default data=ordered, XFS, btrfs): a
// tail of zeros after a crash is refused as corruption, not cut.
package filestore
