// Package waf puts Coraza with the OWASP Core Rule Set in front of the
// gateway's routes.
//
// It does not use coraza's http.WrapHandler: that middleware only logs when
// request processing fails and then lets the request through without an
// answer. Here any processing error fails closed (503), an interruption is a
// 403 problem+json that names no rule, and the matched rule ids go to the
// log under the request's correlation id.
package waf

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"

	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/types"

	"github.com/malai-sec/malai/problem"
)

// Config configures the WAF. The zero value blocks at paranoia level 1
// with the full CRS, inspecting request bodies up to 128 KiB.
type Config struct {
	// ParanoiaLevel is the CRS blocking paranoia level, 1 (default) to 4.
	ParanoiaLevel int
	// BodyLimit caps inspected request bodies; larger bodies are refused
	// with 413 rather than passed uninspected. Default 128 KiB.
	BodyLimit int
	// ExtraDirectives are appended after the CRS (exclusions, custom rules).
	ExtraDirectives string
	// Logger receives one line per blocked request. Default slog.Default().
	Logger *slog.Logger
}

// WAF is a request filter. It is safe for concurrent use.
type WAF struct {
	waf coraza.WAF
	log *slog.Logger
}

// New compiles the rule set. It takes a second or two: do it at start-up.
func New(cfg Config) (*WAF, error) {
	if cfg.ParanoiaLevel == 0 {
		cfg.ParanoiaLevel = 1
	}
	if cfg.ParanoiaLevel < 1 || cfg.ParanoiaLevel > 4 {
		return nil, fmt.Errorf("waf: paranoia level %d out of 1..4", cfg.ParanoiaLevel)
	}
	if cfg.BodyLimit == 0 {
		cfg.BodyLimit = 128 << 10
	}
	if cfg.BodyLimit < 0 {
		return nil, errors.New("waf: negative body limit")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// SecRxPreFilter must precede the CRS Include lines to take effect
	// (FIELD-NOTES: 8-16 % less CPU, same detections).
	directives := fmt.Sprintf(`
SecRxPreFilter On
Include @coraza.conf-recommended
SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit %[1]d
SecRequestBodyInMemoryLimit %[1]d
SecRequestBodyLimitAction Reject
SecResponseBodyAccess Off
SecAuditEngine Off
Include @crs-setup.conf.example
SecAction "id:900000,phase:1,pass,t:none,nolog,setvar:tx.blocking_paranoia_level=%[2]d"
SecAction "id:900200,phase:1,pass,t:none,nolog,setvar:'tx.allowed_methods=GET HEAD POST OPTIONS PUT PATCH DELETE'"
Include @owasp_crs/*.conf
%[3]s
`, cfg.BodyLimit, cfg.ParanoiaLevel, cfg.ExtraDirectives)
	w, err := coraza.NewWAF(coraza.NewWAFConfig().WithDirectives(directives).WithRootFS(coreruleset.FS))
	if err != nil {
		return nil, fmt.Errorf("waf: rules: %w", err)
	}
	return &WAF{waf: w, log: cfg.Logger}, nil
}

// Handler filters requests before next.
func (f *WAF) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tx := f.waf.NewTransaction()
		defer func() {
			tx.ProcessLogging()
			_ = tx.Close()
		}()
		r2, it, err := inspect(tx, r)
		switch {
		case err != nil:
			f.log.ErrorContext(r.Context(), "waf: request inspection failed; refusing", "error", err.Error())
			problem.Write(w, r, problem.Unavailable)
		case it != nil:
			f.block(w, r, tx, it)
		default:
			next.ServeHTTP(w, r2)
		}
	})
}

func (f *WAF) block(w http.ResponseWriter, r *http.Request, tx types.Transaction, it *types.Interruption) {
	var ids []string
	for _, m := range tx.MatchedRules() {
		// 900000-910999 are CRS setup and initialisation, not detections.
		if id := m.Rule().ID(); id < 900000 || id >= 911000 {
			ids = append(ids, strconv.Itoa(id))
		}
	}
	f.log.WarnContext(r.Context(), "waf: request blocked", "rule", it.RuleID, "matched", strings.Join(ids, ","), "action", it.Action)
	status := it.Status
	if status == 0 || it.Action != "deny" && it.Action != "drop" {
		status = http.StatusForbidden
	}
	if status == http.StatusRequestEntityTooLarge {
		problem.Write(w, r, problem.Problem{Status: status, Type: "payload-too-large", Title: "Request body too large"})
		return
	}
	problem.Write(w, r, problem.Problem{Status: http.StatusForbidden, Type: "waf-blocked",
		Title: "Request blocked", Detail: "The request was refused by the web application firewall."})
}

// inspect runs phases 1 and 2. It never mutates r: when the body was read
// for inspection it returns a shallow copy whose body replays it.
func inspect(tx types.Transaction, r *http.Request) (*http.Request, *types.Interruption, error) {
	host, port, _ := net.SplitHostPort(r.RemoteAddr)
	p, _ := strconv.Atoi(port)
	tx.ProcessConnection(host, p, "", 0)
	tx.ProcessURI(r.URL.RequestURI(), r.Method, r.Proto)
	for k, vs := range r.Header {
		for _, v := range vs {
			tx.AddRequestHeader(k, v)
		}
	}
	if r.Host != "" {
		tx.AddRequestHeader("Host", r.Host)
		tx.SetServerName(r.Host)
	}
	for _, te := range r.TransferEncoding {
		tx.AddRequestHeader("Transfer-Encoding", te)
	}
	if it := tx.ProcessRequestHeaders(); it != nil {
		return r, it, nil
	}
	out := r
	if r.Body != nil && r.Body != http.NoBody && tx.IsRequestBodyAccessible() {
		it, _, err := tx.ReadRequestBodyFrom(r.Body)
		if err != nil {
			return r, nil, fmt.Errorf("read body: %w", err)
		}
		if it != nil {
			return r, it, nil
		}
		rbr, err := tx.RequestBodyReader()
		if err != nil {
			return r, nil, fmt.Errorf("body reader: %w", err)
		}
		out = r.WithContext(r.Context())
		out.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(rbr, r.Body), r.Body}
	}
	it, err := tx.ProcessRequestBody()
	return out, it, err
}
