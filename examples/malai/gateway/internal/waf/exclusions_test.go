package waf

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Every password sample passes on each credential route and field, while
// the same text in the username of that route, or in a ledger field, is
// still refused.
func TestCredentialFieldsAreNotAttacks(t *testing.T) {
	cfg := GatewayConfig()
	w := newSuiteWAF(t, cfg)
	h := w.Handler(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { rw.WriteHeader(http.StatusNoContent) }))
	post := func(path string, body map[string]string) int {
		b, _ := json.Marshal(body)
		r := httptest.NewRequest("POST", path, strings.NewReader(string(b)))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0")
		r.Header.Set("Accept", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Code
	}
	for _, route := range credentialRoutes {
		for _, field := range route.Fields {
			for _, pw := range passwordSamples {
				body := map[string]string{"username": "alice"}
				for _, f := range route.Fields {
					body[f] = "correct horse battery staple"
				}
				body[field] = pw
				if code := post(route.Path, body); code != http.StatusNoContent {
					t.Errorf("%s %s: password %q in %s refused with %d", route.Method, route.Path, pw, field, code)
				}
			}
		}
	}
	// The same text elsewhere meets the rules as before: wherever a
	// ledger field refuses it, the username of the same route does too.
	blockedInLedger := 0
	for _, pw := range passwordSamples {
		ledger := post("/v1/transfers", map[string]string{"from": "acc_1", "to": "acc_2", "memo": pw, "password": pw})
		user := post("/v1/sessions", map[string]string{"username": pw, "password": "correct horse battery staple"})
		if ledger == http.StatusForbidden {
			blockedInLedger++
			if user != http.StatusForbidden {
				t.Errorf("%q: refused in a ledger memo but not as a username (%d): the exclusion leaks", pw, user)
			}
		}
	}
	if blockedInLedger < len(passwordSamples)*3/4 {
		t.Fatalf("only %d of %d samples refused in a ledger field: the samples no longer exercise the rules", blockedInLedger, len(passwordSamples))
	}
	blockedInUsername := blockedInLedger
	t.Logf("%d samples: all pass as passwords; %d refused as usernames, %d in a ledger memo", len(passwordSamples), blockedInUsername, blockedInLedger)
}

func TestExclusionConfigErrors(t *testing.T) {
	for _, e := range []Exclusion{
		{Path: "/v1/sessions", Fields: []string{"password"}, Rules: []int{942100}},
		{Method: "POST", Path: "v1", Fields: []string{"password"}, Rules: []int{942100}},
		{Method: "POST", Path: "/v1/sessions", Fields: []string{"pass word"}, Rules: []int{942100}},
		{Method: "POST", Path: "/v1/sessions", Fields: []string{"password"}},
	} {
		if _, err := New(Config{Exclusions: []Exclusion{e}}); err == nil {
			t.Errorf("exclusion %+v accepted", e)
		}
	}
}
