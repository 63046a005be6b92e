package evidence

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Scans are the external scanners a pass may run beside its own checks
// (slow: minutes). Each writes its raw output beside the report.
type Scans struct {
	// TestSSL is the testssl.sh executable; "" runs none.
	TestSSL string
	// Observatory is the directory of an installed
	// @mdn/mdn-http-observatory package; "" runs none. Node runs it
	// (default "node").
	Observatory, Node string
}

// Files the scans write beside the report.
const (
	TestSSLFile     = "testssl.json"
	ObservatoryFile = "observatory.json"
)

//go:embed observatory.mjs
var observatoryScript []byte

// testsslExpected are the findings a development CA always raises (the
// chain is not in any public trust store, and it publishes no revocation
// information); a deployment's public certificate clears them.
var testsslExpected = map[string]string{
	"cert_chain_of_trust":        "the development CA is in no public trust store",
	"cert_revocation":            "the development CA publishes no CRL or OCSP responder",
	"cert_expirationStatus":      "development leaves live days, not months, and are renewed before they expire",
	"cert_notAfter":              "development leaves live days, not months, and are renewed before they expire",
	"cert_ocspURL":               "the development CA publishes no OCSP responder",
	"cert_crlDistributionPoints": "the development CA publishes no CRL",
}

// Checks returns a check per configured scanner.
func (s Scans) Checks() []Check {
	var cs []Check
	if s.TestSSL != "" {
		cs = append(cs, Check{Row: RowTLS, Name: "testssl.sh (protocols, ciphers, forward secrecy, server defaults, vulnerabilities) finds nothing at MEDIUM or above beyond what a development CA raises",
			Run: s.testssl})
	}
	if s.Observatory != "" {
		cs = append(cs, Check{Row: RowHeaders, Name: "MDN HTTP Observatory's own scanner grades the gateway A+ on /, /healthz and the JWKS",
			Run: s.observatory})
	}
	return cs
}

// Attachments lists the scan outputs present in dir.
func (s Scans) Attachments(dir string) []Attachment {
	var out []Attachment
	if fileIn(dir, TestSSLFile) {
		out = append(out, Attachment{Name: "testssl.sh scan of the gateway", File: TestSSLFile,
			Summary: "Every finding of testssl.sh as JSON (id, severity, finding)."})
	}
	if fileIn(dir, ObservatoryFile) {
		out = append(out, Attachment{Name: "MDN HTTP Observatory scans of the gateway", File: ObservatoryFile,
			Summary: "The Observatory's score, grade and per-test results for each path scanned."})
	}
	return out
}

func fileIn(dir, name string) bool {
	if dir == "" {
		return false
	}
	_, err := os.Stat(filepath.Join(dir, name))
	return err == nil
}

func (s Scans) testssl(ctx context.Context, f *Fixture) (string, error) {
	u, err := url.Parse(f.Target.Gateway)
	if err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp("", "testssl-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, TestSSLFile)
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.TestSSL, "--quiet", "--color", "0", "--warnings", "off", "--jsonfile", out,
		"-p", "-s", "-f", "-S", "-H", "-U", "--ip", "one", u.Host)
	log, runErr := cmd.CombinedOutput()
	b, err := os.ReadFile(out)
	if err != nil {
		return "", fmt.Errorf("testssl.sh wrote no JSON (%v): %s", runErr, lastLines(log, 5))
	}
	var findings []struct {
		ID, Severity, Finding string
	}
	if err := json.Unmarshal(b, &findings); err != nil {
		return "", fmt.Errorf("testssl.sh JSON: %w", err)
	}
	if f.OutDir != "" {
		if err := os.WriteFile(filepath.Join(f.OutDir, TestSSLFile), b, 0o644); err != nil {
			return "", err
		}
	}
	bySeverity := map[string]int{}
	var bad, expected []string
	for _, x := range findings {
		bySeverity[x.Severity]++
		switch x.Severity {
		case "MEDIUM", "HIGH", "CRITICAL":
			if why, ok := testsslExpected[x.ID]; ok {
				expected = append(expected, fmt.Sprintf("%s %s (%s)", x.Severity, x.ID, why))
			} else {
				bad = append(bad, fmt.Sprintf("%s %s: %s", x.Severity, x.ID, x.Finding))
			}
		}
	}
	sort.Strings(bad)
	obs := fmt.Sprintf("%d findings by severity %v; expected of a development CA: %s; written to %s", len(findings), bySeverity, strings.Join(expected, "; "), TestSSLFile)
	if len(bad) > 0 {
		return obs, fmt.Errorf("findings: %s", strings.Join(bad, "; "))
	}
	return obs, nil
}

func (s Scans) observatory(ctx context.Context, f *Fixture) (string, error) {
	gw, err := url.Parse(f.Target.Gateway)
	if err != nil {
		return "", err
	}
	httpPort := ""
	if f.Target.Redirect != "" {
		if ru, err := url.Parse(f.Target.Redirect); err == nil {
			httpPort = ru.Port()
		}
	}
	script, err := os.CreateTemp("", "observatory-*.mjs")
	if err != nil {
		return "", err
	}
	defer os.Remove(script.Name())
	if _, err := script.Write(observatoryScript); err != nil {
		return "", err
	}
	script.Close()
	node := s.Node
	if node == "" {
		node = "node"
	}
	pkg, err := filepath.Abs(s.Observatory)
	if err != nil {
		return "", err
	}
	scans := map[string]json.RawMessage{}
	var got, bad []string
	for _, path := range []string{"/", "/healthz", "/.well-known/jwks.json"} {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		cmd := exec.CommandContext(cctx, node, script.Name(), pkg, gw.Hostname(), gw.Port(), httpPort, path)
		cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+f.Target.CAFile)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		b, err := cmd.Output()
		cancel()
		if err != nil {
			return "", fmt.Errorf("observatory on %s: %v: %s %s", path, err, lastLines(b, 3), lastLines(stderr.Bytes(), 3))
		}
		var res struct {
			Scan struct {
				Grade      string `json:"grade"`
				Score      int    `json:"score"`
				StatusCode int    `json:"statusCode"`
			} `json:"scan"`
		}
		if err := json.Unmarshal(b, &res); err != nil {
			return "", fmt.Errorf("observatory on %s: %w", path, err)
		}
		scans[path] = b
		got = append(got, fmt.Sprintf("%s %s (%d; HTTP %d)", path, res.Scan.Grade, res.Scan.Score, res.Scan.StatusCode))
		if res.Scan.Grade != "A+" {
			bad = append(bad, path)
		}
	}
	if f.OutDir != "" {
		b, _ := json.MarshalIndent(scans, "", "  ")
		if err := os.WriteFile(filepath.Join(f.OutDir, ObservatoryFile), append(b, '\n'), 0o644); err != nil {
			return "", err
		}
	}
	obs := strings.Join(got, "; ") + "; written to " + ObservatoryFile
	if len(bad) > 0 {
		return obs, errors.New("below A+ on " + strings.Join(bad, ", "))
	}
	return obs, nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " / ")
}
