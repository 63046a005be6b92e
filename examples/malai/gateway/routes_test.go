package gateway

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/malai-sec/malai/examples/malai/internal/platform"
)

// testRoutes are public routes shaped like the services' tables: identity's
// JSON bodies of 4 KiB (some behind a user token), the ledger's user-token
// routes with 16 KiB bodies.
func testRoutes() []Route {
	const jsonType = "application/json"
	id := func(p string) Route {
		return Route{Pattern: p, Upstream: "identity", BodyLimit: 4 << 10, MediaTypes: []string{jsonType}}
	}
	bare := func(p string, tok platform.Token) Route { return Route{Pattern: p, Upstream: "identity", Token: tok} }
	user := func(p string) Route { r := id(p); r.Token = platform.UserToken; return r }
	ledger := func(p string, body bool) Route {
		rt := Route{Pattern: p, Upstream: "ledger", Token: platform.UserToken}
		if body {
			rt.BodyLimit, rt.MediaTypes = 16<<10, []string{jsonType}
		}
		return rt
	}
	return []Route{
		id("POST /v1/users"), id("POST /v1/sessions"), id("POST /v1/sessions/mfa"),
		bare("POST /v1/refresh", platform.NoToken), bare("POST /v1/refresh/revoke", platform.NoToken),
		bare("GET /v1/account", platform.UserToken), user("POST /v1/account/password"),
		bare("GET /v1/sessions", platform.UserToken), bare("POST /v1/sessions/{id}/revoke", platform.UserToken),
		user("POST /v1/mfa/totp"), user("POST /v1/mfa/totp/confirm"), user("POST /v1/mfa/totp/disable"), user("POST /v1/mfa/recovery-codes"),
		bare("GET /.well-known/jwks.json", platform.NoToken), bare("GET /.well-known/oauth-authorization-server", platform.NoToken),
		ledger("GET /v1/accounts", false),
		ledger("GET /v1/accounts/{id}", false),
		ledger("POST /v1/accounts", true),
		ledger("POST /v1/transfers", true),
		ledger("POST /v1/transfers/async", true),
		ledger("GET /v1/accounts/{id}/transfers", false),
		ledger("POST /v1/deposits", true),
		ledger("GET /v1/jobs/{id}", false),
		ledger("GET /v1/audit/verify", false),
	}
}

func TestRoutesFromTables(t *testing.T) {
	routes, err := RoutesFrom(map[string]platform.Table{
		"ledger": {
			{Pattern: "GET /v1/accounts", Token: platform.UserToken, Scope: "ledger:read", Public: true},
			{Pattern: "POST /internal/v1/transfers", Token: platform.ServiceToken, Callers: []string{"worker"}},
		},
		"web": {{Pattern: "POST /signin", Public: true, MaxBody: 4096, MediaTypes: []string{"application/x-www-form-urlencoded"}, PasswordFields: []string{"password"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []Route{
		{Pattern: "GET /v1/accounts", Upstream: "ledger", Token: platform.UserToken, Scope: "ledger:read"},
		{Pattern: "POST /signin", Upstream: "web", BodyLimit: 4096, MediaTypes: []string{"application/x-www-form-urlencoded"}, Web: true, PasswordFields: []string{"password"}},
	}
	if diff := cmp.Diff(want, routes); diff != "" {
		t.Fatalf("routes (-want +got):\n%s", diff)
	}
	if _, err := RoutesFrom(map[string]platform.Table{"ledger": {{Pattern: "GET /x", Token: platform.ServiceToken, Public: true}}}); err == nil {
		t.Fatal("a public service-token route was accepted")
	}
}
