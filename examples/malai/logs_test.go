package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/malai-sec/malai/examples/malai/internal/platform"
)

// logsChildEnv makes the test binary play a component that writes a log
// stream and then hangs until it is killed (TestLogsHelperProcess).
const logsChildEnv = "MALAI_TEST_LOGS_CHILD"

// TestLogsHelperProcess is not a test: it is the child process of
// TestLogsReadsAStreamCutBySIGKILL.
func TestLogsHelperProcess(t *testing.T) {
	dir := os.Getenv(logsChildEnv)
	if dir == "" {
		t.Skip("helper process only")
	}
	keys, err := platform.LoadKeys(dir)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	ring, _ := keys.Ring()
	tele, err := platform.NewTelemetry(platform.TelemetryConfig{Component: platform.Gateway, LogDir: filepath.Join(dir, "logs"), Ring: ring})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	for i := range 40 {
		tele.Logger.Info("child line", "n", i)
	}
	fmt.Println("ready")
	// Never closed: the stream has no end record when the parent kills us.
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	os.Exit(3)
}

// TestLogsReadsAStreamCutBySIGKILL: the logs command reads a stream
// whose process is still writing it (live, exit 0), the same stream
// after SIGKILL cut it (every record before the cut, reported as cut,
// exit 0), and goes on to the streams after it; a stream whose records
// were altered fails the command, and the others are still read.
func TestLogsReadsAStreamCutBySIGKILL(t *testing.T) {
	dir := t.TempDir()
	keys, err := platform.LoadOrCreateKeys(dir, auditOrigin)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := keys.Ring()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(os.Args[0], "-test.run=^TestLogsHelperProcess$", "-test.count=1")
	child.Env = append(os.Environ(), logsChildEnv+"="+dir)
	stdin, _ := child.StdinPipe()
	stdout, _ := child.StdoutPipe()
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait(); stdin.Close() })
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
	}()
	select {
	case line := <-ready:
		if !strings.HasPrefix(line, "ready") {
			t.Fatalf("child: %q", line)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the child did not start")
	}
	// A complete stream of another component, sorting after the child's.
	tele, err := platform.NewTelemetry(platform.TelemetryConfig{Component: platform.Ledger, LogDir: filepath.Join(dir, "logs"), Ring: ring})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		tele.Logger.Info("ledger line", "n", i)
	}
	if err := tele.Close(); err != nil {
		t.Fatal(err)
	}

	run := func() (string, string, error) {
		var out, rep bytes.Buffer
		err := readLogs(dir, nil, &out, &rep)
		return out.String(), rep.String(), err
	}
	// While the child runs.
	out, rep, err := run()
	if err != nil {
		t.Fatalf("logs on a live system: %v\n%s", err, rep)
	}
	if n := strings.Count(out, `"child line"`); n != 40 || strings.Count(out, `"ledger line"`) != 5 {
		t.Fatalf("live: %d child lines, want 40 (and 5 ledger lines):\n%s", n, rep)
	}
	if !strings.Contains(rep, "gateway-") || !strings.Contains(rep, "live") || !strings.Contains(rep, "5 records, complete") {
		t.Fatalf("live report:\n%s", rep)
	}

	// SIGKILL: the stream keeps its records and has no end record.
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	out, rep, err = run()
	if err != nil {
		t.Fatalf("logs after SIGKILL: %v\n%s", err, rep)
	}
	if n := strings.Count(out, `"child line"`); n != 40 || strings.Count(out, `"ledger line"`) != 5 {
		t.Fatalf("after SIGKILL: %d child lines, want 40, and the stream after it:\n%s", n, rep)
	}
	if !strings.Contains(rep, "40 records, cut at byte") {
		t.Fatalf("the cut is not reported:\n%s", rep)
	}

	// Tampering fails the command; the other streams are still read.
	streams, _ := filepath.Glob(filepath.Join(dir, "logs", "ledger-*.log.enc"))
	if len(streams) != 1 {
		t.Fatalf("ledger streams: %v", streams)
	}
	b, err := os.ReadFile(streams[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(streams[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, rep, err = run()
	if err == nil || !strings.Contains(rep, "FAILED") {
		t.Fatalf("an altered stream passed: %v\n%s", err, rep)
	}
	if n := strings.Count(out, `"child line"`); n != 40 {
		t.Fatalf("with a tampered stream: %d child lines, want 40", n)
	}
}
