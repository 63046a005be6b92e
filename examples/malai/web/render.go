package web

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/malai-sec/malai/headers"
)

// page is what every template receives.
type page struct {
	Title  string
	Nonce  string
	SRI    string
	CSRF   string
	User   string
	Nav    string
	Flash  []flash
	Status int
	// Errors maps a field name to its error text; Summary lists them in
	// field order for the error summary at the top of the form.
	Errors  map[string]string
	Summary []fieldError
	Form    map[string]string
	Data    any
}

type fieldError struct {
	Field, Text string
}

// reauthFields are the password and code fields of one re-authenticating
// form of the security page; Prefix keeps their ids apart.
type reauthFields struct {
	Prefix, Err string
}

// fail records an error for field (in the order fields fail).
func (p *page) fail(field, text string) {
	if p.Errors == nil {
		p.Errors = map[string]string{}
	}
	if _, dup := p.Errors[field]; !dup {
		p.Summary = append(p.Summary, fieldError{field, text})
	}
	p.Errors[field] = text
}

var pageNames = []string{"signup", "signin", "mfa_challenge", "account", "transfer", "mfa", "recovery", "security", "error"}

func (a *App) parseTemplates() error {
	funcs := template.FuncMap{
		"amount": formatAmount,
		"err":    func(p *page, f string) string { return p.Errors[f] },
		"val":    func(p *page, f string) string { return p.Form[f] },
		"join":   strings.Join,
		"svg":    func(s string) template.HTML { return template.HTML(s) }, // only qrSVG output, which is built from numbers
		"reauth": func(p *page, prefix string) reauthFields {
			return reauthFields{Prefix: prefix, Err: p.Errors[prefix+"-password"]}
		},
	}
	a.pages = make(map[string]*template.Template, len(pageNames))
	for _, n := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+n+".html")
		if err != nil {
			return fmt.Errorf("web: template %s: %w", n, err)
		}
		a.pages[n] = t
	}
	return nil
}

// formatAmount groups digits: 1234567 → "1,234,567".
func formatAmount(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// render writes a page. Rendering into a buffer first means a template
// error is a clean 500, never half a page.
func (a *App) render(w http.ResponseWriter, r *http.Request, name string, p *page) {
	if p.Status == 0 {
		p.Status = http.StatusOK
		if len(p.Errors) > 0 {
			p.Status = http.StatusUnprocessableEntity
		}
	}
	p.Nonce, _ = headers.NonceFromContext(r.Context())
	p.SRI = a.scriptSRI
	if h, _ := a.current(r); h != nil {
		if p.CSRF == "" {
			p.CSRF = h.sess.CSRF
		}
		if h.sess.signedIn() {
			p.User = h.sess.User
		}
		if len(h.sess.Flash) > 0 && p.Flash == nil {
			p.Flash = h.sess.Flash
			if err := a.sessions.update(r.Context(), h, func(s *session) error { s.Flash = nil; return nil }); err != nil && !errors.Is(err, errNoSession) {
				a.log.LogAttrs(r.Context(), slog.LevelWarn, "web: flash not cleared", slog.String("error", err.Error()))
			}
		}
	}
	var buf bytes.Buffer
	if err := a.pages[name].Execute(&buf, p); err != nil {
		a.log.LogAttrs(r.Context(), slog.LevelError, "web: template failed", slog.String("page", name), slog.String("error", err.Error()))
		http.Error(w, "Internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(p.Status)
	_, _ = w.Write(buf.Bytes())
}

func (a *App) errorPage(w http.ResponseWriter, r *http.Request, status int, title, text string) {
	a.render(w, r, "error", &page{Title: title, Status: status, Data: text})
}

func (a *App) notFound(w http.ResponseWriter, r *http.Request) {
	a.errorPage(w, r.WithContext(r.Context()), http.StatusNotFound, "Not found", "There is no page at this address.")
}

// unavailable answers when a service or the session store failed: the
// detail goes to the log, never to the page.
func (a *App) unavailable(w http.ResponseWriter, r *http.Request, err error) {
	a.log.LogAttrs(r.Context(), slog.LevelError, "web: dependency failed", slog.String("route", r.Pattern), slog.String("error", err.Error()))
	w.Header().Set("Retry-After", "5")
	a.errorPage(w, r, http.StatusServiceUnavailable, "Temporarily unavailable",
		"A service behind this page did not answer. Nothing was lost; try again in a moment.")
}
