package waf

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/corazawaf/coraza/v3/types"
)

// TestResponsePhasesInert checks which rule sets may skip phases 3 and 4
// on a response whose body is not inspected, and that anything that can
// act on such a response keeps them on.
func TestResponsePhasesInert(t *testing.T) {
	inert := func(cfg Config, p Profile) (bool, string) {
		t.Helper()
		if cfg.ParanoiaLevel == 0 {
			cfg.ParanoiaLevel = 1
		}
		files, err := embeddedRules()
		if err != nil {
			t.Fatal(err)
		}
		ok, why, err := respPhasesInert(files, Directives(cfg, p), cfg.ParanoiaLevel, p.Remove)
		if err != nil {
			t.Fatal(err)
		}
		return ok, why
	}
	if ok, why := inert(GatewayConfig(), ServiceProfile()); !ok {
		t.Errorf("service profile at paranoia level 1: phases kept on (%s)", why)
	}
	// The whole rule set: the IIS rules read the status at level 1.
	if ok, why := inert(GatewayConfig(), Profile{}); ok || !strings.Contains(why, "RESPONSE_STATUS") {
		t.Errorf("whole rule set: inert %v (%s), want the phases on for a status rule", ok, why)
	}
	// Level 2 adds 950100 (a 5xx status) to every profile.
	pl2 := GatewayConfig()
	pl2.ParanoiaLevel = 2
	if ok, why := inert(pl2, ServiceProfile()); ok || !strings.Contains(why, "950100") {
		t.Errorf("service profile at level 2: inert %v (%s), want 950100 to keep the phases on", ok, why)
	}
	// A detection level above the blocking level runs 950100 too.
	detect := GatewayConfig()
	detect.AfterCRS = `SecAction "id:99004,phase:1,pass,nolog,setvar:tx.detection_paranoia_level=2"` + "\n"
	if ok, why := inert(detect, ServiceProfile()); ok || !strings.Contains(why, "950100") {
		t.Errorf("service profile with detection level 2: inert %v (%s), want 950100 to keep the phases on", ok, why)
	}
	// A rule of the caller's own in phase 3 or 4, whatever it reads, and
	// a response rule changed in place.
	for _, rule := range []string{
		`SecRuleUpdateTargetById 951100 "RESPONSE_HEADERS"`,
		`SecAction "id:99006,phase:2,pass,nolog,setvar:tx.outbound_anomaly_score_pl1=10"`,
		`SecRuleUpdateActionById 951110 "phase:3"`,
		`SecRuleUpdateTargetByTag "attack-disclosure" "RESPONSE_HEADERS"`,
		`SecRule RESPONSE_HEADERS:X-Leak "@streq yes" "id:99001,phase:3,deny,status:502"`,
		`SecRule TX:ANYTHING "@eq 1" "id:99002,phase:4,deny,status:502"`,
		`SecAction "id:99003,phase:response,pass,setvar:tx.x=1"`,
	} {
		cfg := GatewayConfig()
		cfg.AfterCRS = rule + "\n"
		if ok, _ := inert(cfg, ServiceProfile()); ok {
			t.Errorf("%s: phases skipped", rule)
		}
	}
	// A CRS-shaped rule that acts on the body's absence.
	for text, want := range map[string]bool{
		`SecRule RESPONSE_BODY "!@rx secret" "id:1,phase:4,deny"`:                false,
		`SecRule &RESPONSE_BODY "@eq 0" "id:2,phase:4,block"`:                    false,
		`SecRule RESPONSE_BODY "@rx secret" "id:3,phase:4,block,setvar:tx.s=+1"`: true,
		`SecRule RESPONSE_HEADERS:A "@rx b" "id:4,phase:3,pass,skipAfter:END"`:   true,
		`SecRule RESPONSE_HEADERS:A "@rx b" "id:5,phase:3,pass,setvar:tx.s=+1"`:  false,
		`SecRule RESPONSE_STATUS "@rx ^5" "id:6,phase:3,pass,chain"` + "\n" +
			`  SecRule RESPONSE_BODY "@rx x" "setvar:tx.s=+1"`: false,
	} {
		r := parseRules(text)
		if len(r) != 1 {
			t.Fatalf("%s: parsed %d rules", text, len(r))
		}
		if got := r[0].actsOnResponse() == ""; got != want {
			t.Errorf("%s: inert %v, want %v", text, got, want)
		}
	}
}

// TestUninspectedResponsesSkipTheResponsePhases checks the skip through
// the handler: the services' JSON goes without phases 3 and 4 on a
// service route, a body the configuration inspects is inspected there as
// before (a leaked SQL error is withheld), the pages keep the phases, and
// a caller's own response rule is enforced on JSON too.
func TestUninspectedResponsesSkipTheResponsePhases(t *testing.T) {
	type answer struct{ ctype, body string }
	run := func(t *testing.T, cfg Config, profile string, a answer) (int, string, bool) {
		t.Helper()
		w := newSuiteWAF(t, cfg)
		ran := false
		w.observe = func(_ *http.Request, tx types.Transaction) {
			// Phase 3 records the status; a skipped response leaves it unset.
			ran = tx.(plugintypes.TransactionState).Variables().ResponseStatus().Get() != ""
		}
		h := w.Handler(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			rw.Header().Set("Content-Type", a.ctype)
			rw.Header().Set("X-Leak", "yes")
			_, _ = rw.Write([]byte(a.body))
		}))
		rec := getAccount(h, profile)
		return rec.Code, rec.Body.String(), ran
	}
	json := answer{"application/json", `{"id":"acc_123","balance":1500}`}
	leak := answer{"text/plain; charset=utf-8", "pq: PostgreSQL query failed: ERROR:  syntax error at or near \"'\"\n"}

	if code, body, ran := run(t, GatewayConfig(), Services, json); code != 200 || body != json.body || ran {
		t.Errorf("service route, JSON: %d %q, phases ran %v; want 200, the body, skipped", code, body, ran)
	}
	if code, body, ran := run(t, GatewayConfig(), Services, leak); code != http.StatusBadGateway || !ran || strings.Contains(body, "PostgreSQL") {
		t.Errorf("service route, leaked SQL error as text/plain: %d, phases ran %v, body %q; want 502 without the leak", code, ran, body)
	}
	if code, _, ran := run(t, GatewayConfig(), "", json); code != 200 || !ran {
		t.Errorf("whole rule set, JSON: %d, phases ran %v; want 200 and the phases run", code, ran)
	}
	own := GatewayConfig()
	own.AfterCRS = `SecRule RESPONSE_HEADERS:X-Leak "@streq yes" "id:99001,phase:3,deny,status:502"` + "\n"
	if code, body, ran := run(t, own, Services, json); code != http.StatusBadGateway || !ran || strings.Contains(body, "balance") {
		t.Errorf("service route, own phase-3 rule, JSON: %d, phases ran %v, body %q; want 502", code, ran, body)
	}
	// A phase-3 rule that switches the JSON body's inspection on: the body
	// is then held and inspected, and a leak in it withheld.
	force := GatewayConfig()
	force.AfterCRS = `SecRule RESPONSE_HEADERS:Content-Type "@beginsWith application/json" "id:99005,phase:3,pass,nolog,ctl:forceResponseBodyVariable=On"` + "\n"
	jsonLeak := answer{"application/json", `{"error":"pq: PostgreSQL query failed: ERROR:  syntax error at or near \"'\""}`}
	if code, body, _ := run(t, force, Services, jsonLeak); code != http.StatusBadGateway || strings.Contains(body, "PostgreSQL") {
		t.Errorf("service route, body inspection forced in phase 3, leak in JSON: %d %q; want 502 without the leak", code, body)
	}
}

// TestSkippedResponsePhasesWouldNotHaveActed runs phases 3 and 4 of the
// service profile in full over the responses the skip applies to (the
// services' JSON and problem documents, every status they use, an image,
// a compressed body, no body) after real API calls, and checks that they
// would have changed nothing: no interruption, no detection, no outbound
// anomaly score. The static check (respPhasesInert) says why; this says
// it holds for the rule files shipped.
func TestSkippedResponsePhasesWouldNotHaveActed(t *testing.T) {
	cfg := GatewayConfig()
	cfg.ParanoiaLevel = 1
	w := newSuiteWAF(t, cfg)
	eng, bearer := w.engines[Services], w.bearer
	if !eng.skipUninspected {
		t.Fatal("the service profile does not skip; nothing to check")
	}
	responses := []struct {
		status      int
		ctype, body string
		encoding    string
	}{
		{200, "application/json", `{"id":"acc_123","balance":1500}`, ""},
		{201, "application/json", `{"id":"tr_1"}`, ""},
		{202, "application/json", `{"job":"job_1"}`, ""},
		{204, "", "", ""},
		{304, "", "", ""},
		{400, "application/problem+json", `{"type":"bad-request","status":400}`, ""},
		{401, "application/problem+json", `{"type":"unauthorized","status":401}`, ""},
		{403, "application/problem+json", `{"type":"forbidden","status":403}`, ""},
		{404, "application/problem+json", `{"type":"not-found","status":404}`, ""},
		{409, "application/problem+json", `{"type":"conflict","status":409}`, ""},
		{429, "application/problem+json", `{"type":"rate-limited","status":429}`, ""},
		{500, "application/problem+json", `{"type":"internal","status":500}`, ""},
		{502, "application/problem+json", `{"type":"bad-gateway","status":502}`, ""},
		{503, "application/problem+json", `{"type":"unavailable","status":503}`, ""},
		{200, "image/png", "\x89PNG\r\n\x1a\n", ""},
		{200, "application/json", "\x1f\x8b\x08\x00", "gzip"},
	}
	requests := []*http.Request{
		func() *http.Request {
			r := httptest.NewRequest("GET", "/v1/accounts/acc_123", nil)
			apiHeaders(r, sampleToken())
			return r
		}(),
		func() *http.Request {
			r := httptest.NewRequest("POST", "/v1/transfers", strings.NewReader(`{"from":"acc_1","to":"acc_2","amount":1500,"memo":"rent"}`))
			apiHeaders(r, sampleToken())
			r.Header.Set("Content-Type", "application/json")
			return r
		}(),
	}
	for _, req := range requests {
		for _, resp := range responses {
			body := []byte(nil)
			if req.Method == "POST" {
				body = []byte(`{"from":"acc_1","to":"acc_2","amount":1500,"memo":"rent"}`)
			}
			tx := eng.NewTransaction()
			if it, err := inspect(tx, req, body, bearer); it != nil || err != nil {
				t.Fatalf("%s %s: request refused (%v, %v)", req.Method, req.URL, it, err)
			}
			if resp.ctype != "" {
				tx.AddResponseHeader("Content-Type", resp.ctype)
			}
			if resp.encoding != "" {
				tx.AddResponseHeader("Content-Encoding", resp.encoding)
			}
			if tx.IsResponseBodyAccessible() && tx.IsResponseBodyProcessable() {
				t.Fatalf("%d %s: the configuration inspects this body; the case is not one the skip applies to", resp.status, resp.ctype)
			}
			before := len(tx.MatchedRules())
			it := tx.ProcessResponseHeaders(resp.status, "HTTP/1.1")
			if it == nil {
				_, _, _ = tx.WriteResponseBody([]byte(resp.body))
				it, _ = tx.ProcessResponseBody()
			}
			if it != nil {
				t.Errorf("%s, %d %s: phases 3-4 interrupted (rule %d)", req.Method, resp.status, resp.ctype, it.RuleID)
			}
			for _, m := range tx.MatchedRules()[before:] {
				// Detections carry a message; markers and bookkeeping do not.
				if m.Message() != "" {
					t.Errorf("%s, %d %s: rule %d matched in phase %d (%q)", req.Method, resp.status, resp.ctype, m.Rule().ID(), m.Rule().Phase(), m.Message())
				}
			}
			if v := tx.(plugintypes.TransactionState).Variables().TX().Get("blocking_outbound_anomaly_score"); len(v) != 1 || v[0] != "0" {
				t.Errorf("%s, %d %s: outbound anomaly score %v, want 0", req.Method, resp.status, resp.ctype, v)
			}
			_ = tx.Close()
		}
	}
}
