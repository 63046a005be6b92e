// Package ledger is the ledger domain of the Malai reference system:
// accounts, deposits and transfers, synchronous and asynchronous, whose
// system of record is the audit chain.
//
// Each request is verified again here (the second JWT layer: signature,
// expiry, audience, issuer, token class) and authorised by Casbin RBAC on
// the route pattern. Every write carries an Idempotency-Key (opening an
// account may omit it: an account id is its own key).
//
// # Guarantees
//
// In every mode (file or PostgreSQL chain, memory or Redis idempotency
// store, one ledger or several on one PostgreSQL table):
//
//   - One Idempotency-Key, per principal and route, has at most one effect
//     within the retention window (24 h): across retries, restarts, store
//     outages, lost replies, the synchronous, asynchronous and worker paths
//     (which share the transfer route's key scope) and replicas.
//   - The live balances always equal a replay of the chain, and the ledger
//     restarts from the chain after any crash, cancellation or outage.
//   - A client whose outcome was unknown (a timeout, a 5xx) learns the
//     first outcome by retrying with the same key and body, whether the
//     idempotency store still has the record or not.
//   - Money enters only through a teller's deposit; accounts open at zero.
//
// # How
//
// The chain is the system of record for money and for keys. Every event a
// keyed request causes records the principal, the hashed record key, the
// fingerprint of the canonical request and the response the client got
// (see book.Op); refusals that depend on the state (insufficient funds, a
// missing or foreign account) are recorded too, so a retry meets the same
// refusal. Replaying the chain therefore rebuilds the balances, the keys
// completed inside the window and the asynchronous jobs.
//
// One sequencer goroutine is the only writer. It takes every waiting
// request as a batch, plans them in order against the folded state (a plan
// sees the requests before it), and appends the batch's events in one
// [auditlog.Log.AppendIf] conditional on the head its state reflects:
// concurrent transfers share one group commit (one fsync, one PostgreSQL
// transaction) and no lock is held across the append. When another
// replica appended first the append is refused, the sequencer reads the
// new rows and plans again, so replicas agree through the database, never
// through process memory. When an append fails ambiguously (a lost COMMIT
// acknowledgement, a timeout, the store going down) nobody is answered and
// nothing is planned until the chain has been read back.
//
// The idempotency store (memory or Redis) is the fast path and the
// in-flight lease: a replay is answered from it without touching the
// sequencer, and a concurrent duplicate gets 409. It is not the only
// memory of a key: every claimed key is checked against the chain's key
// index, so a record lost with a restart (the in-memory default), a
// flushed Redis or an eviction replays from the chain. For the same
// reason a store that is down or full does not stop writes: they run
// without a lease and the chain deduplicates them.
//
// Requests wait for the sequencer detached from the client's context: a
// client that goes away never abandons an append, and the response is
// recorded (never an empty 200) for its retry.
//
// This differs from the usual shape (a mutex around plan, append and
// apply, and the idempotency store as the record of outcomes) because
// both halves of that shape fail under faults: a mutex held across the
// durable append serialises every fsync, and an outcome kept only in the
// store is lost with the store.
//
// # Asynchronous transfers
//
// POST /v1/transfers/async checks the body and the key like the
// synchronous route and answers 202 with Location: /v1/jobs/{id} once the
// job's acceptance is in the chain; a key used on either route with
// another body is refused with 422 at that moment. The queue carries only
// the job's id and a MAC under the JobKeys ring (its key id inside, so
// jobs survive restarts and rotations); the job itself is in the chain, so
// a queue writer can neither alter nor invent one. The worker hands the
// message back on POST /internal/v1/transfers (service tokens only); the
// job runs at most once however often it is delivered. GET /v1/jobs/{id}
// (owner only) answers queued, running, succeeded or failed, with the
// original result or problem once finished. Pending jobs are bounded
// (Config.MaxPendingJobs, then 503 with Retry-After), expire after
// Config.JobTTL (failed with 410), and are republished from the chain when
// a queue lost them (the in-memory queue at a restart).
//
// # Data-key rotation
//
// The chain's payloads are sealed under the process's data-key ring. When
// a rotation ("malai rotate-keys", -rotate-keys-every) reaches the ring
// through the key-file watch and the new key starts sealing, [Start]'s
// component re-encrypts the rows sealed under older keys in the
// background on the file store (auditlog.Reencrypt in batches, pausing
// between them as long as each batch held the store, so appends keep
// flowing; no hash or checkpoint changes, since they cover the
// plaintext). It also does so at every start, so a pass cut short by a
// crash resumes. It logs the rows and the time it took. With PostgreSQL
// the ledger's role may not rewrite rows: it logs, once per new key, how
// many rows "malai audit-rekey" (run as the migrator) has to re-encrypt.
// GET /v1/audit/verify reports the rows under each key ([VerifyReport]
// SealedBy).
//
// # Strict bodies
//
// Every body (and every queued job) is decoded by strictjson: duplicate
// and case-variant member names at any depth, unknown members, invalid
// UTF-8 and trailing data are refused with 400 before anything is
// fingerprinted, checked or queued, so the value checked is the value
// executed.
//
// # Sizing
//
// The key index keeps about 120 bytes per key completed in the window
// (the response itself is read back from the chain); jobs keep their
// request and outcome until the window passes; each account keeps its
// last 100 movements for listing. The audit log itself keeps about 64
// bytes per row in memory (its Merkle tree).
//
// The default idempotency store (memory) is capped at
// memstore.DefaultMaxBytes (64 MiB, about 95,000 transfer records) and
// evicts the completed records that expire soonest when full
// (memstore.Config.EvictCompleted): a key whose record was evicted replays
// from the chain, so a full store costs a chain lookup, never a 503 or a
// second effect. In-flight claims are never evicted; only 64 MiB of
// concurrent in-flight requests could fill it, and then writes run
// without a lease, deduplicated by the chain.
//
// # Security caveats
//
// The ledger trusts its chain store: a writer that can append rows to the
// chain (the database's application role) can add events the fold
// accepts. The chain's signed checkpoints and the witness detect a
// rewrite, not an append by someone holding the app role.
package ledger
