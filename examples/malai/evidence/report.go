package evidence

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Schema is the JSON Schema (2020-12) of report.json; the pass writes it
// beside the report as report.schema.json.
//
//go:embed report.schema.json
var Schema []byte

// Report is what a pass writes: report.json, and REPORT.md rendered from
// it.
type Report struct {
	Schema    string    `json:"$schema"`
	Generated time.Time `json:"generated"`
	// Mode is "local" (a system the pass started) or "target" (a running
	// deployment).
	Mode string `json:"mode"`
	// System says what ran where (stores, processes), in one sentence.
	System  string `json:"system"`
	Gateway string `json:"gateway"`
	Summary struct {
		Pass   int `json:"pass"`
		Fail   int `json:"fail"`
		NotRun int `json:"not_run"`
	} `json:"summary"`
	Results []Result `json:"results"`
	// Pending are checks written for guarantees not built yet.
	Pending []PendingResult `json:"pending"`
	// Deployment lists the claims that live in infrastructure, with the
	// configuration this system expects; the pass never marks them passed.
	Deployment []Responsibility `json:"deployment"`
	// Attachments are further evidence files written beside the report.
	Attachments []Attachment `json:"attachments"`
}

// PendingResult is a pending check as the report lists it.
type PendingResult struct {
	Row   string `json:"row"`
	Check string `json:"check"`
	Waits string `json:"waits"`
}

// Attachment names a file of further evidence beside the report.
type Attachment struct {
	Name    string `json:"name"`
	File    string `json:"file"`
	Summary string `json:"summary"`
}

// NewReport summarises results.
func NewReport(mode, system, gateway string, results []Result, attachments []Attachment) *Report {
	r := &Report{Schema: "report.schema.json", Generated: time.Now().UTC().Truncate(time.Second), Mode: mode, System: system,
		Gateway: gateway, Results: results, Deployment: Responsibilities(), Attachments: attachments}
	if r.Results == nil {
		r.Results = []Result{}
	}
	r.Pending = []PendingResult{}
	for _, p := range PendingChecks() {
		r.Pending = append(r.Pending, PendingResult{Row: p.Check.Row, Check: p.Check.Name, Waits: p.Waits})
	}
	if r.Attachments == nil {
		r.Attachments = []Attachment{}
	}
	for _, res := range results {
		switch res.Status {
		case Pass:
			r.Summary.Pass++
		case Fail:
			r.Summary.Fail++
		case NotRun:
			r.Summary.NotRun++
		}
	}
	return r
}

// Write writes report.json, report.schema.json and REPORT.md into dir.
func (r *Report) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := Validate(b); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.schema.json"), Schema, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "REPORT.md"), []byte(r.Markdown()), 0o644)
}

// Markdown renders the report for GitHub: a summary, one table per
// security-page row, the deployment's responsibilities and the
// attachments.
func (r *Report) Markdown() string {
	var md strings.Builder
	md.WriteString("# Malai evidence report\n\n")
	if r.Mode == "target" {
		fmt.Fprintf(&md, "Produced by `go run ./examples/malai evidence -target %s` against a running deployment.\n", r.Gateway)
	} else {
		md.WriteString("Produced by `go run ./examples/malai evidence` against a fresh system it started on loopback.\n")
	}
	fmt.Fprintf(&md, "%s Generated %s.\n\n", r.System, r.Generated.Format(time.RFC3339))
	fmt.Fprintf(&md, "**%d passed, %d failed, %d not run** (of %d checks). ", r.Summary.Pass, r.Summary.Fail, r.Summary.NotRun, len(r.Results))
	md.WriteString("Every check attacks or faults the system and names what it observed; " +
		"a check marked *destructive* ran after every other one because it stops, restarts or degrades the system. " +
		"Claims that live in infrastructure are listed under [Deployment responsibility](#deployment-responsibility), never as passed.\n\n" +
		"Each check can fail: `TestEvidenceChecksCanFail` ([examples/malai/evidence_canfail_test.go](../examples/malai/evidence_canfail_test.go)) " +
		"runs the pass against a system with one feature switched off and expects exactly that feature's checks to fail; " +
		"the few checks without such a proof are listed there with the reason.\n\n")

	var rows []string
	byRow := map[string][]Result{}
	for _, res := range r.Results {
		if _, ok := byRow[res.Row]; !ok {
			rows = append(rows, res.Row)
		}
		byRow[res.Row] = append(byRow[res.Row], res)
	}
	md.WriteString("| security-page row | passed | failed | not run |\n|---|---:|---:|---:|\n")
	for _, row := range rows {
		var p, f, n int
		for _, res := range byRow[row] {
			switch res.Status {
			case Pass:
				p++
			case Fail:
				f++
			default:
				n++
			}
		}
		fmt.Fprintf(&md, "| [%s](#%s) | %d | %s | %d |\n", row, anchor(row), p, failCount(f), n)
	}
	for _, row := range rows {
		fmt.Fprintf(&md, "\n## %s\n\n| result | check | observed |\n|---|---|---|\n", row)
		for _, res := range byRow[row] {
			name := cell(res.Check)
			if res.Effect != ReadOnly.String() {
				name += " *(destructive: " + res.Effect + ")*"
			}
			fmt.Fprintf(&md, "| %s | %s | %s |\n", mark(res.Status), name, cell(res.Observed))
		}
	}
	if len(r.Pending) > 0 {
		md.WriteString("\n## Not yet checked\n\n" +
			"Checks written for guarantees of the security page whose feature is not built yet; they join the pass when it is.\n\n" +
			"| security-page row | check | waits for |\n|---|---|---|\n")
		for _, p := range r.Pending {
			fmt.Fprintf(&md, "| %s | %s | %s |\n", cell(p.Row), cell(p.Check), cell(p.Waits))
		}
	}
	md.WriteString("\n## Deployment responsibility\n\n" +
		"These claims of the security page are properties of the infrastructure a deployment runs on. " +
		"This pass cannot observe them from a loopback system or through the gateway; " +
		"a reviewer should ask the deployment for the configuration below.\n\n" +
		"| security-page row | claim | what this system expects |\n|---|---|---|\n")
	for _, d := range r.Deployment {
		fmt.Fprintf(&md, "| %s | %s | %s |\n", cell(d.Row), cell(d.Claim), cell(d.Expected))
	}
	if len(r.Attachments) > 0 {
		md.WriteString("\n## Attachments\n\n| evidence | file | summary |\n|---|---|---|\n")
		for _, a := range r.Attachments {
			fmt.Fprintf(&md, "| %s | [%s](%s) | %s |\n", cell(a.Name), a.File, a.File, cell(a.Summary))
		}
	}
	return md.String()
}

func mark(s Status) string {
	switch s {
	case Pass:
		return "✅ pass"
	case Fail:
		return "❌ **FAIL**"
	}
	return "➖ not run"
}

func failCount(n int) string {
	if n == 0 {
		return "0"
	}
	return fmt.Sprintf("**%d**", n)
}

// cell makes s safe inside a Markdown table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "&", "&amp;")
	s = strings.ReplaceAll(s, "<", "&lt;")
	s = strings.ReplaceAll(s, "|", "\\|")
	s = strings.ReplaceAll(s, "\r", "")
	return strings.ReplaceAll(s, "\n", "<br>")
}

// anchor is GitHub's heading anchor for a heading text.
func anchor(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// Validate checks a report.json document against [Schema], formats
// included.
func Validate(reportJSON []byte) error {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(Schema))
	if err != nil {
		return fmt.Errorf("evidence: schema: %w", err)
	}
	const id = "https://github.com/malai-sec/malai/evidence/report.schema.json"
	if err := c.AddResource(id, doc); err != nil {
		return fmt.Errorf("evidence: schema: %w", err)
	}
	sch, err := c.Compile(id)
	if err != nil {
		return fmt.Errorf("evidence: schema: %w", err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(reportJSON))
	if err != nil {
		return fmt.Errorf("evidence: report: %w", err)
	}
	if err := sch.Validate(v); err != nil {
		return fmt.Errorf("evidence: report does not match its schema: %w", err)
	}
	return nil
}
