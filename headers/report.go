package headers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/malai-sec/malai/problem"
)

// Errors passed to [ReportConfig.ErrorHandler].
var (
	// ErrReportMethod: the report was not sent with POST.
	ErrReportMethod = errors.New("headers: CSP report must be POSTed")
	// ErrReportTooLarge: the body exceeded ReportConfig.MaxBytes.
	ErrReportTooLarge = errors.New("headers: CSP report too large")
	// ErrReportMediaType: the Content-Type is not a report type.
	ErrReportMediaType = errors.New("headers: unsupported CSP report media type")
	// ErrReportMalformed: the body is not a CSP report.
	ErrReportMalformed = errors.New("headers: malformed CSP report")
)

const (
	defaultReportMaxBytes = 64 << 10
	defaultMaxReports     = 100
	maxReportField        = 1024
)

// Report is one CSP violation, normalised from either the CSP Level 2
// (application/csp-report) or the Reporting API
// (application/reports+json) format. Every URL has its query and fragment
// removed (they may carry tokens) and every field is cut to 1 KiB: a
// report is attacker-controlled input.
type Report struct {
	DocumentURL        string
	BlockedURL         string
	Referrer           string
	EffectiveDirective string
	OriginalPolicy     string
	Disposition        string // "enforce" or "report"
	SourceFile         string
	Sample             string
	LineNumber         int
	ColumnNumber       int
	StatusCode         int
	UserAgent          string
	ReceivedAt         time.Time
}

// ReportConfig configures [NewReportHandler]. The zero value accepts
// reports of up to 64 KiB holding up to 100 violations and logs each at
// Warn level through slog.Default().
type ReportConfig struct {
	// MaxBytes caps the request body; 0 means 64 KiB.
	MaxBytes int64
	// MaxReports caps violations per request (the Reporting API batches);
	// extra ones are dropped. 0 means 100.
	MaxReports int
	// OnReport receives the violations of each accepted request. nil logs
	// them with Logger.
	OnReport func(ctx context.Context, reports []Report)
	// Logger is used when OnReport is nil; nil means slog.Default().
	Logger *slog.Logger
	// Now stamps Report.ReceivedAt; nil means time.Now.
	Now func() time.Time
	// ErrorHandler answers refused reports; the default writes
	// problem+json: 405, 413, 415 or 400 (type csp-report-invalid).
	ErrorHandler func(http.ResponseWriter, *http.Request, error)
}

// ReportHandler is the endpoint a policy's report-uri (or the
// Reporting-Endpoints header for report-to) points at. It answers 204 to
// a valid report. Built by [NewReportHandler]; safe for concurrent use.
// It does not rate-limit: put a rate limiter in front of it.
type ReportHandler struct {
	cfg ReportConfig
}

// NewReportHandler validates cfg and returns the handler.
func NewReportHandler(cfg ReportConfig) (*ReportHandler, error) {
	switch {
	case cfg.MaxBytes < 0:
		return nil, fmt.Errorf("%w: ReportConfig.MaxBytes is negative", ErrInvalidConfig)
	case cfg.MaxReports < 0:
		return nil, fmt.Errorf("%w: ReportConfig.MaxReports is negative", ErrInvalidConfig)
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = defaultReportMaxBytes
	}
	if cfg.MaxReports == 0 {
		cfg.MaxReports = defaultMaxReports
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OnReport == nil {
		logger := cfg.Logger
		if logger == nil {
			logger = slog.Default()
		}
		cfg.OnReport = func(ctx context.Context, reports []Report) {
			for _, r := range reports {
				logger.LogAttrs(ctx, slog.LevelWarn, "csp violation",
					slog.String("document_url", r.DocumentURL),
					slog.String("blocked_url", r.BlockedURL),
					slog.String("effective_directive", r.EffectiveDirective),
					slog.String("disposition", r.Disposition),
					slog.String("source_file", r.SourceFile),
					slog.Int("line", r.LineNumber))
			}
		}
	}
	if cfg.ErrorHandler == nil {
		cfg.ErrorHandler = DefaultReportErrorHandler
	}
	return &ReportHandler{cfg: cfg}, nil
}

// DefaultReportErrorHandler is the ErrorHandler of a zero [ReportConfig]:
// problem+json with 400, 405 (and Allow: POST), 413 or 415.
func DefaultReportErrorHandler(w http.ResponseWriter, r *http.Request, err error) {
	p := problem.Problem{Status: http.StatusBadRequest, Type: "csp-report-invalid",
		Title: "Invalid CSP report", Detail: "The body is not a CSP violation report."}
	switch {
	case errors.Is(err, ErrReportMethod):
		w.Header().Set("Allow", http.MethodPost)
		p = problem.Problem{Status: http.StatusMethodNotAllowed, Detail: "Send reports with POST."}
	case errors.Is(err, ErrReportTooLarge):
		p = problem.Problem{Status: http.StatusRequestEntityTooLarge, Detail: "The report is too large."}
	case errors.Is(err, ErrReportMediaType):
		p.Status = http.StatusUnsupportedMediaType
		p.Detail = "Send application/csp-report or application/reports+json."
	}
	problem.Write(w, r, p)
}

// csp2Body is the CSP Level 2 report format.
type csp2Body struct {
	DocumentURI        string `json:"document-uri"`
	Referrer           string `json:"referrer"`
	BlockedURI         string `json:"blocked-uri"`
	EffectiveDirective string `json:"effective-directive"`
	ViolatedDirective  string `json:"violated-directive"`
	OriginalPolicy     string `json:"original-policy"`
	Disposition        string `json:"disposition"`
	SourceFile         string `json:"source-file"`
	ScriptSample       string `json:"script-sample"`
	LineNumber         int    `json:"line-number"`
	ColumnNumber       int    `json:"column-number"`
	StatusCode         int    `json:"status-code"`
}

// reportingBody is the body of a Reporting API "csp-violation" report.
type reportingBody struct {
	DocumentURL        string `json:"documentURL"`
	Referrer           string `json:"referrer"`
	BlockedURL         string `json:"blockedURL"`
	EffectiveDirective string `json:"effectiveDirective"`
	OriginalPolicy     string `json:"originalPolicy"`
	Disposition        string `json:"disposition"`
	SourceFile         string `json:"sourceFile"`
	Sample             string `json:"sample"`
	LineNumber         int    `json:"lineNumber"`
	ColumnNumber       int    `json:"columnNumber"`
	StatusCode         int    `json:"statusCode"`
}

type reportingEntry struct {
	Type      string          `json:"type"`
	UserAgent string          `json:"user_agent"`
	Body      json.RawMessage `json:"body"`
}

// ServeHTTP accepts one report request.
func (h *ReportHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		h.cfg.ErrorHandler(w, r, ErrReportMethod)
		return
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		h.cfg.ErrorHandler(w, r, ErrReportMediaType)
		return
	}
	if r.ContentLength > h.cfg.MaxBytes {
		h.cfg.ErrorHandler(w, r, ErrReportTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			h.cfg.ErrorHandler(w, r, ErrReportTooLarge)
		} else {
			h.cfg.ErrorHandler(w, r, fmt.Errorf("%w: reading body", ErrReportMalformed))
		}
		return
	}
	reports, err := ParseReports(mt, body, h.cfg.MaxReports)
	if err != nil {
		h.cfg.ErrorHandler(w, r, err)
		return
	}
	now := h.cfg.Now()
	ua := cut(r.UserAgent())
	for i := range reports {
		reports[i].ReceivedAt = now
		if reports[i].UserAgent == "" {
			reports[i].UserAgent = ua
		}
	}
	if len(reports) > 0 {
		h.cfg.OnReport(r.Context(), reports)
	}
	w.WriteHeader(http.StatusNoContent)
}

// ParseReports decodes a report body of media type mediaType
// (application/csp-report, application/reports+json or application/json)
// into at most max violations; Reporting API entries of other types are
// skipped. Errors wrap [ErrReportMediaType] or [ErrReportMalformed].
func ParseReports(mediaType string, body []byte, max int) ([]Report, error) {
	switch strings.ToLower(mediaType) {
	case "application/csp-report", "application/json", "application/reports+json":
	default:
		return nil, ErrReportMediaType
	}
	trimmed := strings.TrimSpace(string(body))
	if strings.HasPrefix(trimmed, "[") {
		var entries []reportingEntry
		if err := json.Unmarshal(body, &entries); err != nil {
			return nil, fmt.Errorf("%w: not a JSON array of reports", ErrReportMalformed)
		}
		out := make([]Report, 0, min(len(entries), max))
		for _, e := range entries {
			if len(out) >= max {
				break
			}
			if e.Type != "csp-violation" {
				continue
			}
			var b reportingBody
			if err := json.Unmarshal(e.Body, &b); err != nil {
				return nil, fmt.Errorf("%w: csp-violation body", ErrReportMalformed)
			}
			out = append(out, Report{
				DocumentURL: cutURL(b.DocumentURL), BlockedURL: cutURL(b.BlockedURL), Referrer: cutURL(b.Referrer),
				EffectiveDirective: cut(b.EffectiveDirective), OriginalPolicy: cut(b.OriginalPolicy),
				Disposition: cut(b.Disposition), SourceFile: cutURL(b.SourceFile), Sample: cut(b.Sample),
				LineNumber: b.LineNumber, ColumnNumber: b.ColumnNumber, StatusCode: b.StatusCode,
				UserAgent: cut(e.UserAgent),
			})
		}
		return out, nil
	}
	var wrapper struct {
		Report *csp2Body `json:"csp-report"`
	}
	if err := json.Unmarshal(body, &wrapper); err != nil || wrapper.Report == nil {
		return nil, fmt.Errorf("%w: expected {\"csp-report\": {...}}", ErrReportMalformed)
	}
	b := wrapper.Report
	directive := b.EffectiveDirective
	if directive == "" {
		directive, _, _ = strings.Cut(b.ViolatedDirective, " ")
	}
	if max < 1 {
		return nil, nil
	}
	return []Report{{
		DocumentURL: cutURL(b.DocumentURI), BlockedURL: cutURL(b.BlockedURI), Referrer: cutURL(b.Referrer),
		EffectiveDirective: cut(directive), OriginalPolicy: cut(b.OriginalPolicy), Disposition: cut(b.Disposition),
		SourceFile: cutURL(b.SourceFile), Sample: cut(b.ScriptSample),
		LineNumber: b.LineNumber, ColumnNumber: b.ColumnNumber, StatusCode: b.StatusCode,
	}}, nil
}

// cut bounds an attacker-controlled string.
func cut(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > maxReportField {
		i := maxReportField
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i]
	}
	return s
}

// cutURL drops the query, fragment and user info of a URL (they may hold
// tokens) and bounds it. Keywords such as "inline" or "eval" pass as is.
func cutURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.Scheme != "" {
		u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment, u.User = "", false, "", "", nil
		s = u.String()
	} else if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	return cut(s)
}
