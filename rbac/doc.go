// Package rbac enforces a Casbin role-based access-control policy at the
// API: every request is authorised on (subject, [domain,] route pattern,
// method) before its handler runs, and anything not explicitly allowed is
// refused.
//
// # Guarantees
//
//   - Deny by default. A request reaches its handler only when a policy
//     line allows it. No subject → 401; no matched route pattern, no
//     domain (when configured) or no policy line → 403; an enforcer error
//     → 503 (fail closed). Refusals are application/problem+json with a
//     generic detail: a client cannot tell an unknown route from a denied
//     one, and nothing of the policy is revealed.
//   - Objects are route patterns ("/accounts/{id}"), not raw paths, and
//     the embedded models ([RBAC], [RBACWithDomains]) match them exactly,
//     so the decision cache is keyed by a bounded set and holds at most
//     [Config].CacheSize decisions.
//   - [Middleware.Reload] reloads the policy without dropping requests and
//     replaces the decision cache atomically: a request that starts after
//     Reload returns is decided on the new policy. A policy that fails to
//     load leaves the old one in force.
//   - Every decision, allowed or refused, can be observed through
//     [Config].OnDecision as a plain [Decision] carrying the policy line
//     that matched, ready for an audit log.
//   - Roles are granted to users and to services alike; roles inherit from
//     roles, with and without domains.
//
// # Usage
//
// The subject comes from the verified token; this package does not verify
// tokens, the caller wires its JWT verifier's claims in:
//
//	enf, err := rbac.NewFileEnforcer(rbac.RBAC, "policy.csv")
//	if err != nil { ... }
//	authz, err := rbac.New(rbac.Config{
//		Enforcer: enf,
//		Subject: func(r *http.Request) (string, bool) {
//			c, ok := jwtverify.FromContext(r.Context())
//			if !ok {
//				return "", false
//			}
//			if c.Class() == jwtverify.ClassService {
//				return rbac.ServiceSubject(c.ClientID()), true
//			}
//			return rbac.UserSubject(c.Subject()), true
//		},
//		OnDecision: func(r *http.Request, d rbac.Decision) { audit(r, d) },
//	})
//	if err != nil { ... }
//	mux.Handle("GET /accounts/{id}", authz.Handler(getAccount))
//	mux.Handle("POST /transfers", authz.Handler(createTransfer))
//
// with policy.csv:
//
//	p, role:viewer, /accounts/{id}, GET
//	p, role:teller, /transfers, POST
//	g, role:teller, role:viewer
//	g, user:alice, role:teller
//	g, service:worker, role:teller
//
// # Reloading
//
// The reference service reloads the policy file on SIGHUP:
//
//	hup := make(chan os.Signal, 1)
//	signal.Notify(hup, syscall.SIGHUP)
//	go func() {
//		for range hup {
//			if err := authz.Reload(); err != nil {
//				// The previous policy stays in force.
//				logger.Error("policy reload failed", "err", err)
//			}
//		}
//	}()
//
// # Where the middleware runs
//
// The object is the route pattern the request matched, read with
// [route.Pattern]: [http.Request.Pattern] inside an [http.ServeMux], or
// the pattern a resolver found before routing. Wrapped around each
// route's handler inside a ServeMux, as above, the middleware needs
// nothing more. In front of a router (a chi router's Use, one handler
// around a whole mux), put [route.Handler] with the router's own lookup
// first:
//
//	h := route.Handler(route.ServeMux(mux))(authz.Handler(mux))
//
// Package route documents the chi and gorilla/mux resolvers; both are
// tested with this middleware. [MuxObject](mux) is the same lookup for a
// ServeMux as an Object function. A request that matches no route has no
// object and is refused (403, [ReasonNoRoute]), which is the safe failure.
// A request a ServeMux answers with a redirect (an unclean path, a
// missing trailing slash) is authorised as the route the redirect leads
// to, and the redirected request is authorised again.
//
// # Decision cache
//
// Decisions are cached in the middleware, keyed by the four values
// compared field by field (no joined string that a crafted subject could
// alias), in two generations of at most [Config].CacheSize entries in all;
// entries in use survive, idle ones age out. Casbin's
// SyncedCachedEnforcer is not used because its cache is unbounded and
// keeps no matched policy line. A hit costs a read lock and a map lookup,
// and no allocation. Fields longer than 256 bytes are decided but never
// cached, and cached keys are copies, so an entry pins no request memory.
// Errors are never cached.
//
// # Security caveats
//
//   - Subjects and roles share one namespace in Casbin: a user whose id
//     equals a role name holds that role. Build subjects with
//     [UserSubject] and [ServiceSubject] ("user:…", "service:…") and name
//     roles "role:…".
//   - Cached decisions outlive policy changes made through the enforcer's
//     management API until [Middleware.InvalidateCache] or
//     [Middleware.Reload] is called.
//   - Reload needs an enforcer safe for concurrent LoadPolicy and Enforce:
//     the *casbin.SyncedEnforcer from [NewEnforcer] and [NewFileEnforcer].
//     Reload refuses the unsynchronised *casbin.Enforcer.
//   - The default Action is the method as sent: HEAD requests need their
//     own policy lines.
//   - The subject must come from a verified credential; this package
//     trusts whatever Subject returns.
package rbac
