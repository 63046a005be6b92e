package waf

import (
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
)

// crsReaders lists, per collection, the ids of the CRS rules (tagged
// OWASP_CRS) that read it, and under "!" and the collection's name the
// untagged rules that do. A chain counts under its first rule's id when
// any rule of the chain names the collection among its variables (whole,
// by key, negated or counted).
//
// Why: ctl:ruleRemoveTargetByTag=OWASP_CRS walks every one of the ~700
// rules on every request it fires on, and stores an exception for each
// (14 % of a request's WAF time, measured with a bearer token removed
// that way). An exception on a collection matters only to a rule that
// reads that collection, so naming those rules by id removes the same
// targets from the same rules. A rule this scan missed would go on
// inspecting the value: an error here costs CPU, never a detection.
var crsReaders = sync.OnceValues(func() (map[string][]int, error) {
	files, err := embeddedRules()
	if err != nil {
		return nil, err
	}
	return readersOf(files)
})

// scanCRS is crsReaders over the rule files in fsys.
func scanCRS(fsys fs.FS) (map[string][]int, error) {
	files, err := readRules(fsys)
	if err != nil {
		return nil, err
	}
	return readersOf(files)
}

func readersOf(files []ruleFile) (map[string][]int, error) {
	out := map[string][]int{}
	for _, f := range files {
		if !f.crs {
			continue
		}
		for _, r := range f.rules {
			if r.id == 0 {
				return nil, fmt.Errorf("waf: %s: rule without an id", f.name)
			}
			for _, col := range r.vars {
				if !r.tagged {
					// ctl:ruleRemoveTargetByTag=OWASP_CRS never touched
					// it: no range may hold it.
					col = "!" + col
				}
				if ids := out[col]; len(ids) == 0 || ids[len(ids)-1] != r.id {
					out[col] = append(ids, r.id)
				}
			}
		}
	}
	for _, ids := range out {
		slices.Sort(ids)
	}
	return out, nil
}

// logicalLines joins the lines ending in a backslash with the next.
func logicalLines(s string) []string {
	var out []string
	var cur strings.Builder
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimRight(l, "\r")
		if strings.HasSuffix(l, "\\") {
			cur.WriteString(strings.TrimSuffix(l, "\\"))
			continue
		}
		cur.WriteString(l)
		out = append(out, strings.TrimSpace(cur.String()))
		cur.Reset()
	}
	return out
}

// removeTarget writes ctl actions removing target (COLLECTION:key) from
// every CRS rule that reads the collection. Should the embedded rule
// files not scan, it removes the target by tag, as before: slower, the
// same rules.
func removeTarget(b *strings.Builder, target string) {
	readers, err := crsReaders()
	col, _, _ := strings.Cut(target, ":")
	ids, untagged := readers[col], readers["!"+col]
	if err != nil || len(ids) == 0 {
		fmt.Fprintf(b, ",ctl:ruleRemoveTargetByTag=OWASP_CRS;%s", target)
		return
	}
	for i := 0; i < len(ids); {
		// As few ranges as the untagged readers allow: the rules
		// between two readers do not read the collection, so the
		// exception changes nothing for them, and each ctl walks the
		// whole rule list (copying every rule) however few its range
		// holds.
		j := i
		for j+1 < len(ids) && !slices.ContainsFunc(untagged, func(u int) bool { return u > ids[i] && u < ids[j+1] }) {
			j++
		}
		if i == j {
			fmt.Fprintf(b, ",ctl:ruleRemoveTargetById=%d;%s", ids[i], target)
		} else {
			fmt.Fprintf(b, ",ctl:ruleRemoveTargetById=%d-%d;%s", ids[i], ids[j], target)
		}
		i = j + 1
	}
}
