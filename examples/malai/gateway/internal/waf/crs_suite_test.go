package waf

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/experimental"
	"github.com/corazawaf/coraza/v3/types"
)

// crsTestSetup is the regression suite's required configuration (rule
// 900005 of the CRS regression README, as Coraza's own CRS test setup
// loads it): detection only, every paranoia level, the optional limits
// the tests exercise.
const crsTestSetup = `SecAction "id:900005,phase:1,nolog,pass,ctl:ruleEngine=DetectionOnly,ctl:ruleRemoveById=910000,setvar:tx.blocking_paranoia_level=4,setvar:tx.crs_validate_utf8_encoding=1,setvar:tx.arg_name_length=100,setvar:tx.arg_length=400,setvar:tx.total_arg_length=64000,setvar:tx.max_num_args=255,setvar:tx.max_file_size=64100,setvar:tx.combined_file_sizes=65535"
`

// corazaDefault is Coraza's own configuration: its recommended base with
// the engine on, the CRS setup example and the CRS.
func corazaDefault(beforeCRS string) string {
	return "Include @coraza.conf-recommended\nSecRuleEngine On\nInclude @crs-setup.conf.example\n" + beforeCRS + "Include @owasp_crs/*.conf\n"
}

// corazaIgnored are the tests Coraza's own CRS test setup ignores
// (testing/coreruleset/.ftw.yml of corazawaf/coraza), with its reasons.
var corazaIgnored = map[string]string{
	"920100-4": "Coraza: invalid URI, Go's HTTP server answers before the WAF",
	"920100-5": "Coraza: invalid URI, Go's HTTP server answers before the WAF",
	"920280-3": "Coraza: ignored (under investigation upstream)",
	"920430-3": "Coraza: ignored (under investigation upstream)",
	"920430-5": "Coraza: ignored (under investigation upstream)",
	"920430-9": "Coraza: ignored (under investigation upstream)",
	"920610-2": "Coraza: URI fragments are accepted by Go's HTTP server",
}

// corazaOverrides are the new expectations Coraza's own CRS test setup
// sets (testing/coreruleset/.ftw-overrides.yml), with its reasons.
var corazaOverrides = map[string]struct {
	out    ftwOutput
	reason string
}{
	"920100-8": {output(200, nil, []int{920100}), "Go allows a colon in the path, which RFC 3986 permits"},
	"920270-4": {output(0, []int{920270}, nil), "the rule matches; the status 400 is Apache's"},
	"920274-1": {output(0, []int{920274}, nil), "the rule matches; the status 400 is Apache's"},
	"920290-1": {output(0, []int{920280}, nil), "Go drops an empty Host: 920280 (missing Host) matches instead"},
	"920290-4": {output(0, []int{920280}, nil), "Go drops an empty Host: 920280 (missing Host) matches instead"},
	"920430-8": {output(505, nil, []int{920430}), "Go refuses HTTP/3.0 on a TCP connection with 505"},
	"920620-1": {output(0, []int{920620}, nil), "Go keeps repeated Content-Type headers, which the rule looks for"},
	"922130-1": {output(0, []int{200003}, nil), "Coraza's multipart parser flags the part first (200003)"},
	"922130-2": {output(0, []int{200003}, nil), "Coraza's multipart parser flags the part first (200003)"},
	"922130-7": {output(0, []int{200003}, nil), "Coraza's multipart parser flags the part first (200003)"},
	"922130-4": {output(0, []int{922130}, nil), "a space is valid for the parser; 922130 matches"},
	"922130-3": {output(0, nil, []int{200002, 200003, 922130}), "valid multipart payloads"},
	"922130-5": {output(0, nil, []int{200002, 200003, 922130}), "valid multipart payloads"},
	"922130-6": {output(0, nil, []int{200002, 200003, 922130}), "valid multipart payloads"},
}

func output(status int, expect, noExpect []int) ftwOutput {
	var o ftwOutput
	o.Status = status
	o.Log.ExpectIDs = expect
	o.Log.NoExpectIDs = noExpect
	return o
}

// logdataTests are the tests whose log assertion reads a rule's logdata
// (the value matched and where), which the gateway's rule files drop
// (dropLogdata): the gateway never logs a matched value. Against the
// gateway's rule set they are checked without that assertion (status and
// rule ids still, the test's own rule at least); against Coraza's default
// configuration with it.
var logdataTests = map[string]bool{
	"920540-4": true, "931130-24": true, "932200-13": true,
	"932207-7": true, "932300-10": true, "933120-2": true,
}

// gatewayOutputs are overrideOutputs plus the logdataTests without their
// log-text assertion.
func gatewayOutputs(t testing.TB, cases []crsCase) map[string]ftwOutput {
	m := overrideOutputs()
	found := 0
	for _, c := range cases {
		if !logdataTests[c.name] {
			continue
		}
		found++
		out, ok := m[c.name]
		if !ok {
			out = c.stages[len(c.stages)-1].Output
		}
		if out.Log.MatchRegex == "" && out.Log.NoMatchRegex == "" {
			t.Fatalf("%s: listed as reading logdata, but asserts no log text", c.name)
		}
		out.Log.MatchRegex, out.Log.NoMatchRegex = "", ""
		if len(out.Log.ExpectIDs) == 0 {
			// What the log text showed: the test's rule matched.
			out.Log.ExpectIDs = []int{c.rule}
		}
		m[c.name] = out
	}
	if found != len(logdataTests) {
		t.Fatalf("%d of the %d logdataTests are in the suite", found, len(logdataTests))
	}
	return m
}

func overrideOutputs() map[string]ftwOutput {
	m := map[string]ftwOutput{}
	for k, v := range corazaOverrides {
		m[k] = v.out
	}
	return m
}

// ruleLevels maps every CRS rule id to its paranoia level (its
// paranoia-level/N tag; 0 for untagged rules).
func ruleLevels(t testing.TB) map[int]int {
	levels := map[int]int{}
	cfg := experimental.WAFConfigWithRuleObserver(
		coraza.NewWAFConfig().WithRootFS(coreruleset.FS).WithDirectives(corazaDefault("")),
		func(r types.RuleMetadata) {
			for _, tag := range r.Tags() {
				if n, ok := strings.CutPrefix(tag, "paranoia-level/"); ok {
					levels[r.ID()], _ = strconv.Atoi(n)
				}
			}
		})
	if _, err := coraza.NewWAF(cfg); err != nil {
		t.Fatal(err)
	}
	return levels
}

// suiteCases returns the suite, sampled under the race detector (the
// whole suite runs in .ci/run without it).
func suiteCases(t testing.TB) []crsCase {
	cases := loadSuite(t)
	if raceEnabled || testing.Short() {
		var s []crsCase
		for i, c := range cases {
			if i%20 == 0 || corazaOverrides[c.name].reason != "" || logdataTests[c.name] {
				s = append(s, c)
			}
		}
		t.Logf("race detector or -short: %d of %d CRS tests", len(s), len(cases))
		return s
	}
	return cases
}

func newSuiteWAF(t testing.TB, cfg Config) *WAF {
	cfg.Logger = quietLogger()
	cfg.MaxWait = time.Minute
	cfg.MaxWaiting = 64
	cfg.MaxBodyArgs = 1 << 20 // the suite's bodies are the rules' business, not the shape caps'
	if cfg.InspectionRate == 0 {
		cfg.InspectionRate = -1 // thousands of requests from one address, back to back
	}
	if cfg.RefusalDelay == 0 {
		cfg.RefusalDelay = -1 // the same: their refusals are what is tested, not their pace
	}
	if cfg.BodyLimit == 0 {
		cfg.BodyLimit = 13107200 // Coraza's recommended limit: the suite sends up to 64 KiB
	}
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestCRSRegression runs the CRS's own regression suite:
//
//  1. against the gateway's rule set with the suite's required settings
//     (every paranoia level, detection only), as Coraza's own CRS test
//     setup does: every test passes except what that setup ignores or
//     overrides (the logdataTests without their log-text assertion);
//  2. against Coraza's default configuration with the same settings:
//     every test has the same outcome and the same CRS rules matched
//     (detections);
//  3. against the gateway's exact configuration (paranoia level 1,
//     blocking): every test passes except the named classes below.
func TestCRSRegression(t *testing.T) {
	cases := suiteCases(t)
	ov := overrideOutputs()
	gov := gatewayOutputs(t, cases)
	var ours map[string]outcome

	t.Run("gateway rule set, suite settings", func(t *testing.T) {
		w := newSuiteWAF(t, gatewaySuiteConfig(crsTestSetup))
		ours = runSuite(t, w, skipIgnored(cases), gov)
		report(t, "gateway rule set (suite settings)", cases, ours, nil)
		t.Logf("  %d of them without their log-text assertion (logdataTests)", len(logdataTests))
	})
	t.Run("Coraza default configuration, same results", func(t *testing.T) {
		if ours == nil {
			t.Skip("first run failed")
		}
		w := newSuiteWAF(t, Config{rulesOverride: corazaDefault(crsTestSetup)})
		theirs := runSuite(t, w, skipIgnored(cases), ov)
		report(t, "Coraza default configuration (suite settings)", cases, theirs, nil)
		diffs := 0
		for name, o := range theirs {
			a, b := detections(o.ids), detections(ours[name].ids)
			if o.pass != ours[name].pass || !slices.Equal(a, b) {
				diffs++
				if diffs <= 20 {
					t.Errorf("%s: Coraza default pass=%v matched %v; gateway pass=%v matched %v", name, o.pass, a, ours[name].pass, b)
				}
			}
		}
		t.Logf("CRS rules matched differ in %d of %d tests", diffs, len(theirs))
	})
	var pl1 map[string]outcome
	t.Run("gateway configuration, paranoia level 1, blocking", func(t *testing.T) {
		levels := ruleLevels(t)
		w := newSuiteWAF(t, gatewaySuiteConfig(""))
		pl1 = runSuite(t, w, skipIgnored(cases), gov)
		report(t, "gateway configuration (PL1, blocking)", cases, pl1, func(c crsCase, o outcome) string {
			return expectedAtPL1(c, o, levels)
		})
		t.Logf("  %d of them without their log-text assertion (logdataTests)", len(logdataTests))
	})
	t.Run("paranoia pruning, same results", func(t *testing.T) {
		if pl1 == nil {
			t.Skip("the level-1 run failed")
		}
		files, err := embeddedRules()
		if err != nil {
			t.Fatal(err)
		}
		pruned, err := levelPruned(files, 1)
		if err != nil {
			t.Fatal(err)
		}
		cfg := gatewaySuiteConfig("")
		cfg.keepLevels = true
		kept := runSuite(t, newSuiteWAF(t, cfg), skipIgnored(cases), gov)
		diffs := 0
		for name, o := range kept {
			// The markers match (and skip) only where they are kept.
			ids := slices.DeleteFunc(slices.Clone(o.ids), func(id int) bool { return slices.Contains(pruned, id) })
			if o.pass != pl1[name].pass || !slices.Equal(ids, pl1[name].ids) {
				diffs++
				if diffs <= 20 {
					t.Errorf("%s: every level kept pass=%v matched %v; pruned pass=%v matched %v", name, o.pass, ids, pl1[name].pass, pl1[name].ids)
				}
			}
		}
		t.Logf("paranoia pruning: outcome or rules matched differ in %d of %d tests", diffs, len(kept))
	})
}

// gatewaySuiteConfig is the gateway's WAF configuration (the same
// directives, exclusions included) with extra settings before the CRS.
func gatewaySuiteConfig(beforeCRS string) Config {
	cfg := GatewayConfig()
	cfg.beforeCRS = beforeCRS
	return cfg
}

func skipIgnored(cases []crsCase) []crsCase {
	var out []crsCase
	for _, c := range cases {
		if corazaIgnored[c.name] == "" {
			out = append(out, c)
		}
	}
	return out
}

// detections keeps the CRS detection ids and its report (980170): not
// the setup rules 900000-910999, nor the reporting rules' own flow
// control 980000-980169 (all nolog), which the gateway does not run on a
// transaction with nothing to report (reportable), nor the
// configuration's own.
func detections(ids []int) []int {
	var out []int
	for _, id := range ids {
		if id >= 911000 && id < 1000000 && (id < 980000 || id >= 980170) {
			out = append(out, id)
		}
	}
	return out
}

// expectedAtPL1 names why a test cannot pass under the gateway's exact
// configuration, or "" when it must.
func expectedAtPL1(c crsCase, o outcome, levels map[int]int) string {
	last := c.stages[len(c.stages)-1].Output
	if ov, ok := corazaOverrides[c.name]; ok {
		last = ov.out
	}
	for _, id := range append([]int{c.rule}, last.Log.ExpectIDs...) {
		if levels[id] > 1 {
			return fmt.Sprintf("tests a paranoia-level-%d rule; the gateway runs level 1", levels[id])
		}
	}
	switch c.rule {
	case 920360, 920370, 920380, 920390, 920400, 920410:
		return "needs the suite's optional tx.* argument and file limits; the gateway refuses oversized shapes before the WAF instead"
	}
	requestBlocked := slices.Contains(o.ids, 949110) || slices.Contains(o.ids, 949111)
	if requestBlocked && c.rule >= 950000 && c.rule < 980000 {
		return "blocking: the request itself scores at level 1 and is refused, so there is no response to inspect"
	}
	if requestBlocked && strings.Contains(o.reason, "status 403, want 200") {
		return "blocking: the request scores at level 1 and is refused (403) where the suite, in detection-only mode, expects the server's 200"
	}
	if r, ok := pl1Expected[c.name]; ok {
		return r
	}
	return ""
}

// pl1Expected are the remaining tests whose result differs under
// blocking at level 1, each with its reason.
var pl1Expected = map[string]string{}

func report(t *testing.T, title string, all []crsCase, res map[string]outcome, expected func(crsCase, outcome) string) {
	t.Helper()
	passed, failed, skipped := 0, 0, 0
	reasons := map[string][]string{}
	for _, c := range all {
		if r := corazaIgnored[c.name]; r != "" {
			skipped++
			reasons[r] = append(reasons[r], c.name)
			continue
		}
		o := res[c.name]
		if o.pass {
			passed++
			continue
		}
		if expected != nil {
			if r := expected(c, o); r != "" {
				skipped++
				reasons[r] = append(reasons[r], c.name)
				continue
			}
		}
		failed++
		t.Errorf("%s %s: %s", c.name, c.file, o.reason)
	}
	overridden := 0
	for _, c := range all {
		if _, ok := corazaOverrides[c.name]; ok {
			overridden++
		}
	}
	t.Logf("CRS regression, %s: %d passed, %d failed, %d skipped (%d with Coraza's overridden expectations)", title, passed, failed, skipped, overridden)
	keys := make([]string, 0, len(reasons))
	for r := range reasons {
		keys = append(keys, r)
	}
	sort.Strings(keys)
	for _, r := range keys {
		names := reasons[r]
		sort.Strings(names)
		if len(names) > 12 && os.Getenv("CRS_VERBOSE") == "" {
			t.Logf("  skipped %4d: %s (%s, …)", len(names), r, strings.Join(names[:12], " "))
			continue
		}
		t.Logf("  skipped %4d: %s (%s)", len(names), r, strings.Join(names, " "))
	}
}
