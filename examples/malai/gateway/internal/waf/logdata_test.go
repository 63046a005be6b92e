package waf

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

var ruleID = regexp.MustCompile(`\bid:(\d+)`)

// TestLogdataDropped checks that the gateway's CRS files carry no logdata
// and every rule of the originals, with the same ids in the same order.
func TestLogdataDropped(t *testing.T) {
	files, err := embeddedRules()
	if err != nil {
		t.Fatal(err)
	}
	screened, err := screenedRules()
	if err != nil {
		t.Fatal(err)
	}
	dropped := 0
	for _, f := range files {
		if !f.crs {
			continue
		}
		got := string(screened[f.name])
		if strings.Contains(got, "logdata:") {
			t.Errorf("%s: a logdata action is left", f.name)
		}
		dropped += strings.Count(f.text, "logdata:")
		want := ruleID.FindAllString(f.text, -1)
		if ids := ruleID.FindAllString(got, -1); !slices.Equal(ids, want) {
			t.Errorf("%s: rule ids %d, want the original's %d", f.name, len(ids), len(want))
		}
	}
	if dropped < 300 {
		t.Fatalf("%d logdata actions dropped, want the CRS's ~328", dropped)
	}
}

func TestDropLogdata(t *testing.T) {
	in := "SecRule ARGS \"@rx a\" \\\n    \"id:1,\\\n    logdata:'Matched Data: %{TX.0} found within %{MATCHED_VAR_NAME}',\\\n    severity:'CRITICAL'\"\n" +
		"SecRule ARGS \"@rx b\" \"id:2,logdata:'last',pass\"\n"
	want := "SecRule ARGS \"@rx a\" \\\n    \"id:1,\\\n    severity:'CRITICAL'\"\n" +
		"SecRule ARGS \"@rx b\" \"id:2,logdata:'last',pass\"\n"
	if got := dropLogdata(in); got != want {
		t.Errorf("dropLogdata:\n%s\nwant\n%s", got, want)
	}
}
