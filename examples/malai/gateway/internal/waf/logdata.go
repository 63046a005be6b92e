package waf

import "regexp"

// The CRS's logdata actions, dropped from the gateway's rule files.
//
// A rule's logdata is the text a matched rule reports: the matched value
// and where it was found ("Matched Data: %{TX.0} found within
// %{MATCHED_VAR_NAME}: %{MATCHED_VAR}"). The gateway never reports it: its
// block log names the matched rule ids, since a matched value can be a
// password, a token or a card number, and its audit engine is off. Yet
// Coraza (v3.8) expands every rule's logdata macro when it starts
// evaluating the rule, matched or not, into a new string: a fifth of the
// allocations of an API call's inspection, for text nobody reads.
//
// Nothing a rule decides reads logdata (no CRS rule refers to
// %{rule.logdata}), so dropping it changes no detection; the CRS
// regression suite checks that against Coraza's default configuration,
// and TestLogdataDropped that every rule is still there.

// logdataAction is one logdata action as the CRS writes it: a line of its
// own inside a rule's actions, followed by more actions.
var logdataAction = regexp.MustCompile(`(?m)^[ \t]*logdata:'[^']*',\\\n`)

// dropLogdata removes every logdata action from a SecLang text in the
// CRS's layout; one written otherwise is left.
func dropLogdata(text string) string {
	return logdataAction.ReplaceAllLiteralString(text, "")
}
