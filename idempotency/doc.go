// Package idempotency makes a write happen once per key, whether the
// request is retried by a client, redelivered by a queue or re-run by a
// worker after back-pressure.
//
// One transport-neutral call, [Runner.Do], claims a key, runs the
// operation, and stores its [Result] for replay. The HTTP [Middleware] is
// built on it and implements the IETF draft "The Idempotency-Key HTTP
// Header Field"; queue consumers and workers call Do directly. Records live
// in a [Store]: memstore for one process, redisstore for many, both
// checked by the storetest suite.
//
// # Guarantees
//
//   - At most one execution per record key while a record is live. A claim
//     is atomic in the store: of 100 concurrent identical requests exactly
//     one runs; the others receive the stored result or a 409.
//   - A claim is a renewable lease separate from retention. The middleware
//     and Do renew it in the background (RunnerConfig.Heartbeat); a worker
//     waiting under back-pressure can also call [Lease.Extend]. A holder
//     that crashes stops renewing, and after Lease a retry takes the key
//     over with the next fencing token ([Lease.Token]); the old holder's
//     late completion is rejected with [ErrLeaseLost], so it cannot
//     overwrite its successor's result. The background renewal stops
//     HeartbeatLimit after the claim (10 × Lease by default), so a hung
//     process cannot keep a key in flight for ever.
//   - An operation that reports [ErrOutcomeUnknown] (its effect may have
//     happened; the caller could not yet find out) keeps its claim in
//     flight until the lease ends: no retry runs it again meanwhile.
//   - The result is stored before the response is sent. 2xx, 3xx and 4xx
//     responses are stored; on 5xx, an error or a panic the claim is
//     released so a retry runs again. A response over MaxResultBytes is
//     sent once and recorded as completed-but-not-replayable: a retry gets
//     409 ([ErrNotReplayable]), never a second side effect.
//   - Completed records are kept for Retention (24 h by default), decided
//     against the injected clock (Now) from timestamps inside the record.
//   - A store failure fails closed: 503 with Retry-After, the handler does
//     not run (FailOpen loosens this). Finishing a claim is retried across
//     a short store blip; if the result still cannot be stored (or the
//     lease was lost to a takeover) the client receives the handler's
//     response anyway, the failure is logged and reported to OnStoreError,
//     and the record stays in flight until its lease ends.
//
// # HTTP
//
// A guarded request (POST and PATCH by default) must carry
// Idempotency-Key as a structured-field string of 1 to 255 characters
// ([ParseKey]); with Config.BareKeys a bare value, as most clients send
// it, is accepted too ([ParseBareKey]). The record key is [RecordKey] of
// the verified caller (Config.Principal, for example the JWT subject), the
// method, the route pattern ([route.Pattern]: r.Pattern inside a ServeMux,
// or the pattern route.Handler resolved in front of any router) and the
// key, so callers and routes never share records. The fingerprint is the SHA-256 of the request body (optionally
// canonicalised, [CanonicalJSON]) and any Config.FingerprintHeaders.
//
// Answers, all application/problem+json (slugs in docs/problems.md):
//
//	no key                          400 idempotency-key-missing
//	malformed key                   400 idempotency-key-invalid
//	no verified caller              401 idempotency-unauthenticated
//	body over MaxBodyBytes          413 idempotency-body-too-large
//	body read error                 400 idempotency-body-unreadable
//	same key, other payload         422 idempotency-key-reused
//	first request still running     409 idempotency-in-flight + Retry-After
//	completed, too large to replay  409 idempotency-not-replayable
//	store unavailable               503 service-unavailable + Retry-After
//	outcome unknown (ErrOutcomeUnknown) 503 service-unavailable + Retry-After
//
// Retry-After and Connection: close are set before Config.ErrorHandler
// runs, so a custom handler keeps them; [DefaultErrorHandler] writes the
// table above. [Runner.Stats] counts claims, replays, conflicts, reused
// keys and store failures for metrics.
//
// A replay returns the original status, the allow-listed headers
// (Config.ReplayHeaders; never Set-Cookie by default) and body, with
// Idempotent-Replayed: true.
//
// Wire it per route, behind authentication:
//
//	store, err := redisstore.New(redisstore.Config{Client: rdb, Prefix: "ledger:idem:"})
//	...
//	idem, err := idempotency.New(idempotency.Config{
//		Store:     store,
//		Principal: subjectFromVerifiedJWT, // func(*http.Request) (string, bool)
//	})
//	...
//	mux.Handle("POST /transfers", auth.Handler(idem.Handler(transfers)))
//
// # Queues and workers
//
// A worker that must meet the same record as an HTTP retry derives the
// key the middleware used and fingerprints the same body:
//
//	key := idempotency.RecordKey(msg.Subject, "POST", "POST /transfers", msg.Key)
//	res, replayed, err := runner.Do(ctx, key, idempotency.Fingerprint(msg.Body, nil), transfer)
//
// [ErrInFlight] means "redeliver later"; [ErrKeyReused] and
// [ErrNotReplayable] mean "acknowledge, do not run". An endpoint that runs
// Do itself answers with [Middleware.WriteError] and [WriteResult], so its
// responses match the guarded route's.
//
// # Security caveats
//
//   - Keys are hashed (SHA-256 of the record key) before they reach a store
//     or a log; problem responses never echo them.
//   - Scoping by caller is only as good as Config.Principal: it must read a
//     verified identity, never a client-chosen header. AllowAnonymous makes
//     every caller share one key space.
//   - Leases are fenced in the store, but a holder that stalls past its
//     lease still runs its side effect. Pass [Lease.Token] to the system
//     that applies it (a ledger row, a downstream API) and reject lower
//     tokens there to make the late write harmless.
//   - The middleware buffers the response (up to MaxResultBytes) and the
//     request body (up to MaxBodyBytes); Flush is deferred and Hijack is not
//     supported on guarded routes. The handler reads the body from a pooled
//     buffer: as net/http already requires, it must not touch r.Body after
//     it returns.
//   - memstore gives no guarantee across replicas.
package idempotency
