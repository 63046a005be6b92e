package waf

// A runner for the OWASP CRS regression suite (the go-ftw YAML format
// embedded in coraza-coreruleset's tests package): each stage's request
// is sent as raw bytes over TCP to a loopback server running the WAF, and
// the rules Coraza matched for that request are checked against the
// stage's expect_ids / no_expect_ids / match_regex / no_match_regex and
// status.

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	crstests "github.com/corazawaf/coraza-coreruleset/v4/tests"
	"github.com/corazawaf/coraza/v3/types"
	"github.com/goccy/go-yaml"
)

type ftwFile struct {
	RuleID int       `yaml:"rule_id"`
	Tests  []ftwTest `yaml:"tests"`
}

type ftwTest struct {
	TestID int        `yaml:"test_id"`
	Desc   string     `yaml:"desc"`
	Stages []ftwStage `yaml:"stages"`
}

type ftwStage struct {
	Input  ftwInput  `yaml:"input"`
	Output ftwOutput `yaml:"output"`
}

type ftwInput struct {
	Method              *string       `yaml:"method"`
	URI                 *string       `yaml:"uri"`
	Version             *string       `yaml:"version"`
	Headers             yaml.MapSlice `yaml:"headers"`
	Data                *string       `yaml:"data"`
	EncodedRequest      string        `yaml:"encoded_request"`
	AutocompleteHeaders *bool         `yaml:"autocomplete_headers"`
}

type ftwOutput struct {
	Status           int    `yaml:"status"`
	ResponseContains string `yaml:"response_contains"`
	ExpectError      bool   `yaml:"expect_error"`
	Log              struct {
		ExpectIDs    []int  `yaml:"expect_ids"`
		NoExpectIDs  []int  `yaml:"no_expect_ids"`
		MatchRegex   string `yaml:"match_regex"`
		NoMatchRegex string `yaml:"no_match_regex"`
	} `yaml:"log"`
}

// crsCase is one test of the suite: "<rule>-<test>".
type crsCase struct {
	name   string
	rule   int
	file   string
	stages []ftwStage
}

func loadSuite(t testing.TB) []crsCase {
	t.Helper()
	var out []crsCase
	err := fs.WalkDir(crstests.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		b, err := fs.ReadFile(crstests.FS, path)
		if err != nil {
			return err
		}
		var f ftwFile
		if err := yaml.Unmarshal(b, &f); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		for _, tc := range f.Tests {
			out = append(out, crsCase{name: fmt.Sprintf("%d-%d", f.RuleID, tc.TestID), rule: f.RuleID, file: path, stages: tc.Stages})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 4000 {
		t.Fatalf("only %d CRS tests found", len(out))
	}
	return out
}

// rawRequest builds the bytes go-ftw would send for in.
func rawRequest(in ftwInput) ([]byte, error) {
	if in.EncodedRequest != "" {
		return base64.StdEncoding.DecodeString(strings.ReplaceAll(in.EncodedRequest, "\n", ""))
	}
	method, uri, version := "GET", "/", "HTTP/1.1"
	if in.Method != nil {
		method = *in.Method
	}
	if in.URI != nil {
		uri = *in.URI
	}
	if in.Version != nil {
		version = *in.Version
	}
	auto := in.AutocompleteHeaders == nil || *in.AutocompleteHeaders
	type hdr struct{ k, v string }
	var hs []hdr
	has := func(name string) bool {
		for _, h := range hs {
			if strings.EqualFold(h.k, name) {
				return true
			}
		}
		return false
	}
	for _, it := range in.Headers {
		hs = append(hs, hdr{fmt.Sprint(it.Key), fmt.Sprint(it.Value)})
	}
	var data []byte
	if in.Data != nil {
		data = templateData(*in.Data)
	}
	if len(data) > 0 && auto {
		if !has("Content-Type") {
			hs = append(hs, hdr{"Content-Type", "application/x-www-form-urlencoded"})
		}
		for _, h := range hs {
			if strings.EqualFold(h.k, "Content-Type") && h.v == "application/x-www-form-urlencoded" {
				data = encodeForm(data)
				break
			}
		}
	}
	for _, h := range hs {
		if strings.EqualFold(h.k, "Content-Type") && strings.Contains(h.v, "multipart/form-data;") {
			data = bytes.ReplaceAll(data, []byte("\n"), []byte("\r\n"))
		}
	}
	if auto {
		if !has("Connection") {
			hs = append(hs, hdr{"Connection", "close"})
		}
		if !has("Content-Length") && (len(data) > 0 || ftwBodyMethod.MatchString(method)) {
			hs = append(hs, hdr{"Content-Length", strconv.Itoa(len(data))})
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s %s\r\n", method, uri, version)
	for _, h := range hs {
		fmt.Fprintf(&b, "%s: %s\r\n", h.k, h.v)
	}
	b.WriteString("\r\n")
	b.Write(data)
	return b.Bytes(), nil
}

// templateData expands data as go-ftw does (a Go template with sprig's
// repeat); like go-ftw, a template that does not parse sends no data.
func templateData(s string) []byte {
	t, err := template.New("ftw").Funcs(template.FuncMap{"repeat": func(n int, s string) string { return strings.Repeat(s, n) }}).Parse(s)
	if err != nil {
		return nil
	}
	var b bytes.Buffer
	if err := t.Execute(&b, nil); err != nil {
		return nil
	}
	return b.Bytes()
}

// ftwBodyMethod is go-ftw's own (loosely anchored) expression.
var ftwBodyMethod = regexp.MustCompile(`^POST|PUT|PATCH|DELETE$`)

// encodeForm escapes a form body's keys and values unless it is already
// escaped, as go-ftw does.
func encodeForm(data []byte) []byte {
	if un, err := url.QueryUnescape(string(data)); err != nil || un != string(data) {
		return data
	}
	var out []string
	for _, tok := range strings.Split(string(data), "&") {
		k, v, ok := strings.Cut(tok, "=")
		if !ok {
			out = append(out, url.QueryEscape(tok))
			continue
		}
		out = append(out, url.QueryEscape(k)+"="+url.QueryEscape(v))
	}
	return []byte(strings.Join(out, "&"))
}

// suiteServer runs a WAF handler on loopback and records, per request, the
// rules Coraza matched.
type suiteServer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	last []types.MatchedRule
	got  bool
}

func newSuiteServer(t testing.TB, w *WAF) *suiteServer {
	s := &suiteServer{}
	w.observe = func(r *http.Request, tx types.Transaction) {
		s.mu.Lock()
		s.last = append([]types.MatchedRule(nil), tx.MatchedRules()...)
		s.got = true
		s.mu.Unlock()
	}
	s.srv = httptest.NewServer(w.Handler(http.HandlerFunc(reflectHandler)))
	t.Cleanup(s.srv.Close)
	return s
}

// reflectHandler is the backend the suite expects (albedo): POST
// /reflect answers with the status, headers and body its JSON names;
// everything else is 200 text/plain, as in Coraza's own CRS setup.
func reflectHandler(rw http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rw.Header().Set("Content-Type", "text/plain")
	if r.URL.Path != "/reflect" {
		_, _ = rw.Write([]byte("ok\n"))
		return
	}
	var spec struct {
		Status      int               `json:"status"`
		Headers     map[string]string `json:"headers"`
		Body        string            `json:"body"`
		EncodedBody string            `json:"encodedBody"`
	}
	_ = json.Unmarshal(b, &spec)
	for k, v := range spec.Headers {
		rw.Header().Set(k, v)
	}
	body := []byte(spec.Body)
	if spec.EncodedBody != "" {
		body, _ = base64.StdEncoding.DecodeString(spec.EncodedBody)
	}
	if spec.Status == 0 {
		spec.Status = http.StatusOK
	}
	rw.WriteHeader(spec.Status)
	_, _ = rw.Write(body)
}

type stageResult struct {
	status  int
	err     error
	matched []types.MatchedRule
	ran     bool // a transaction ran (the HTTP server accepted the request)
}

func (s *suiteServer) send(raw []byte) stageResult {
	s.mu.Lock()
	s.last, s.got = nil, false
	s.mu.Unlock()
	var res stageResult
	c, err := net.DialTimeout("tcp", s.srv.Listener.Addr().String(), 5*time.Second)
	if err != nil {
		res.err = err
		return res
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(raw); err != nil {
		res.err = err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		if res.err == nil {
			res.err = err
		}
	} else {
		res.status = resp.StatusCode
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	s.mu.Lock()
	res.matched, res.ran = s.last, s.got
	s.mu.Unlock()
	return res
}

// outcome of one test.
type outcome struct {
	pass   bool
	reason string // why it failed
	ids    []int  // rule ids matched in the last stage
}

func matchedIDs(ms []types.MatchedRule) []int {
	var ids []int
	for _, m := range ms {
		ids = append(ids, m.Rule().ID())
	}
	sort.Ints(ids)
	return slices.Compact(ids)
}

func check(out ftwOutput, res stageResult) (bool, string) {
	if out.ExpectError {
		if res.err != nil || res.status == 0 {
			return true, ""
		}
		return false, "expected a connection error"
	}
	if res.status == 0 {
		return false, fmt.Sprintf("no response: %v", res.err)
	}
	if out.Status != 0 && res.status != out.Status {
		return false, fmt.Sprintf("status %d, want %d", res.status, out.Status)
	}
	ids := matchedIDs(res.matched)
	for _, id := range out.Log.ExpectIDs {
		if !slices.Contains(ids, id) {
			return false, fmt.Sprintf("rule %d not matched (matched %v)", id, ids)
		}
	}
	for _, id := range out.Log.NoExpectIDs {
		if slices.Contains(ids, id) {
			return false, fmt.Sprintf("rule %d matched", id)
		}
	}
	if out.Log.MatchRegex != "" || out.Log.NoMatchRegex != "" {
		var log strings.Builder
		for _, m := range res.matched {
			log.WriteString(m.ErrorLog())
			log.WriteByte('\n')
		}
		if out.Log.MatchRegex != "" && !regexp.MustCompile(out.Log.MatchRegex).MatchString(log.String()) {
			return false, "log does not match " + out.Log.MatchRegex
		}
		if out.Log.NoMatchRegex != "" && regexp.MustCompile(out.Log.NoMatchRegex).MatchString(log.String()) {
			return false, "log matches " + out.Log.NoMatchRegex
		}
	}
	return true, ""
}

// runSuite runs every case against w; overrides replace a case's
// expected output (Coraza's own platform overrides).
func runSuite(t testing.TB, w *WAF, cases []crsCase, overrides map[string]ftwOutput) map[string]outcome {
	s := newSuiteServer(t, w)
	results := make(map[string]outcome, len(cases))
	for _, c := range cases {
		o := outcome{pass: true}
		for i, st := range c.stages {
			raw, err := rawRequest(st.Input)
			if err != nil {
				o = outcome{reason: "cannot build request: " + err.Error()}
				break
			}
			out := st.Output
			if ov, ok := overrides[c.name]; ok && i == len(c.stages)-1 {
				out = ov
			}
			res := s.send(raw)
			ok, why := check(out, res)
			o.ids = matchedIDs(res.matched)
			if !ok {
				o.pass, o.reason = false, fmt.Sprintf("stage %d: %s", i+1, why)
				break
			}
		}
		results[c.name] = o
	}
	return results
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
