package waf

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// What the pruning removes from the embedded CRS, at every level: the
// rules its place in the file puts above the level, which are exactly
// the rules tagged above it, and every paranoia marker.
func TestLevelPrunedCRS(t *testing.T) {
	files, err := embeddedRules()
	if err != nil {
		t.Fatal(err)
	}
	tags := ruleLevels(t)
	var markers []int
	for _, f := range files {
		for _, l := range logicalLines(f.text) {
			if m := levelMarker.FindStringSubmatch(l); m != nil {
				id, _ := strconv.Atoi(m[2])
				markers = append(markers, id)
			}
		}
	}
	if len(markers) != 184 {
		t.Fatalf("%d paranoia markers in the CRS files, want 184 (4 levels, 2 phases, 23 files)", len(markers))
	}
	for pl := 1; pl <= 4; pl++ {
		pruned, err := levelPruned(files, pl)
		if err != nil {
			t.Fatal(err)
		}
		rules := 0
		for _, id := range pruned {
			if slices.Contains(markers, id) {
				continue
			}
			rules++
			// An untagged rule goes by its place (921170, the
			// parameter counter of the level-3 pollution check).
			if tags[id] != 0 && tags[id] <= pl {
				t.Errorf("level %d: rule %d (tagged level %d) pruned", pl, id, tags[id])
			}
		}
		for id, lv := range tags {
			if lv > pl && !slices.Contains(pruned, id) {
				t.Errorf("level %d: rule %d tagged level %d kept", pl, id, lv)
			}
		}
		for _, id := range markers {
			if !slices.Contains(pruned, id) {
				t.Errorf("level %d: marker %d kept", pl, id)
			}
		}
		if pl < 4 && rules == 0 {
			t.Errorf("level %d: no rule pruned", pl)
		}
		t.Logf("level %d: %d rules and %d markers pruned", pl, rules, len(pruned)-rules)
	}
}

// A section's rules go with their chains; a marker of another form, one
// that skips elsewhere inside a section, or a section that never ends
// stops the pruning.
func TestLevelPrunedForms(t *testing.T) {
	const m = `SecRule TX:DETECTION_PARANOIA_LEVEL "@lt %d" "id:%d,phase:2,pass,nolog,tag:'OWASP_CRS',ver:'OWASP_CRS/4.25.0',skipAfter:END-X"`
	marker := func(n, id int) string {
		return strings.Replace(strings.Replace(m, "%d", strconv.Itoa(n), 1), "%d", strconv.Itoa(id), 1)
	}
	file := func(lines ...string) []ruleFile {
		return []ruleFile{{name: "test.conf", crs: true, text: strings.Join(lines, "\n")}}
	}
	good := file(
		marker(1, 1011),
		`SecRule ARGS "@rx a" "id:1100,phase:2,block,chain"`,
		`  SecRule ARGS "@rx b" "t:none"`,
		marker(2, 1013),
		`SecRule ARGS "@rx c" \`,
		`    "id:1200,phase:2,block,chain"`,
		`  SecRule ARGS "@rx d" "t:none,id:9"`,
		`SecAction "id:1201,phase:2,pass,nolog"`,
		marker(3, 1015),
		`SecRule ARGS "@rx e" "id:1300,phase:2,block"`,
		`SecMarker "END-X"`,
		`SecRule ARGS "@rx f" "id:1400,phase:2,block"`,
	)
	for pl, want := range map[int][]int{1: {1011, 1013, 1200, 1201, 1015, 1300}, 2: {1011, 1013, 1015, 1300}, 3: {1011, 1013, 1015}} {
		got, err := levelPruned(good, pl)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("level %d: pruned %v, %v; want %v", pl, got, err, want)
		}
	}
	// The same rules outside the CRS's files are never touched.
	notCRS := slices.Clone(good)
	notCRS[0].crs = false
	if got, err := levelPruned(notCRS, 1); err != nil || len(got) != 0 {
		t.Errorf("not a CRS file: pruned %v, %v", got, err)
	}
	// A gate on another operator is a rule like any other: it opens no
	// section, and is kept.
	other := file(marker(1, 1011), strings.Replace(marker(2, 1013), "@lt", "@le", 1), `SecRule ARGS "@rx c" "id:1200,phase:2,block"`, `SecMarker "END-X"`)
	if got, err := levelPruned(other, 1); err != nil || !slices.Equal(got, []int{1011}) {
		t.Errorf("a gate on @le: pruned %v, %v; want [1011]", got, err)
	}
	for name, bad := range map[string][]ruleFile{
		"a marker that also sets a variable": file(strings.Replace(marker(2, 1013), "nolog,", "nolog,setvar:tx.x=1,", 1), `SecMarker "END-X"`),
		"a marker skipping elsewhere":        file(marker(1, 1011), strings.Replace(marker(2, 1013), "END-X", "END-Y", 1), `SecMarker "END-X"`, `SecMarker "END-Y"`),
		"no end marker":                      file(marker(2, 1013), `SecRule ARGS "@rx c" "id:1200,phase:2,block"`),
		"a rule without an id":               file(marker(2, 1013), `SecRule ARGS "@rx c" "phase:2,block"`, `SecMarker "END-X"`),
	} {
		if got, err := levelPruned(bad, 1); err == nil {
			t.Errorf("%s: pruned %v", name, got)
		}
	}
}

// Only a rule set whose levels nothing but the configured level sets is
// pruned: directives of the caller's or the suite's that name a paranoia
// level keep every rule and marker, and so does Coraza's own
// configuration.
func TestDirectivesPruneOnlyFixedLevels(t *testing.T) {
	pruned := func(cfg Config) bool {
		for _, l := range strings.Split(Directives(cfg, ServiceProfile()), "\n") {
			if strings.HasPrefix(l, "SecRuleRemoveById") && slices.Contains(strings.Fields(l), "942014") {
				return true
			}
		}
		return false
	}
	raised := GatewayConfig()
	raised.AfterCRS = `SecAction "id:10990,phase:1,pass,nolog,setvar:tx.detection_paranoia_level=2"` + "\n"
	suite := GatewayConfig()
	suite.beforeCRS = crsTestSetup
	kept := GatewayConfig()
	kept.keepLevels = true
	for name, tc := range map[string]struct {
		cfg  Config
		want bool
	}{
		"the gateway's":              {GatewayConfig(), true},
		"level 3":                    {Config{ParanoiaLevel: 3}, true},
		"a level of the caller's":    {raised, false},
		"the suite's settings":       {suite, false},
		"every level kept":           {kept, false},
		"Coraza's own (comparisons)": {Config{rulesOverride: corazaDefault("")}, false},
	} {
		if got := pruned(tc.cfg); got != tc.want {
			t.Errorf("%s: pruned %v, want %v", name, got, tc.want)
		}
	}
}

// The behaviour the pruning must keep: at level 1 a level-2 detection
// (an HTML tag handler, 941320) passes; a caller who raises the levels in
// its own rules, and a rule set configured at level 2, refuse it; a
// level-1 attack is refused by all three.
func TestPrunedLevelsBlockAsBefore(t *testing.T) {
	raised := GatewayConfig()
	raised.AfterCRS = `SecAction "id:10990,phase:1,pass,nolog,setvar:tx.detection_paranoia_level=2,setvar:tx.blocking_paranoia_level=2"` + "\n"
	pl2 := GatewayConfig()
	pl2.ParanoiaLevel = 2
	for _, tc := range []struct {
		name string
		cfg  Config
		want map[string]int
	}{
		{"level 1", GatewayConfig(), map[string]int{"/search?q=hello": 200, "/search?q=<abbr%20title=x>": 200, "/search?q=;ls": 403}},
		{"raised by the caller's rule", raised, map[string]int{"/search?q=hello": 200, "/search?q=<abbr%20title=x>": 403, "/search?q=;ls": 403}},
		{"level 2", pl2, map[string]int{"/search?q=hello": 200, "/search?q=<abbr%20title=x>": 403, "/search?q=;ls": 403}},
	} {
		h := newSuiteWAF(t, tc.cfg).Handler(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { rw.WriteHeader(200) }))
		for target, want := range tc.want {
			r := httptest.NewRequest("GET", target, nil)
			r.Header.Set("User-Agent", "Mozilla/5.0")
			r.Header.Set("Accept", "text/html")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != want {
				t.Errorf("%s: GET %s = %d, want %d", tc.name, target, rec.Code, want)
			}
		}
	}
}
