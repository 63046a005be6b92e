package headers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const csp2Report = `{"csp-report":{"document-uri":"https://example.com/reset?token=s3cret#frag","referrer":"","blocked-uri":"https://evil.example/x.js?k=v","violated-directive":"script-src-elem 'self'","original-policy":"script-src 'self'","disposition":"enforce","line-number":3,"column-number":7,"status-code":200}}`

const reportingAPIReport = `[{"type":"csp-violation","age":10,"url":"https://example.com/","user_agent":"Browser/1","body":{"documentURL":"https://example.com/page?session=abc","blockedURL":"inline","effectiveDirective":"script-src-elem","originalPolicy":"script-src 'self'","disposition":"report","sample":"alert(1)","lineNumber":9,"statusCode":200}},{"type":"deprecation","body":{}}]`

func TestReportHandlerAccepts(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name, ctype, body string
		want              []Report
	}{
		{"CSP2 report", "application/csp-report", csp2Report, []Report{{
			DocumentURL: "https://example.com/reset", BlockedURL: "https://evil.example/x.js",
			EffectiveDirective: "script-src-elem", OriginalPolicy: "script-src 'self'", Disposition: "enforce",
			LineNumber: 3, ColumnNumber: 7, StatusCode: 200, UserAgent: "UA/1", ReceivedAt: now}}},
		{"Reporting API batch", "application/reports+json", reportingAPIReport, []Report{{
			DocumentURL: "https://example.com/page", BlockedURL: "inline", EffectiveDirective: "script-src-elem",
			OriginalPolicy: "script-src 'self'", Disposition: "report", Sample: "alert(1)", LineNumber: 9,
			StatusCode: 200, UserAgent: "Browser/1", ReceivedAt: now}}},
		{"json with charset", "application/json; charset=utf-8", csp2Report, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []Report
			h, err := NewReportHandler(ReportConfig{Now: func() time.Time { return now },
				OnReport: func(_ context.Context, rs []Report) { got = rs }})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest("POST", "/csp-report", strings.NewReader(tc.body))
			req.Header.Set("Content-Type", tc.ctype)
			req.Header.Set("User-Agent", "UA/1")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusNoContent {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if tc.want == nil {
				if len(got) != 1 {
					t.Fatalf("got %d reports", len(got))
				}
				return
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Fatalf("reports (-want +got):\n%s", d)
			}
		})
	}
}

func TestReportHandlerRefuses(t *testing.T) {
	tests := []struct {
		name, method, ctype, body string
		status                    int
		err                       error
	}{
		{"GET", "GET", "application/csp-report", csp2Report, 405, ErrReportMethod},
		{"wrong media type", "POST", "text/plain", csp2Report, 415, ErrReportMediaType},
		{"no media type", "POST", "", csp2Report, 415, ErrReportMediaType},
		{"too large", "POST", "application/csp-report", `{"csp-report":{"document-uri":"` + strings.Repeat("a", 2048) + `"}}`, 413, ErrReportTooLarge},
		{"not JSON", "POST", "application/csp-report", "{nope", 400, ErrReportMalformed},
		{"wrong shape", "POST", "application/csp-report", `{"other":1}`, 400, ErrReportMalformed},
		{"bad batch body", "POST", "application/reports+json", `[{"type":"csp-violation","body":"str"}]`, 400, ErrReportMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			called := false
			h, err := NewReportHandler(ReportConfig{MaxBytes: 1024, OnReport: func(context.Context, []Report) { called = true }})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest(tc.method, "/csp-report", strings.NewReader(tc.body))
			req.ContentLength = -1 // force the streaming size check, not the Content-Length shortcut
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status || called {
				t.Fatalf("status %d (want %d), OnReport called=%v", rec.Code, tc.status, called)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q", ct)
			}
			// The custom hook sees the sentinel.
			var got error
			h2, _ := NewReportHandler(ReportConfig{MaxBytes: 1024, ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) { got = err; w.WriteHeader(418) }})
			req = httptest.NewRequest(tc.method, "/csp-report", strings.NewReader(tc.body))
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			h2.ServeHTTP(httptest.NewRecorder(), req)
			if !errors.Is(got, tc.err) {
				t.Errorf("ErrorHandler got %v, want %v", got, tc.err)
			}
		})
	}
}

func TestReportHandlerDefaultLogsWithoutSecrets(t *testing.T) {
	var buf bytes.Buffer
	h, err := NewReportHandler(ReportConfig{Logger: slog.New(slog.NewJSONHandler(&buf, nil)), MaxReports: 1})
	if err != nil {
		t.Fatal(err)
	}
	batch := "[" + strings.Repeat(strings.Trim(reportingAPIReport, "[]")+",", 3) + `{"type":"x"}]`
	req := httptest.NewRequest("POST", "/csp-report", strings.NewReader(batch))
	req.Header.Set("Content-Type", "application/reports+json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 204 {
		t.Fatalf("status %d", rec.Code)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("MaxReports=1 but %d lines logged", len(lines))
	}
	var rec1 map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec1); err != nil || rec1["document_url"] != "https://example.com/page" {
		t.Fatalf("log line %s (%v)", lines[0], err)
	}
	if strings.Contains(buf.String(), "session=abc") {
		t.Fatal("query string with a session id reached the log")
	}
	if _, err := NewReportHandler(ReportConfig{MaxBytes: -1}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("negative MaxBytes accepted: %v", err)
	}
	if _, err := NewReportHandler(ReportConfig{MaxReports: -1}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("negative MaxReports accepted: %v", err)
	}
}

// FuzzParseReports: never panics, never returns more than max reports, and
// never lets a query string or an over-long field through.
func FuzzParseReports(f *testing.F) {
	f.Add("application/csp-report", csp2Report, 5)
	f.Add("application/reports+json", reportingAPIReport, 1)
	f.Add("application/json", `{"csp-report":{"document-uri":"x?y"}}`, 0)
	f.Add("application/reports+json", `[]`, 3)
	f.Fuzz(func(t *testing.T, mt, body string, max int) {
		if max < 0 || max > 1000 {
			return
		}
		rs, err := ParseReports(mt, []byte(body), max)
		if err != nil {
			if !errors.Is(err, ErrReportMalformed) && !errors.Is(err, ErrReportMediaType) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(rs) > max {
			t.Fatalf("%d reports, max %d", len(rs), max)
		}
		for _, r := range rs {
			for _, u := range []string{r.DocumentURL, r.BlockedURL, r.Referrer, r.SourceFile} {
				if strings.ContainsAny(u, "?#") || len(u) > maxReportField {
					t.Fatalf("URL field %q not sanitised", u)
				}
			}
			if len(r.Sample) > maxReportField || len(r.OriginalPolicy) > maxReportField {
				t.Fatal("field over the cap")
			}
		}
	})
}
