package ledger

import (
	"encoding/csv"
	"slices"
	"strings"
	"testing"
)

// TestPolicyMatchesRouteTable checks the Casbin policy against the route
// table: every policy line names a route the ledger serves with that
// method and a token (so a verified subject exists), and every
// token-bearing route is granted to some role (a route nobody may call is
// a route someone forgot).
func TestPolicyMatchesRouteTable(t *testing.T) {
	b, err := defaultPolicy.ReadFile("policy.csv")
	if err != nil {
		t.Fatal(err)
	}
	r := csv.NewReader(strings.NewReader(string(b)))
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	lines, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	routes := Routes()
	if err := routes.Validate(false); err != nil {
		t.Fatal(err)
	}
	granted := map[string]bool{}
	for _, l := range lines {
		if len(l) == 0 || l[0] != "p" {
			continue
		}
		if len(l) != 4 {
			t.Errorf("policy line %v: want p, role, object, action", l)
			continue
		}
		pattern := l[3] + " " + l[2]
		rt, ok := routes.Lookup(pattern)
		if !ok {
			t.Errorf("policy grants %q, which the ledger does not serve", pattern)
			continue
		}
		if rt.Token == 0 {
			t.Errorf("policy grants %q, which takes no token: no subject to authorise", pattern)
		}
		granted[pattern] = true
	}
	for _, rt := range routes {
		if rt.Token != 0 && !granted[rt.Pattern] {
			t.Errorf("route %q is granted to no role", rt.Pattern)
		}
	}
	// The service routes are reachable only by the components the table
	// names; a public service route would be a gateway bypass.
	for _, rt := range routes {
		if strings.HasPrefix(rt.Path(), "/internal/") && (rt.Public || slices.Contains(rt.Callers, "gateway")) {
			t.Errorf("internal route %q is reachable through the gateway", rt.Pattern)
		}
	}
}
