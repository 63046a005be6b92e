package waf

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Rules above the paranoia level, removed when the rule set is built.
//
// Each CRS file gates its rules by paranoia level at run time: a marker
// rule per level and phase (`SecRule TX:DETECTION_PARANOIA_LEVEL "@lt 2"
// … skipAfter:END-…`) skips the rest of the file when the transaction's
// detection level is below it. At level 1 every request walks 184 such
// markers in phases 1 and 2; half of them match, and each match is a
// MatchedRule, updates to the MATCHED_* collections and a skip: a tenth
// of a clean API call's allocations, for rules that can never run. When
// nothing in the configuration can change the detection level of a
// transaction (the gateway sets only the blocking level, at start-up;
// the detection level follows it), the outcome of every marker is fixed:
// the WAF removes the rules above the level and all the markers, which
// leaves exactly the rules that ran before, in the same order.

// levelMarker is a CRS paranoia marker, in the exact form the CRS writes
// it. A line that starts like one and is not exactly this stops the
// pruning (levelPruned returns an error): a marker that does more than
// skip is not one to remove.
var (
	levelMarkerStart = regexp.MustCompile(`^SecRule\s+TX:DETECTION_PARANOIA_LEVEL\s+"!?@lt\s`)
	levelMarker      = regexp.MustCompile(`^SecRule TX:DETECTION_PARANOIA_LEVEL "@lt ([1-4])" "id:(\d+),phase:[1-5],pass,nolog,tag:'OWASP_CRS',ver:'OWASP_CRS/[0-9.]+',skipAfter:([A-Za-z0-9_-]+)"$`)
)

// levelsFixed reports whether nothing in cfg beyond the gateway's own
// setting can change a transaction's paranoia levels (the caller's rules
// or the regression suite's settings, which run every level).
func levelsFixed(cfg Config) bool {
	extra := strings.ToLower(cfg.AfterCRS + cfg.beforeCRS)
	return cfg.rulesOverride == "" && !cfg.keepLevels && !strings.Contains(extra, "paranoia_level")
}

// levelPruned returns the ids of the CRS rules that can never run at
// detection paranoia level pl, by their place in their file (after the
// marker of a level above pl, up to that marker's skipAfter target; as
// Coraza decides at run time), and the ids of every paranoia marker.
// Chained rules go with their head.
func levelPruned(files []ruleFile, pl int) ([]int, error) {
	var out []int
	for _, f := range files {
		if !f.crs {
			continue
		}
		level, end, inChain := 0, "", false
		for _, line := range logicalLines(f.text) {
			if name, ok := strings.CutPrefix(line, "SecMarker "); ok {
				if strings.Trim(strings.TrimSpace(name), `"'`) == end {
					level, end = 0, ""
				}
				continue
			}
			head := !inChain && (strings.HasPrefix(line, "SecRule ") || strings.HasPrefix(line, "SecAction "))
			if strings.HasPrefix(line, "SecRule ") || strings.HasPrefix(line, "SecAction ") {
				inChain = ruleChain.MatchString(line)
			}
			if !head {
				continue
			}
			if levelMarkerStart.MatchString(line) {
				m := levelMarker.FindStringSubmatch(line)
				if m == nil {
					return nil, fmt.Errorf("waf: %s: a paranoia marker of another form: %.80s", f.name, line)
				}
				n, _ := strconv.Atoi(m[1])
				id, _ := strconv.Atoi(m[2])
				if end != "" && m[3] != end {
					return nil, fmt.Errorf("waf: %s: marker %d skips to %s inside the section ending at %s", f.name, id, m[3], end)
				}
				out = append(out, id)
				level, end = max(level, n), m[3]
				continue
			}
			if level <= pl {
				continue
			}
			mm := ruleIDAny.FindStringSubmatch(line)
			if mm == nil {
				return nil, fmt.Errorf("waf: %s: a rule without an id above paranoia level %d", f.name, pl)
			}
			id, _ := strconv.Atoi(mm[1])
			out = append(out, id)
		}
		if end != "" {
			return nil, fmt.Errorf("waf: %s: no SecMarker %s", f.name, end)
		}
	}
	return out, nil
}

// writeLevelPruning removes from the rule set what levelPruned lists, in
// lines of at most 64 ids. Should the embedded rule files not scan, it
// removes nothing: the markers then skip at run time, as before (slower,
// the same rules).
func writeLevelPruning(b *strings.Builder, cfg Config) {
	if !levelsFixed(cfg) {
		return
	}
	files, err := embeddedRules()
	if err != nil {
		return
	}
	// New sets the level before it builds the directives; a Config
	// straight from a caller may still hold 0, which means 1.
	ids, err := levelPruned(files, max(cfg.ParanoiaLevel, 1))
	if err != nil {
		return
	}
	for i := 0; i < len(ids); i += 64 {
		b.WriteString("SecRuleRemoveById")
		for _, id := range ids[i:min(i+64, len(ids))] {
			fmt.Fprintf(b, " %d", id)
		}
		b.WriteString("\n")
	}
}
