package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/malai-sec/malai/examples/malai/evidence"
)

// TestEvidenceTarget runs the pass in -target mode against a system
// started separately: the malai binary in a process of its own, on free
// loopback ports, found through the endpoints.json and the demo
// credentials it writes (as a deployment hands a reviewer its gateway
// URL, CA and test accounts). Only the public interface is used; the
// checks that need the system's internals must be reported as not run,
// every other one must pass, the infrastructure claims must be listed as
// the deployment's responsibility, and the demo customers' money must be
// untouched.
func TestEvidenceTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the system as a separate process")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "malai")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	data := filepath.Join(dir, "data")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-data", data, "-quiet")
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	endpoints, creds := filepath.Join(data, "endpoints.json"), filepath.Join(data, "demo-credentials.json")
	if _, err := evidence.Eventually(ctx, 90*time.Second, func() (bool, string, error) {
		return strings.Contains(logs.String(), "is up") && fileExists(endpoints) && fileExists(creds), "waiting for " + endpoints, nil
	}); err != nil {
		t.Fatalf("the system did not come up: %v\n%s", err, logs.String())
	}
	target, err := evidence.LoadTarget(endpoints, creds, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := target.WithRole("teller"); !ok {
		t.Fatalf("no teller among the demo credentials: %+v", target.Users)
	}
	before := demoBalances(ctx, t, target)

	out := filepath.Join(dir, "report")
	rep, err := runTargetEvidence(ctx, out, endpoints, creds, "", "", evidence.Scans{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := evidence.Validate(b); err != nil {
		t.Fatal(err)
	}
	if rep.Mode != "target" || len(rep.Deployment) != len(evidence.Responsibilities()) {
		t.Fatalf("mode %q, %d deployment responsibilities, want %d", rep.Mode, len(rep.Deployment), len(evidence.Responsibilities()))
	}
	checks := map[string]evidence.Check{}
	for _, c := range evidence.Registry() {
		checks[c.ID()] = c
	}
	passed := 0
	for _, r := range rep.Results {
		c := checks[r.ID()]
		switch {
		case r.Status == evidence.Fail:
			t.Errorf("%s: %s", r.ID(), r.Observed)
		case c.Local && r.Status != evidence.NotRun:
			t.Errorf("%s needs the system's internals but ran against a deployment: %s %s", r.ID(), r.Status, r.Observed)
		case r.Status == evidence.Pass:
			passed++
		}
	}
	if passed < 20 {
		t.Errorf("only %d checks passed against the deployment", passed)
	}
	t.Logf("%d checks: %d passed, %d not run (local only)", len(rep.Results), passed, rep.Summary.NotRun)
	// Nothing beyond the pass's own test accounts was touched.
	if after := demoBalances(ctx, t, target); !equalBalances(before, after) {
		t.Errorf("the demo customers' balances changed: %v → %v", before, after)
	}
}

// syncBuffer is a bytes.Buffer safe for the process's two writers and
// the test's reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// demoBalances reads every demo customer's balance through the gateway.
func demoBalances(ctx context.Context, t *testing.T, target evidence.Target) map[string]int64 {
	t.Helper()
	f := &evidence.Fixture{Target: target}
	f.Client = evidence.NewClient(target)
	out := map[string]int64{}
	for _, c := range target.Users {
		// A customer with a second factor signs in in two steps; the
		// others' balances say as much.
		if c.AccountID == "" || c.TOTPSecret != "" {
			continue
		}
		u := &evidence.User{Name: c.Username, Password: c.Password, Account: c.AccountID}
		// After the pass this address may be over its per-IP limit for a
		// moment (the rate-limit check spends it): ask again.
		var bal int64
		if obs, err := evidence.Eventually(ctx, 90*time.Second, func() (bool, string, error) {
			if err := f.SignIn(ctx, u, nil); err != nil {
				return false, err.Error(), nil
			}
			var err error
			bal, err = f.Balance(ctx, u)
			return err == nil, fmt.Sprint(err), nil
		}); err != nil {
			t.Fatalf("demo customer %s: %v (%s)", c.Username, err, obs)
		}
		out[c.AccountID] = bal
	}
	if len(out) == 0 {
		t.Fatal("no demo customer with an account in the credentials file")
	}
	return out
}

func equalBalances(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
