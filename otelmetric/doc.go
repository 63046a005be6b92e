// Package otelmetric turns the hooks and counters of Malai's packages into
// OpenTelemetry instruments, through the OpenTelemetry metric API only
// (bring your own SDK and exporter).
//
// The packages themselves stay free of OpenTelemetry: each one exposes a
// hook or a counter snapshot, and this adapter, a module of its own, maps
// them to instruments. A service that does not use OpenTelemetry never has
// it in its module graph.
//
//	m, err := otelmetric.New(meterProvider)
//	if err != nil { ... }
//	verifier, err := jwtverify.New(jwtverify.Config{
//		Issuers:   issuers,
//		Observe:   m.Verifications(),    // malai.jwtverify.verifications
//		OnRefresh: m.KeySetRefreshes(),  // malai.jwtverify.jwks.refreshes, .age, .keys
//	})
//	authz, err := rbac.New(rbac.Config{ ..., OnDecision: m.Decisions(audit) })
//	log, err := auditlog.New(auditlog.Config{ ..., OnCommit: m.Commits() })
//	reg1, err := m.Limiter("edge", limiter)  // malai.ratelimit.*
//	reg2, err := m.Runner("ledger", runner)  // malai.idempotency.*
//	defer reg1.Unregister()
//
// # Instruments
//
//	malai.jwtverify.verifications      counter  outcome, reason, cached
//	malai.jwtverify.jwks.refreshes     counter  issuer, trigger, outcome
//	malai.jwtverify.jwks.age           gauge    issuer (s since the last good fetch)
//	malai.jwtverify.jwks.keys          gauge    issuer
//	malai.ratelimit.requests           counter  limiter, outcome (allowed, limited, denied, exempt, bad_client_address)
//	malai.ratelimit.store.errors       counter  limiter, outcome (failed_open, failed_local, failed_closed)
//	malai.idempotency.operations       counter  runner, outcome (claimed, replayed, in_flight, reused, not_replayable)
//	malai.idempotency.releases         counter  runner
//	malai.idempotency.store.errors     counter  runner
//	malai.idempotency.leases.lost      counter  runner
//	malai.rbac.decisions               counter  outcome (allowed, denied), reason, cached
//	malai.auditlog.events              counter  outcome (committed, failed)
//	malai.auditlog.commit.size         histogram {event}
//	malai.auditlog.commit.duration     histogram s (the store's fsync or transaction)
//
// Every attribute value comes from a bounded set (reason codes, configured
// issuer and component names), never from a request. Recording a
// verification or a decision allocates nothing once its attribute set has
// been seen.
package otelmetric
