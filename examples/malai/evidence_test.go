package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/malai-sec/malai/examples/malai/evidence"
)

// TestEvidencePass starts the whole system on loopback and runs every
// registered evidence check against it, each as its own subtest, in run
// order (read-only checks first, destructive ones last). With
// MALAI_TEST_POSTGRES_URL set the audit chain runs in PostgreSQL under a
// least-privilege role and the role checks run too. The report it writes
// must match its schema.
func TestEvidencePass(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system")
	}
	pg := os.Getenv("MALAI_TEST_POSTGRES_URL")
	if pg == "" && os.Getenv("MALAI_REQUIRE_SERVICES") == "1" {
		t.Fatal("MALAI_TEST_POSTGRES_URL is required")
	}
	ctx := context.Background()
	// With MALAI_TEST_REDIS_URL set (CI), limits, idempotency records and
	// the queue live in Redis under a prefix of this run's.
	l, err := startLocal(ctx, localEvidenceConfig{PostgresAdmin: pg, RedisURL: os.Getenv("MALAI_TEST_REDIS_URL")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.cleanup)
	f, err := evidence.NewFixture(ctx, l.Target(), l)
	if err != nil {
		t.Fatal(err)
	}
	f.OutDir = t.TempDir()
	var results []evidence.Result
	for _, c := range evidence.InRunOrder(evidence.Registry()) {
		t.Run(subtestName(c), func(t *testing.T) {
			r := evidence.RunCheck(ctx, f, c)
			results = append(results, r)
			switch {
			case r.Status == evidence.Fail:
				t.Error(r.Observed)
			case r.Status == evidence.NotRun && pg != "" && c.Row == evidence.RowRoles:
				t.Errorf("a role check did not run against PostgreSQL: %s", r.Observed)
			case r.Status == evidence.NotRun:
				t.Skip(r.Observed)
			default:
				t.Log(r.Observed)
			}
		})
	}
	rep := evidence.NewReport("local", l.describe(), l.Target().Gateway, results, nil)
	if err := rep.Write(f.OutDir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(f.OutDir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := evidence.Validate(b); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(f.OutDir, evidence.SampleFile)); err != nil {
		t.Errorf("no audit sample written: %v", err)
	}
}

// subtestName is the check's id without the slash -run would split on.
func subtestName(c evidence.Check) string { return strings.ReplaceAll(c.ID(), " / ", ": ") }
