package ledger

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/malai-sec/malai/examples/malai/internal/queue"
	"github.com/malai-sec/malai/examples/malai/ledger/internal/book"
	"github.com/malai-sec/malai/jwtverify/jwttest"
)

// Accounts open at zero; only a teller's deposit puts money in, and
// every unit is in the chain.
func TestAccountsOpenAtZeroAndDepositsFundThem(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice")
	r := e.do("POST", "/v1/accounts", alice, `{"id":"acc-alice"}`, "")
	var a book.Account
	r.json(t, &a)
	if r.code != 201 || a.Balance != 0 || a.Owner != "user:alice" {
		t.Fatalf("open: %s", r)
	}
	// Opening is idempotent for its owner, refused for anyone else.
	if r := e.do("POST", "/v1/accounts", alice, `{"id":"acc-alice"}`, ""); r.code != 200 {
		t.Fatalf("re-open by the owner: %s", r)
	}
	if r := e.do("POST", "/v1/accounts", e.user("mallory"), `{"id":"acc-alice"}`, ""); r.code != 409 {
		t.Fatalf("open someone else's id: %s", r)
	}
	// A customer cannot deposit.
	if r := e.do("POST", "/v1/deposits", alice, `{"account":"acc-alice","amount":500}`, "d1"); r.code != http.StatusForbidden {
		t.Fatalf("customer deposit: %s", r)
	}
	// A deposit needs a key.
	if r := e.do("POST", "/v1/deposits", e.teller(), `{"account":"acc-alice","amount":500}`, ""); r.code != 400 {
		t.Fatalf("deposit without key: %s", r)
	}
	if r := e.do("POST", "/v1/deposits", e.teller(), `{"account":"acc-alice","amount":500}`, "d1"); r.code != 201 {
		t.Fatalf("teller deposit: %s", r)
	}
	if r := e.do("POST", "/v1/deposits", e.teller(), `{"account":"acc-alice","amount":500}`, "d1"); r.code != 201 || !r.replayed() {
		t.Fatalf("deposit retry: %s replayed=%v", r, r.replayed())
	}
	if r := e.do("POST", "/v1/deposits", e.teller(), `{"account":"acc-nobody","amount":500}`, "d2"); r.code != 404 {
		t.Fatalf("deposit into a missing account: %s", r)
	}
	if got := e.svc().Balances()["acc-alice"]; got != 500 {
		t.Fatalf("balance %d after one deposit replayed", got)
	}
	// A customer may not open accounts without bound.
	for i := 1; i < book.MaxAccountsPerOwner; i++ {
		e.open(alice, fmt.Sprintf("acc-alice-%d", i))
	}
	if r := e.do("POST", "/v1/accounts", alice, `{"id":"acc-alice-more"}`, ""); r.code != 409 {
		t.Fatalf("account %d: %s", book.MaxAccountsPerOwner+1, r)
	}
	e.checkChain()
}

func TestTransferReplayAndReuse(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice"), e.user("bob")
	e.open(alice, "acc-a")
	e.open(bob, "acc-b")
	e.fund("acc-a", 1000)
	body := transferBody("acc-a", "acc-b", 300)
	first := e.do("POST", "/v1/transfers", alice, body, "t1")
	if first.code != 201 {
		t.Fatalf("transfer: %s", first)
	}
	again := e.do("POST", "/v1/transfers", alice, body, "t1")
	if again.code != 201 || !again.replayed() || string(again.body) != string(first.body) {
		t.Fatalf("replay: %s (first %s)", again, first)
	}
	// Same key, other body: refused, nothing moves.
	if r := e.do("POST", "/v1/transfers", alice, transferBody("acc-a", "acc-b", 301), "t1"); r.code != 422 {
		t.Fatalf("reused key: %s", r)
	}
	// The same key is bob's own.
	if r := e.do("POST", "/v1/transfers", bob, transferBody("acc-b", "acc-a", 1), "t1"); r.code != 201 || r.replayed() {
		t.Fatalf("another principal's key space: %s", r)
	}
	// Bob cannot move alice's money; the answer looks like a missing account.
	if r := e.do("POST", "/v1/transfers", bob, transferBody("acc-a", "acc-b", 1), "t2"); r.code != 404 {
		t.Fatalf("foreign source: %s", r)
	}
	// Insufficient funds is an outcome too: its retry replays it even
	// after the account is funded.
	if r := e.do("POST", "/v1/transfers", alice, transferBody("acc-a", "acc-b", 5000), "t3"); r.code != 422 {
		t.Fatalf("overdraft: %s", r)
	}
	e.fund("acc-a", 10000)
	if r := e.do("POST", "/v1/transfers", alice, transferBody("acc-a", "acc-b", 5000), "t3"); r.code != 422 || !r.replayed() {
		t.Fatalf("overdraft retry after funding: %s", r)
	}
	bal := e.svc().Balances()
	if bal["acc-a"] != 11000-300+1 || bal["acc-b"] != 300-1 {
		t.Fatalf("balances %v", bal)
	}
	e.checkChain()
}

// Duplicate and case-variant members are refused with 400 on every write
// before anything is fingerprinted, claimed or queued: the key stays
// unused and the chain unchanged.
func TestStrictBodies(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice")
	e.open(alice, "acc-a")
	e.open(e.user("bob"), "acc-b")
	e.fund("acc-a", 5000)
	before := e.facts().size
	bad := []string{
		`{"from":"acc-a","to":"acc-b","amount":1000,"AMOUNT":3}`,
		`{"from":"acc-a","to":"acc-b","amount":3,"amount":1000}`,
		`{"from":"acc-a","to":"acc-b","Amount":3}`,
		`{"from":"acc-a","to":"acc-b","amount":3,"admin":true}`,
		`{"from":"acc-a","to":"acc-b","amount":3} {"amount":1000}`,
		`{"from":"acc-a","to":"acc-b","amount":"3"}`,
		`{"from":"acc-a\ud800","to":"acc-b","amount":3}`,
		"{\"from\":\"acc-a\",\"to\":\"acc-b\",\"amount\":3,\"\u212amount\":1}",
	}
	for _, route := range []string{"/v1/transfers", "/v1/transfers/async"} {
		for i, b := range bad {
			if r := e.do("POST", route, alice, b, fmt.Sprintf("strict-%d", i)); r.code != 400 {
				t.Errorf("%s %s: %s", route, b, r)
			}
		}
	}
	for _, b := range []string{`{"account":"acc-a","amount":5,"AMOUNT":5000}`, `{"account":"acc-a","Amount":5}`} {
		if r := e.do("POST", "/v1/deposits", e.teller(), b, "strict-dep"); r.code != 400 {
			t.Errorf("deposit %s: %s", b, r)
		}
	}
	if r := e.do("POST", "/v1/accounts", alice, `{"id":"acc-x","ID":"acc-y"}`, ""); r.code != 400 {
		t.Errorf("account: %s", r)
	}
	if after := e.facts().size; after != before {
		t.Fatalf("refused bodies reached the chain: %d → %d rows", before, after)
	}
	if q := e.queue.(*queue.Memory); q.Len() != 0 {
		t.Fatalf("refused bodies were queued: %d", q.Len())
	}
	// The keys were never claimed: a valid request with one runs.
	if r := e.do("POST", "/v1/transfers", alice, transferBody("acc-a", "acc-b", 3), "strict-0"); r.code != 201 || r.replayed() {
		t.Fatalf("key of a refused body: %s", r)
	}
	e.checkChain()
}

func TestLargeBodyRefused(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice")
	big := `{"from":"` + strings.Repeat("a", maxBody) + `","to":"b","amount":1}`
	if r := e.do("POST", "/v1/transfers", alice, big, "big"); r.code != 413 {
		t.Fatalf("oversized body: %s", r)
	}
}

func TestTransfersListedNewestFirst(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice")
	e.open(alice, "acc-a")
	e.open(e.user("bob"), "acc-b")
	e.fund("acc-a", 100)
	for i := 1; i <= 3; i++ {
		if r := e.do("POST", "/v1/transfers", alice, transferBody("acc-a", "acc-b", int64(i)), fmt.Sprint("l", i)); r.code != 201 {
			t.Fatal(r)
		}
	}
	r := e.do("GET", "/v1/accounts/acc-a/transfers?limit=2", alice, "", "")
	var got struct{ Transfers []book.Movement }
	r.json(t, &got)
	if r.code != 200 || len(got.Transfers) != 2 || got.Transfers[0].Amount != 3 || got.Transfers[1].Amount != 2 {
		t.Fatalf("history: %s", r)
	}
	if r := e.do("GET", "/v1/accounts/acc-a/transfers", e.user("bob"), "", ""); r.code != 404 {
		t.Fatalf("someone else's history: %s", r)
	}
	if r := e.do("GET", "/v1/accounts/acc-a/transfers?limit=1000", alice, "", ""); r.code != 400 {
		t.Fatalf("limit out of range: %s", r)
	}
}

// The default mode (memory idempotency store, file chain): a restart
// forgets every idempotency record, and every acknowledged key still
// replays its original response from the chain.
func TestKeysSurviveRestartInDefaultMode(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice")
	e.open(alice, "acc-a")
	e.open(e.user("bob"), "acc-b")
	e.fund("acc-a", 1000)
	first := e.do("POST", "/v1/transfers", alice, transferBody("acc-a", "acc-b", 250), "restart-1")
	refused := e.do("POST", "/v1/transfers", alice, transferBody("acc-a", "acc-b", 5000), "restart-2")
	if first.code != 201 || refused.code != 422 {
		t.Fatalf("setup: %s / %s", first, refused)
	}
	e.restart()
	for _, c := range []struct {
		key, body string
		want      resp
	}{{"restart-1", transferBody("acc-a", "acc-b", 250), first}, {"restart-2", transferBody("acc-a", "acc-b", 5000), refused}} {
		r := e.do("POST", "/v1/transfers", alice, c.body, c.key)
		if r.code != c.want.code || string(r.body) != string(c.want.body) || !r.replayed() {
			t.Fatalf("%s after restart: %s replayed=%v, want %s", c.key, r, r.replayed(), c.want)
		}
		// And a different body under the key is still refused.
		if r := e.do("POST", "/v1/transfers", alice, transferBody("acc-a", "acc-b", 1), c.key); r.code != 422 {
			t.Fatalf("%s reused after restart: %s", c.key, r)
		}
	}
	if got := e.svc().Balances()["acc-a"]; got != 750 {
		t.Fatalf("balance %d: a replayed key ran again", got)
	}
	e.checkChain()
}

// A full memory store (no eviction, tiny bound) never turns writes into
// 503: the chain deduplicates.
func TestFullIdempotencyStoreStillServes(t *testing.T) {
	e := newEnv(t, withIdem(func() idemStore { return mustMem(t, 2048, false) }))
	alice := e.user("alice")
	e.open(alice, "acc-a")
	e.open(e.user("bob"), "acc-b")
	e.fund("acc-a", 1000)
	for i := range 20 {
		body := transferBody("acc-a", "acc-b", 1)
		key := fmt.Sprint("full-", i)
		if r := e.do("POST", "/v1/transfers", alice, body, key); r.code != 201 {
			t.Fatalf("write %d with a full store: %s", i, r)
		}
		if r := e.do("POST", "/v1/transfers", alice, body, key); r.code != 201 || !r.replayed() {
			t.Fatalf("replay %d with a full store: %s", i, r)
		}
	}
	if got := e.svc().Balances()["acc-a"]; got != 980 {
		t.Fatalf("balance %d", got)
	}
	e.checkChain()
}

func TestAuditVerifyRoute(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice")
	e.open(alice, "acc-a")
	e.fund("acc-a", 10)
	if r := e.do("GET", "/v1/audit/verify", alice, "", ""); r.code != http.StatusForbidden {
		t.Fatalf("customer reads verify: %s", r)
	}
	if err := GrantRole(e.policy, "user:auditor", RoleAuditor); err != nil {
		t.Fatal(err)
	}
	if err := e.svc().Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.log.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := e.do("GET", "/v1/audit/verify", e.user("auditor"), "", "")
	var rep VerifyReport
	r.json(t, &rep)
	if r.code != 200 || !rep.OK || !rep.BalancesMatch || rep.Size != 2 || rep.Checkpoint == nil || !rep.Checkpoint.Matches {
		t.Fatalf("verify: %s", r)
	}
	var raw map[string]json.RawMessage
	r.json(t, &raw)
	for _, k := range []string{"ok", "size", "checkpoint", "balances_match"} {
		if _, ok := raw[k]; !ok {
			t.Fatalf("verify lacks %q: %s", k, r)
		}
	}
}

// A body declared as anything but JSON is refused at the ledger too, so
// what the edge inspected as one type is never decoded here as another.
func TestNonJSONBodyRefused(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice")
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "", "application/json-patch+json"} {
		r := httptest.NewRequest("POST", "/v1/transfers", strings.NewReader(transferBody("acc-a", "acc-b", 1)))
		r.Header.Set("Authorization", "Bearer "+alice)
		if ct != "" {
			r.Header.Set("Content-Type", ct)
		}
		r.Header.Set("Idempotency-Key", `"ct"`)
		w := httptest.NewRecorder()
		e.handler().ServeHTTP(w, r)
		if w.Code != http.StatusUnsupportedMediaType {
			t.Errorf("Content-Type %q: %d %s", ct, w.Code, w.Body)
		}
	}
}

func TestUnknownRoutesAnswerProblems(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice")
	if r := e.do("GET", "/v1/nope", alice, "", ""); r.code != 404 || r.header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("unknown route: %s %q", r, r.header.Get("Content-Type"))
	}
	if r := e.do("DELETE", "/v1/transfers", alice, "", ""); r.code != 405 || r.header.Get("Allow") == "" {
		t.Fatalf("wrong method: %s Allow %q", r, r.header.Get("Allow"))
	}
}

// The ForgetKeys switch (keys only in the idempotency store) makes the
// default mode forget keys at a restart, which the test above catches, and
// breaks nothing else: the chain, jobs included, still replays.
func TestForgetKeysCanFail(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.Faults.ForgetKeys = true }))
	alice := e.user("alice")
	e.open(alice, "acc-a")
	e.open(e.user("bob"), "acc-b")
	e.fund("acc-a", 1000)
	body := transferBody("acc-a", "acc-b", 250)
	if r := e.do("POST", "/v1/transfers", alice, body, "forget-1"); r.code != 201 {
		t.Fatal(r)
	}
	if r := e.do("POST", "/v1/transfers/async", alice, transferBody("acc-a", "acc-b", 5), "forget-2"); r.code != 202 {
		t.Fatal(r)
	}
	e.runJob(e.nextJob().Body)
	e.restart()
	if r := e.do("POST", "/v1/transfers", alice, body, "forget-1"); r.code != 201 || r.replayed() {
		t.Fatalf("with ForgetKeys the key was still recovered: %s", r)
	}
	if got := e.svc().Balances()["acc-a"]; got != 1000-250-5-250 {
		t.Fatalf("balance %d", got)
	}
	e.checkChain()
}

// Each fault switch breaks its own guarantee (what the evidence pass's
// can-fail proofs rely on), shown here against the same requests the
// guarantee's test sends.
func TestFaultSwitchesBreakTheirGuarantee(t *testing.T) {
	setup := func(t *testing.T, f Faults) (*env, string, string) {
		e := newEnv(t, withConfig(func(c *Config) { c.Faults = f }))
		alice, bob := e.user("alice"), e.user("bob")
		e.open(alice, "acc-a")
		e.open(bob, "acc-b")
		e.fund("acc-a", 1000)
		return e, alice, bob
	}
	t.Run("NoOwnerCheck", func(t *testing.T) {
		e, _, bob := setup(t, Faults{NoOwnerCheck: true})
		if r := e.do("GET", "/v1/accounts/acc-a", bob, "", ""); r.code != 200 {
			t.Fatalf("read someone else's account: %s", r)
		}
		if r := e.do("POST", "/v1/transfers", bob, transferBody("acc-a", "acc-b", 10), "steal"); r.code != 201 {
			t.Fatalf("debit someone else's account: %s", r)
		}
	})
	t.Run("UnredactedSample", func(t *testing.T) {
		e, _, _ := setup(t, Faults{UnredactedSample: true})
		if _, err := e.log.Checkpoint(t.Context()); err != nil {
			t.Fatal(err)
		}
		if r := e.do("GET", "/internal/v1/audit/sample", e.auditor(), "", ""); r.code != 200 || !strings.Contains(string(r.body), "user:alice") {
			t.Fatalf("sample without redaction: %s", r)
		}
	})
	t.Run("redacted sample (control)", func(t *testing.T) {
		e, _, _ := setup(t, Faults{})
		if _, err := e.log.Checkpoint(t.Context()); err != nil {
			t.Fatal(err)
		}
		if r := e.do("GET", "/internal/v1/audit/sample", e.auditor(), "", ""); r.code != 200 || strings.Contains(string(r.body), "user:alice") {
			t.Fatalf("sample names a user: %s", r)
		}
	})
	t.Run("KeyOptional", func(t *testing.T) {
		e, alice, _ := setup(t, Faults{KeyOptional: true})
		if r := e.do("POST", "/v1/transfers", alice, transferBody("acc-a", "acc-b", 10), ""); r.code != 201 {
			t.Fatalf("write without a key: %s", r)
		}
	})
	t.Run("LaxBodies", func(t *testing.T) {
		e, alice, _ := setup(t, Faults{LaxBodies: true})
		if r := e.do("POST", "/v1/transfers", alice, `{"from":"acc-a","to":"acc-b","amount":1000,"AMOUNT":3}`, "lax"); r.code == 400 {
			t.Fatalf("case-variant body still refused: %s", r)
		}
	})
	// A token for alice signed by a key the ledger does not trust.
	forged := func(t *testing.T) string {
		c := jwttest.Claims(iss, "malai-api", "user:alice", time.Now())
		c["scope"] = ScopeRead
		return jwttest.NewKey(t, "ES256", "k1").Mint(t, c)
	}
	t.Run("NoTokenCheck", func(t *testing.T) {
		e, _, _ := setup(t, Faults{NoTokenCheck: true})
		if r := e.do("GET", "/v1/accounts", forged(t), "", ""); r.code != 200 || !strings.Contains(string(r.body), "acc-a") {
			t.Fatalf("with NoTokenCheck a forged token should read its subject's accounts: %s", r)
		}
		if r := e.do("GET", "/v1/accounts", "", "", ""); r.code != 401 {
			t.Fatalf("no token: %s", r)
		}
	})
	// A token of the wrong class holding the route's scope and (through
	// the policy) its role, on a user route and on an internal route.
	wrongClass := func(t *testing.T, f Faults) (userRoute, internalRoute int) {
		e, _, _ := setup(t, f)
		if err := GrantRole(e.policy, "user:carol", RoleAuditor); err != nil {
			t.Fatal(err)
		}
		if err := e.svc().Reload(); err != nil {
			t.Fatal(err)
		}
		// Each with the route's audience: only the class is wrong.
		svc := jwttest.ServiceClaims(iss, "malai-api", "evidence", time.Now())
		svc["scope"] = ScopeRead
		usr := jwttest.Claims(iss, "malai-internal", "user:carol", time.Now())
		usr["scope"] = ScopeAudit
		return e.do("GET", "/v1/audit/verify", e.key.Mint(t, svc), "", "").code,
			e.do("GET", "/internal/v1/audit/verify", e.key.Mint(t, usr), "", "").code
	}
	t.Run("AnyClassOnUserRoutes", func(t *testing.T) {
		if u, i := wrongClass(t, Faults{AnyClassOnUserRoutes: true}); u != 200 || i != 403 {
			t.Fatalf("service token on a user route %d (want 200), user token on an internal route %d (want 403)", u, i)
		}
	})
	t.Run("AnyClassOnInternalRoutes", func(t *testing.T) {
		if u, i := wrongClass(t, Faults{AnyClassOnInternalRoutes: true}); u != 403 || i != 200 {
			t.Fatalf("service token on a user route %d (want 403), user token on an internal route %d (want 200)", u, i)
		}
	})
	t.Run("wrong class refused (control)", func(t *testing.T) {
		if u, i := wrongClass(t, Faults{}); u != 403 || i != 403 {
			t.Fatalf("service token on a user route %d, user token on an internal route %d: want 403 for both", u, i)
		}
	})
	t.Run("forged token refused (control)", func(t *testing.T) {
		e, _, _ := setup(t, Faults{})
		if r := e.do("GET", "/v1/accounts", forged(t), "", ""); r.code != 401 {
			t.Fatalf("forged token: %s", r)
		}
	})
	t.Run("LiveDrift", func(t *testing.T) {
		e, _, _ := setup(t, Faults{LiveDrift: true})
		if _, problems := e.invariants(); len(problems) == 0 {
			t.Fatal("live balances drifted from the chain and no invariant broke")
		}
	})
}

// A key sent bare (as curl users and most clients send it) and the same
// key quoted name one record.
func TestBareAndQuotedKeysAreOne(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice")
	e.open(alice, "acc-a")
	e.open(e.user("bob"), "acc-b")
	e.fund("acc-a", 100)
	send := func(raw string) resp {
		r := httptest.NewRequest("POST", "/v1/transfers", strings.NewReader(transferBody("acc-a", "acc-b", 10)))
		r.Header.Set("Authorization", "Bearer "+alice)
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Idempotency-Key", raw)
		w := httptest.NewRecorder()
		e.handler().ServeHTTP(w, r)
		return resp{code: w.Code, header: w.Header(), body: w.Body.Bytes()}
	}
	if r := send("bare-key-1"); r.code != 201 || r.replayed() {
		t.Fatalf("bare key: %s", r)
	}
	if r := send(`"bare-key-1"`); r.code != 201 || !r.replayed() {
		t.Fatalf("the same key quoted: %s", r)
	}
	if r := send("two words"); r.code != 400 {
		t.Fatalf("malformed bare key: %s", r)
	}
}

// Each route takes one token class and one audience, although the
// verifier knows both audiences: a user token minted for the internal
// audience is no user token here, and a service token minted for the
// public audience cannot reach the internal routes.
func TestOneAudiencePerRoute(t *testing.T) {
	e := newEnv(t)
	e.open(e.user("alice"), "acc-a")
	c := jwttest.Claims(iss, "malai-internal", "user:alice", time.Now())
	c["scope"] = ScopeRead + " " + ScopeWrite
	userInternal := e.key.Mint(t, c)
	c = jwttest.ServiceClaims(iss, "malai-api", "worker", time.Now())
	c["scope"] = ScopeTransfer
	workerPublic := e.key.Mint(t, c)
	c = jwttest.ServiceClaims(iss, "malai-api", "evidence", time.Now())
	c["scope"] = ScopeAudit
	auditorPublic := e.key.Mint(t, c)
	for _, tc := range []struct{ name, method, path, tok string }{
		{"user token for the internal audience", "GET", "/v1/accounts", userInternal},
		{"worker token for the public audience", "POST", "/internal/v1/transfers", workerPublic},
		{"auditor token for the public audience", "GET", "/internal/v1/audit/replay", auditorPublic},
		{"service token on a user route", "GET", "/v1/accounts", e.worker()},
		{"user token on an internal route", "GET", "/internal/v1/audit/replay", e.user("alice")},
	} {
		if r := e.do(tc.method, tc.path, tc.tok, `{}`, ""); r.code != 401 && r.code != 403 {
			t.Errorf("%s: %s", tc.name, r)
		}
	}
	if r := e.do("GET", "/v1/accounts", e.user("alice"), "", ""); r.code != 200 {
		t.Fatalf("the right token: %s", r)
	}
}
