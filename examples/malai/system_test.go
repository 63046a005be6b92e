package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestModuleFencesFailTheBuild proves the build-time fence: a ledger file
// importing the identity domain's internals does not compile. The file is
// added through -overlay, so the tree is never touched.
func TestModuleFencesFailTheBuild(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "fence_violation.go")
	if err := os.WriteFile(bad, []byte("package ledger\n\nimport _ \"github.com/malai-sec/malai/examples/malai/identity/internal/strictjson\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	overlay, _ := json.Marshal(map[string]any{"Replace": map[string]string{filepath.Join(wd, "ledger", "fence_violation.go"): bad}})
	ov := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(ov, overlay, 0o644); err != nil {
		t.Fatal(err)
	}
	// Control: the same build without the overlay compiles.
	if out, err := exec.Command(gobin, "build", "./ledger").CombinedOutput(); err != nil {
		t.Fatalf("ledger does not build on its own: %v\n%s", err, out)
	}
	out, err := exec.Command(gobin, "build", "-overlay", ov, "./ledger").CombinedOutput()
	if err == nil {
		t.Fatal("a cross-domain import of identity's internals compiled")
	}
	if !strings.Contains(string(out), "use of internal package") {
		t.Fatalf("build failed for another reason: %s", out)
	}
}

// TestDomainFences proves the import fences between domains: the gateway
// imports no domain package (it gets the route tables as data), and the
// ledger and identity never import each other (the worker imports
// neither), so a domain can only reach another over the network, through
// its route table.
func TestDomainFences(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	const base = "github.com/malai-sec/malai/examples/malai/"
	forbidden := map[string][]string{
		"gateway":  {"identity", "ledger", "worker", "web", "evidence"},
		"identity": {"ledger", "worker", "gateway", "web", "evidence"},
		"ledger":   {"identity", "worker", "gateway", "web", "evidence"},
		"worker":   {"identity", "ledger", "gateway", "web", "evidence"},
	}
	isDomain := func(pkg, d string) bool { return pkg == base+d || strings.HasPrefix(pkg, base+d+"/") }
	for from, banned := range forbidden {
		out, err := exec.Command(gobin, "list", "-deps", "./"+from).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", from, err)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 {
			t.Fatalf("go list %s listed only %d packages", from, len(deps))
		}
		for _, dep := range deps {
			for _, d := range banned {
				if isDomain(dep, d) {
					t.Errorf("%s imports %s (domain %s)", from, dep, d)
				}
			}
		}
	}
}
