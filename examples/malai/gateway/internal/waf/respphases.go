package waf

import (
	"fmt"
	"io/fs"
	"regexp"
	"strconv"
	"strings"
	"sync"

	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"
)

// Response phases with nothing to inspect.
//
// Coraza runs phases 3 and 4 over every response, whether or not it
// inspects the body: on a response of a media type the configuration does
// not inspect (the services' JSON, problem+json, images) the body rules
// see nothing, yet every rule of the two phases is walked, its paranoia
// markers matched, its macros expanded. That is a fifth of an API GET's
// inspection time. When no rule of those phases reads anything but the
// body and the transaction's own variables, their outcome on such a
// response is fixed: nothing can match what is not there, and the
// outbound anomaly score only the body rules raise stays 0. The WAF then
// skips the two phases for such responses. One rule that reads a
// response header or the status at the configured paranoia level (the
// CRS's 950100 reads the status from level 2; a rule of the caller's own
// in phase 3) and the phases run on every response, as before.

// respPhasesInert reports whether phases 3 and 4 of the rule set that
// directives configure, over the rule files (readRules), can act on a response
// whose body is not inspected; if not, why not (the first rule that can).
// A CRS rule counts unless removed or above paranoia level pl. Any rule
// of directives' own (the exclusions, the caller's rules) in phase 3 or 4
// keeps the phases on, whatever it reads.
func respPhasesInert(files []ruleFile, directives string, pl int, removed []string) (bool, string, error) {
	ranges, err := idRanges(removed)
	if err != nil {
		return false, "", err
	}
	// A detection level of the caller's own above the blocking level runs
	// the higher levels' rules too: count them all.
	lower := strings.ToLower(directives)
	if strings.Contains(lower, "detection_paranoia_level") {
		pl = 4
	}
	// The outbound score is the CRS's response rules' alone; one the
	// caller's rules touch could block a response whatever its body.
	if strings.Contains(lower, "outbound_anomaly_score") {
		return false, "the directives set the outbound anomaly score", nil
	}
	for _, r := range parseRules(directives) {
		if r.phase == 3 || r.phase == 4 {
			return false, fmt.Sprintf("rule %d (not the CRS's) runs in phase %d", r.id, r.phase), nil
		}
	}
	phase := map[int]int{}
	for _, f := range files {
		for _, r := range f.rules {
			phase[r.id] = r.phase
			if r.phase != 3 && r.phase != 4 || r.level > pl || inRanges(ranges, r.id) {
				continue
			}
			if why := r.actsOnResponse(); why != "" {
				return false, fmt.Sprintf("rule %d %s", r.id, why), nil
			}
		}
	}
	// A rule changed in place (its targets or actions) is no longer the
	// one scanned: by id, it must be one of the request phases'; by tag
	// or message, it could be any.
	for _, line := range logicalLines(directives) {
		rest, ok := strings.CutPrefix(line, "SecRuleUpdate")
		if !ok {
			continue
		}
		kind, args, _ := strings.Cut(rest, " ")
		if !strings.HasSuffix(kind, "ById") {
			return false, "SecRuleUpdate" + kind + " may change a response rule", nil
		}
		idText, _, _ := strings.Cut(strings.TrimSpace(args), " ")
		id, err := strconv.Atoi(idText)
		if p, known := phase[id]; err != nil || !known || p == 3 || p == 4 {
			return false, fmt.Sprintf("SecRuleUpdate%s %s may change a response rule", kind, idText), nil
		}
	}
	return true, "", nil
}

// ruleFile is one embedded rule file, parsed: the CRS's own (crs) or one
// the directives include before it (the recommended base, the setup).
type ruleFile struct {
	name  string
	crs   bool
	text  string
	rules []seclangRule
}

// embeddedRules are the rule files the WAF's directives use, read and
// parsed once: the response-phase check of every profile and the scan of
// the rules' targets share them.
var embeddedRules = sync.OnceValues(func() ([]ruleFile, error) {
	return readRules(coreruleset.FS)
})

// readRules reads and parses the CRS rule files in fsys and the two files
// the directives include before them.
func readRules(fsys fs.FS) ([]ruleFile, error) {
	names, err := fs.Glob(fsys, "@owasp_crs/*.conf")
	if err != nil || len(names) == 0 {
		return nil, fmt.Errorf("waf: CRS rule files not found: %v", err)
	}
	nCRS := len(names)
	names = append(names, "@coraza.conf-recommended", "@crs-setup.conf.example")
	out := make([]ruleFile, 0, len(names))
	for i, name := range names {
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("waf: %s: %w", name, err)
		}
		text := string(data)
		out = append(out, ruleFile{name: name, crs: i < nCRS, text: text, rules: parseRules(text)})
	}
	return out, nil
}

// seclangRule is one rule with its chained rules folded in: the head's
// id, phase, paranoia level and OWASP_CRS tag, every variable and action
// of the chain.
type seclangRule struct {
	id, phase, level int
	tagged           bool     // tagged OWASP_CRS
	vars             []string // collection names, upper case
	acts             bool     // an action that changes state or the answer
	ctl              bool     // a ctl action: changes the transaction's settings
	// bodyAbsent: a link matches on the body's absence (a negated
	// operator or a count over RESPONSE_BODY).
	bodyAbsent bool
}

var (
	ruleChain = regexp.MustCompile(`[",]\s*chain\s*[,"]`)
	ruleIDAny = regexp.MustCompile(`[",]\s*id:\s*'?(\d+)`)
	rulePhase = regexp.MustCompile(`[",]\s*phase:\s*'?(\d|request|response|logging)'?`)
	ruleLevel = regexp.MustCompile(`tag:'paranoia-level/(\d)'`)
	ruleCtl   = regexp.MustCompile(`(?:^|[",])\s*ctl\s*:`)
	// ruleActs finds the actions that change the transaction's state or
	// the answer; what is left (pass, nolog, log, msg, tag, skipAfter,
	// transformations, ...) only records or skips rules. A false match
	// (the word in a message) keeps the phases on: safe.
	ruleActs = regexp.MustCompile(`(?:^|[",])\s*(?:setvar|block|deny|drop|redirect|proxy|ctl|exec|allow|status|initcol|setuid|setsid|expirevar|deprecatevar)\s*[:,"']`)
)

// parseRules reads the SecRule and SecAction lines of a SecLang text. A
// rule without a phase runs in phase 2 (Coraza's default), without a
// paranoia tag at level 0 (always).
func parseRules(text string) []seclangRule {
	var out []seclangRule
	inChain := false
	for _, line := range logicalLines(text) {
		var vars, rest string
		switch {
		case strings.HasPrefix(line, "SecRule "):
			vars, rest, _ = strings.Cut(strings.TrimSpace(strings.TrimPrefix(line, "SecRule ")), " ")
		case strings.HasPrefix(line, "SecAction "):
			rest = strings.TrimPrefix(line, "SecAction ")
		default:
			continue
		}
		if !inChain {
			r := seclangRule{phase: 2}
			if m := ruleIDAny.FindStringSubmatch(line); m != nil {
				r.id, _ = strconv.Atoi(m[1])
			}
			if m := rulePhase.FindStringSubmatch(line); m != nil {
				switch m[1] {
				case "request":
					r.phase = 2
				case "response":
					r.phase = 4
				case "logging":
					r.phase = 5
				default:
					r.phase, _ = strconv.Atoi(m[1])
				}
			}
			if m := ruleLevel.FindStringSubmatch(line); m != nil {
				r.level, _ = strconv.Atoi(m[1])
			}
			r.tagged = strings.Contains(line, "tag:'OWASP_CRS'")
			out = append(out, r)
		}
		r := &out[len(out)-1]
		negated := strings.HasPrefix(strings.TrimSpace(rest), `"!`)
		for _, v := range strings.Split(vars, "|") {
			if strings.Contains(strings.ToUpper(v), "RESPONSE_BODY") && (negated || strings.HasPrefix(v, "&")) {
				r.bodyAbsent = true
			}
			v = strings.TrimLeft(v, "!&")
			if col, _, _ := strings.Cut(v, ":"); col != "" {
				r.vars = append(r.vars, strings.ToUpper(col))
			}
		}
		r.acts = r.acts || ruleActs.MatchString(rest)
		r.ctl = r.ctl || ruleCtl.MatchString(rest)
		inChain = ruleChain.MatchString(line)
	}
	return out
}

// actsOnResponse says what about r can act on a response whose body is
// not inspected, or "" when nothing can: r reads only the transaction's
// variables (the CRS's own score bookkeeping, which only the body rules
// feed in these phases) and the body, or it reads other parts of the
// response only to skip rules (the CRS's "compressed: skip the body
// rules" gates).
func (r seclangRule) actsOnResponse() string {
	if r.ctl {
		// It may switch the body's inspection on (responseBodyAccess,
		// forceResponseBodyVariable) or the rules' targets.
		return "changes the transaction's settings in phase " + strconv.Itoa(r.phase)
	}
	if r.acts && r.bodyAbsent {
		return "acts on an empty body in phase " + strconv.Itoa(r.phase)
	}
	for _, v := range r.vars {
		if v == "TX" || v == "RESPONSE_BODY" || !r.acts {
			continue
		}
		return "reads " + v + " in phase " + strconv.Itoa(r.phase)
	}
	return ""
}

// idRanges parses Profile.Remove entries.
func idRanges(ids []string) ([][2]int, error) {
	out := make([][2]int, 0, len(ids))
	for _, s := range ids {
		lo, hi, isRange := strings.Cut(s, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("waf: %q is not a rule id or a range of ids", s)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return nil, fmt.Errorf("waf: %q is not a rule id or a range of ids", s)
			}
		}
		out = append(out, [2]int{a, b})
	}
	return out, nil
}

func inRanges(ranges [][2]int, id int) bool {
	for _, r := range ranges {
		if id >= r[0] && id <= r[1] {
			return true
		}
	}
	return false
}
