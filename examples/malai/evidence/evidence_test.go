package evidence

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/malai-sec/malai/examples/malai/ledger"
)

// pageRows are the rows of the security page a check may name.
var pageRows = map[string]bool{
	RowTLS: true, RowHeaders: true, RowWAF: true, RowAuthentication: true, RowSignIn: true,
	RowAuthorization: true, RowInterService: true, RowTokens: true, RowEncryption: true,
	RowSecrets: true, RowRoles: true, RowAudit: true, RowPrivateDB: true, RowIdempotency: true, RowLogging: true,
}

func TestRegistryIsWellFormed(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Registry() {
		if !pageRows[c.Row] {
			t.Errorf("%s: row %q is not a row of the security page", c.ID(), c.Row)
		}
		if c.Name == "" || c.Run == nil {
			t.Errorf("%s: no name or no Run", c.ID())
		}
		if seen[c.ID()] {
			t.Errorf("%s: registered twice", c.ID())
		}
		seen[c.ID()] = true
	}
	for _, d := range Responsibilities() {
		if !pageRows[d.Row] {
			t.Errorf("deployment responsibility names row %q, not a row of the security page", d.Row)
		}
	}
}

func TestDestructiveChecksRunLast(t *testing.T) {
	cs := []Check{
		{Name: "stops", Effect: Stops}, {Name: "a"}, {Name: "degrades", Effect: Degrades},
		{Name: "b"}, {Name: "restarts", Effect: Restarts}, {Name: "c"},
	}
	var got []string
	for _, c := range InRunOrder(cs) {
		got = append(got, c.Name)
	}
	if want := "a b c restarts degrades stops"; strings.Join(got, " ") != want {
		t.Fatalf("run order %v, want %s", got, want)
	}
	last := ReadOnly
	for _, c := range InRunOrder(Registry()) {
		if c.Effect < last {
			t.Fatalf("%s (%s) runs after a %s check", c.ID(), c.Effect, last)
		}
		last = c.Effect
	}
}

func TestRunCheckOutcomes(t *testing.T) {
	ctx := context.Background()
	f := &Fixture{}
	for _, tc := range []struct {
		name string
		c    Check
		want Status
		obs  string
	}{
		{"pass", Check{Run: func(context.Context, *Fixture) (string, error) { return "saw it", nil }}, Pass, "saw it"},
		{"fail", Check{Run: func(context.Context, *Fixture) (string, error) { return "saw", errors.New("boom") }}, Fail, "saw — FAILED: boom"},
		{"not applicable", Check{Run: func(context.Context, *Fixture) (string, error) { return "", NotApplicable("no database") }}, NotRun, "evidence: not applicable: no database"},
		{"local check against a deployment", Check{Local: true, Run: func(context.Context, *Fixture) (string, error) { panic("must not run") }}, NotRun, "needs a system the pass started"},
		{"panic", Check{Run: func(context.Context, *Fixture) (string, error) { panic("kaboom") }}, Fail, "FAILED: check panicked: kaboom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := RunCheck(ctx, f, tc.c)
			if r.Status != tc.want || !strings.HasPrefix(r.Observed, tc.obs) {
				t.Fatalf("got %s %q, want %s %q…", r.Status, r.Observed, tc.want, tc.obs)
			}
		})
	}
}

func TestEventually(t *testing.T) {
	ctx := context.Background()
	n := 0
	obs, err := Eventually(ctx, 10*time.Second, func() (bool, string, error) { n++; return n == 3, "n", nil })
	if err != nil || obs != "n" || n != 3 {
		t.Fatalf("Eventually: %q %v after %d tries", obs, err, n)
	}
	// Never done: it gives up at its deadline with the last error.
	_, err = Eventually(ctx, 30*time.Millisecond, func() (bool, string, error) { return false, "x", errors.New("not yet") })
	if err == nil || !strings.Contains(err.Error(), "not yet") {
		t.Fatalf("Eventually never done: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Eventually(cancelled, time.Hour, func() (bool, string, error) { return false, "", nil }); err == nil {
		t.Fatal("Eventually ignored a cancelled context")
	}
}

func sampleReport() *Report {
	return NewReport("local", "One process.", "https://127.0.0.1:8443", []Result{
		{Row: RowTLS, Check: "TLS 1.0 refused", Status: Pass, Observed: "handshake refused", Effect: "read-only"},
		{Row: RowTLS, Check: "pipes | and\nnewlines <script>", Status: Fail, Observed: "a|b\nc", Effect: "degrades"},
		{Row: RowRoles, Check: "role", Status: NotRun, Observed: "no database", Effect: "read-only", Local: true},
	}, []Attachment{{Name: "sample", File: SampleFile, Summary: "rows"}})
}

func TestReportMatchesItsSchema(t *testing.T) {
	dir := t.TempDir()
	rep := sampleReport()
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(b); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || back.Summary.Pass != 1 || back.Summary.Fail != 1 || back.Summary.NotRun != 1 {
		t.Fatalf("summary: %+v %v", back.Summary, err)
	}
	// The schema refuses what a report must not be.
	for name, mutate := range map[string]func(m map[string]any){
		"unknown status": func(m map[string]any) { m["results"].([]any)[0].(map[string]any)["status"] = "passed" },
		"no results":     func(m map[string]any) { m["results"] = []any{} },
		"extra member":   func(m map[string]any) { m["verdict"] = "fine" },
		"plain http":     func(m map[string]any) { m["gateway"] = "http://x" },
		"bad date":       func(m map[string]any) { m["generated"] = "yesterday" },
	} {
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		mutate(m)
		bad, _ := json.Marshal(m)
		if Validate(bad) == nil {
			t.Errorf("%s: the schema accepted it", name)
		}
	}
}

func TestMarkdownTablesSurviveTheirCells(t *testing.T) {
	md := sampleReport().Markdown()
	for _, want := range []string{
		"| ✅ pass | TLS 1.0 refused | handshake refused |",
		"| ❌ **FAIL** | pipes \\| and<br>newlines &lt;script> *(destructive: degrades)* | a\\|b<br>c |",
		"| ➖ not run | role | no database |",
		"[TLS at the edge](#tls-at-the-edge) | 1 | **1** | 0 |",
		"## Deployment responsibility",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("REPORT.md lacks %q:\n%s", want, md)
		}
	}
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "| ") && strings.Count(strings.ReplaceAll(line, "\\|", ""), "|") < 4 {
			t.Errorf("table row with too few cells: %q", line)
		}
	}
}

// TestCommittedReport checks the report committed at the repository root:
// it matches the schema, it is the schema's own copy, and no check failed.
func TestCommittedReport(t *testing.T) {
	root := filepath.Join("..", "..", "..", "evidence")
	b, err := os.ReadFile(filepath.Join(root, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(b); err != nil {
		t.Fatal(err)
	}
	sch, err := os.ReadFile(filepath.Join(root, "report.schema.json"))
	if err != nil || string(sch) != string(Schema) {
		t.Fatalf("evidence/report.schema.json is not the schema the pass writes (%v)", err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Summary.Fail != 0 {
		t.Fatalf("the committed report records %d failed checks", rep.Summary.Fail)
	}
	if md, err := os.ReadFile(filepath.Join(root, "REPORT.md")); err != nil || string(md) != rep.Markdown() {
		t.Errorf("evidence/REPORT.md is not the rendering of evidence/report.json (%v)", err)
	}
	// A PostgreSQL-and-Redis run with the scans: every registered check
	// ran, and nothing was left out.
	if rep.Mode != "local" || !strings.Contains(rep.System, "PostgreSQL") || !strings.Contains(rep.System, "in Redis") {
		t.Errorf("the committed report is not of a local PostgreSQL-and-Redis run: %s %q", rep.Mode, rep.System)
	}
	ran := map[string]Status{}
	for _, r := range rep.Results {
		ran[r.ID()] = r.Status
	}
	for _, c := range Registry() {
		if st, ok := ran[c.ID()]; !ok || st != Pass {
			t.Errorf("the committed report has %s as %q: regenerate it (go run ./examples/malai evidence -out evidence -scans …)", c.ID(), st)
		}
	}
	files := map[string]bool{}
	for _, a := range rep.Attachments {
		files[a.File] = true
		if _, err := os.Stat(filepath.Join(root, a.File)); err != nil {
			t.Errorf("attachment %s: %v", a.File, err)
		}
	}
	for _, f := range []string{SampleFile, VerifierFile, TestSSLFile, ObservatoryFile} {
		if !files[f] {
			t.Errorf("the committed report attaches no %s", f)
		}
	}
	// The sample verifies with the published keys alone, as a reviewer
	// would check it.
	sample, err1 := os.ReadFile(filepath.Join(root, SampleFile))
	keys, err2 := os.ReadFile(filepath.Join(root, VerifierFile))
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	n, err := VerifySampleFile(sample, keys, ledger.AuditOrigin)
	if err != nil || n == 0 {
		t.Fatalf("the committed audit sample does not verify (%d rows): %v", n, err)
	}
}

func TestPendingChecksAreNotRegistered(t *testing.T) {
	reg := map[string]bool{}
	for _, c := range Registry() {
		reg[c.ID()] = true
	}
	for _, p := range PendingChecks() {
		if reg[p.Check.ID()] {
			t.Errorf("%s is registered and still listed as pending (%s)", p.Check.ID(), p.Waits)
		}
		if p.Waits == "" || p.Check.Run == nil {
			t.Errorf("%s: pending without a reason or a Run", p.Check.ID())
		}
	}
}
