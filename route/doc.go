// Package route tells Malai's middleware which route a request matched,
// whatever router serves it.
//
// Authorisation objects (rbac), idempotency record scopes, per-route rate
// limits and the route label of logs, spans and metrics all need the
// matched route pattern ("/accounts/{id}"), never the raw path: a raw path
// is attacker-chosen and unbounded. [Pattern] is the one place every
// Malai package reads it from:
//
//  1. the pattern a [Resolver] found before routing ([Handler] stores it
//     with [NewContext]);
//  2. else [http.Request.Pattern], which [http.ServeMux] sets on the
//     request it hands to the matched handler;
//  3. else "": the request is unrouted ([Unrouted] in labels).
//
// # Which to use
//
// Middleware wrapped around each route inside an [http.ServeMux]
// (mux.Handle("POST /transfers", authz.Handler(h))) needs nothing: the mux
// has set r.Pattern. Middleware in front of the router — a chi router's
// Use, or one handler wrapping a whole mux — runs before the router has
// matched, so put [Handler] with the router's resolver first:
//
//	mux := http.NewServeMux()
//	mux.Handle("GET /accounts/{id}", accounts)
//	h := route.Handler(route.ServeMux(mux))(authz.Handler(mux))
//
// A layer outside the router that reports after the fact (correlation's
// access log and metrics) learns the route from [Record], which [Handler]
// and [RecordPattern] call, through a [RecorderContext] it installed.
//
// # chi
//
// chi runs Use middleware before it routes, and its inline middleware
// (With, Group) after. One resolver serves both, put first with Use:
//
//	r := chi.NewRouter()
//	r.Use(route.Handler(func(req *http.Request) string {
//		path := req.URL.RawPath // chi routes on RawPath when it is set
//		if path == "" {
//			path = req.URL.Path
//		}
//		return r.Find(chi.NewRouteContext(), req.Method, path)
//	}))
//	r.Use(authz.Handler)                    // sees "/accounts/{id}"
//	r.Get("/accounts/{id}", accounts)
//	r.With(limiter.Handler).Post("/transfers", transfers)
//
// # gorilla/mux
//
// gorilla/mux runs Use middleware after it has matched, so the current
// route is known there:
//
//	r := mux.NewRouter()
//	r.Use(route.Handler(func(req *http.Request) string {
//		if cur := mux.CurrentRoute(req); cur != nil {
//			if t, err := cur.GetPathTemplate(); err == nil {
//				return t
//			}
//		}
//		return ""
//	}))
//	r.Use(authz.Handler)
//
// Both recipes are tested, with Use, Group, With and subrouters, in the
// repository's internal/interop module.
//
// # Security caveats
//
// A resolver must decide exactly as the router does: if they disagree on
// which route a request takes (a different path field, path cleaning,
// method handling), an authorisation decided for one route lets the
// request reach another. Resolve with the router's own lookup, as the
// recipes do, never with a regular expression of your own.
package route
