package waf

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/corazawaf/coraza/v3/types"
)

// phase5Report runs tx's phases 1-4 over req and a JSON answer, then
// returns what reportable says and the rules phase 5 matches when run
// anyway.
func phase5Report(t *testing.T, eng engine, w *WAF, req *http.Request, body []byte) (bool, []types.MatchedRule) {
	t.Helper()
	tx := eng.NewTransaction()
	defer tx.Close()
	_, _ = inspect(tx, req, body, w.bearer)
	if !tx.IsInterrupted() {
		tx.AddResponseHeader("Content-Type", "application/json")
		if it := tx.ProcessResponseHeaders(200, "HTTP/1.1"); it == nil {
			_, _, _ = tx.WriteResponseBody([]byte(`{"id":"acc_123","balance":1500}`))
			_, _ = tx.ProcessResponseBody()
		}
	}
	ok := reportable(tx)
	before := len(tx.MatchedRules())
	tx.ProcessLogging()
	return ok, tx.MatchedRules()[before:]
}

// TestSkippedLoggingPhaseWouldNotHaveActed runs phase 5, which the WAF
// skips when reportable says no, over clean API calls and pages: it
// matches no rule that logs. On an attack, reportable says yes and phase
// 5 reports it (980170), so the skip reads the scores the CRS reads.
func TestSkippedLoggingPhaseWouldNotHaveActed(t *testing.T) {
	w := newSuiteWAF(t, GatewayConfig())
	clean := []func() (*http.Request, []byte){
		func() (*http.Request, []byte) {
			r := httptest.NewRequest("GET", "/v1/accounts/acc_123", nil)
			apiHeaders(r, sampleToken())
			return r, nil
		},
		func() (*http.Request, []byte) {
			body := `{"from":"acc_1","to":"acc_2","amount":1500,"memo":"rent"}`
			r := httptest.NewRequest("POST", "/v1/transfers", strings.NewReader(body))
			apiHeaders(r, sampleToken())
			r.Header.Set("Content-Type", "application/json")
			return r, []byte(body)
		},
		func() (*http.Request, []byte) {
			r := httptest.NewRequest("GET", "/app/accounts?sort=name", nil)
			r.Header.Set("User-Agent", "Mozilla/5.0")
			r.Header.Set("Accept", "text/html")
			return r, nil
		},
	}
	for name, eng := range w.engines {
		for i, mk := range clean {
			req, body := mk()
			ok, matched := phase5Report(t, eng, w, req, body)
			if ok {
				t.Errorf("engine %q, clean request %d: reportable, so phase 5 runs; want it skipped", name, i)
			}
			for _, m := range matched {
				if m.Message() != "" || m.Rule().ID() == 980170 {
					t.Errorf("engine %q, clean request %d: phase 5 matched rule %d (%q)", name, i, m.Rule().ID(), m.Message())
				}
			}
		}
		req := httptest.NewRequest("GET", "/v1/accounts/acc_123?a=/bin/bash", nil)
		apiHeaders(req, sampleToken())
		ok, matched := phase5Report(t, eng, w, req, nil)
		reported := false
		for _, m := range matched {
			reported = reported || m.Rule().ID() == 980170
		}
		if !ok || !reported {
			t.Errorf("engine %q, attack: reportable %v, 980170 reported %v; want both", name, ok, reported)
		}
	}
}

// TestReportingLevelFiveRunsPhase5: at reporting level 5 the CRS reports
// every transaction, scored or not, so nothing is skipped.
func TestReportingLevelFiveRunsPhase5(t *testing.T) {
	cfg := GatewayConfig()
	cfg.beforeCRS = `SecAction "id:900115,phase:1,pass,nolog,setvar:tx.reporting_level=5"` + "\n"
	w := newSuiteWAF(t, cfg)
	req := httptest.NewRequest("GET", "/v1/accounts/acc_123", nil)
	apiHeaders(req, sampleToken())
	ok, matched := phase5Report(t, w.engines[""], w, req, nil)
	reported := false
	for _, m := range matched {
		reported = reported || m.Rule().ID() == 980170
	}
	if !ok || !reported {
		t.Errorf("reporting level 5: reportable %v, 980170 reported %v; want both", ok, reported)
	}
}
