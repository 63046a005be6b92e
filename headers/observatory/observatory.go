package observatory

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Test names, as the Observatory reports them.
const (
	TestCSP           = "content-security-policy"
	TestCookies       = "cookies"
	TestCORS          = "cross-origin-resource-sharing"
	TestRedirection   = "redirection"
	TestReferrer      = "referrer-policy"
	TestHSTS          = "strict-transport-security"
	TestSRI           = "subresource-integrity"
	TestContentType   = "x-content-type-options"
	TestFrameOptions  = "x-frame-options"
	TestCORP          = "cross-origin-resource-policy"
	extraCreditFloor  = 90
	sixMonthsSeconds  = 15_552_000 // the Observatory's "white lie" for six months
	defaultProbeOrgin = "https://http-observatory.security.mozilla.org"
)

// Modifiers is the score modifier of every test result, from the
// Observatory's score table (mdn/mdn-http-observatory,
// src/grader/charts.js). The package documentation prints it.
var Modifiers = map[string]int{
	// Content Security Policy
	"csp-implemented-with-no-unsafe-default-src-none":              10,
	"csp-implemented-with-no-unsafe":                               5,
	"csp-implemented-with-unsafe-inline-in-style-src-only":         0,
	"csp-implemented-but-duplicate-directives":                     0,
	"csp-implemented-with-insecure-scheme-in-passive-content-only": -10,
	"csp-implemented-with-unsafe-eval":                             -10,
	"csp-implemented-with-unsafe-inline":                           -20,
	"csp-implemented-with-insecure-scheme":                         -20,
	"csp-header-invalid":                                           -25,
	"csp-not-implemented":                                          -25,
	"csp-not-implemented-but-reporting-enabled":                    -25,
	// Cookies
	"cookies-secure-with-httponly-sessions-and-samesite":        5,
	"cookies-secure-with-httponly-sessions":                     0,
	"cookies-not-found":                                         0,
	"cookies-without-secure-flag-but-protected-by-hsts":         -5,
	"cookies-session-without-secure-flag-but-protected-by-hsts": -10,
	"cookies-without-secure-flag":                               -20,
	"cookies-samesite-flag-invalid":                             -20,
	"cookies-anticsrf-without-samesite-flag":                    -20,
	"cookies-session-without-httponly-flag":                     -30,
	"cookies-session-without-secure-flag":                       -40,
	// CORS
	"cross-origin-resource-sharing-not-implemented":                    0,
	"cross-origin-resource-sharing-implemented-with-public-access":     0,
	"cross-origin-resource-sharing-implemented-with-restricted-access": 0,
	"cross-origin-resource-sharing-implemented-with-universal-access":  -50,
	// Redirection
	"redirection-all-redirects-preloaded":             0,
	"redirection-to-https":                            0,
	"redirection-not-needed-no-http":                  0,
	"redirection-off-host-from-http":                  -5,
	"redirection-not-to-https-on-initial-redirection": -10,
	"redirection-missing":                             -20,
	"redirection-not-to-https":                        -20,
	"redirection-invalid-cert":                        -20,
	// Referrer-Policy
	"referrer-policy-private":         5,
	"referrer-policy-not-implemented": 0,
	"referrer-policy-unsafe":          -5,
	"referrer-policy-header-invalid":  -5,
	// HSTS
	"hsts-preloaded": 5,
	"hsts-implemented-max-age-at-least-six-months":  0,
	"hsts-implemented-max-age-less-than-six-months": -10,
	"hsts-not-implemented":                          -20,
	"hsts-header-invalid":                           -20,
	"hsts-not-implemented-no-https":                 -20,
	"hsts-invalid-cert":                             -20,
	// Subresource Integrity (only the header-decidable result)
	"sri-not-implemented-response-not-html": 0,
	// X-Content-Type-Options
	"x-content-type-options-nosniff":         0,
	"x-content-type-options-not-implemented": -5,
	"x-content-type-options-header-invalid":  -5,
	// X-Frame-Options
	"x-frame-options-implemented-via-csp": 5,
	"x-frame-options-sameorigin-or-deny":  0,
	"x-frame-options-allow-from-origin":   0,
	"x-frame-options-not-implemented":     -20,
	"x-frame-options-header-invalid":      -20,
	// Cross-Origin-Resource-Policy
	"corp-implemented-with-same-origin":  10,
	"corp-implemented-with-same-site":    10,
	"corp-implemented-with-cross-origin": 0,
	"corp-not-implemented":               0,
	"corp-header-invalid":                -5,
}

// Input is what a scan observed.
type Input struct {
	// Header is the final response's header (after redirects).
	Header http.Header
	// TLS reports that the final response came over HTTPS with a valid
	// certificate chain. Without it HSTS scores hsts-not-implemented-no-https.
	TLS bool
	// Preloaded reports that the host is on the browsers' HSTS preload
	// list (the Observatory looks it up; offline, the caller says so).
	Preloaded bool
	// Redirects is the chain of URLs followed from the initial http://
	// URL: the first element is that URL, each next one the Location of
	// the previous response, the last the final URL. Empty: the
	// redirection test is not run.
	Redirects []string
	// ProbeOrigin is the Origin the scan sent, to spot an
	// Access-Control-Allow-Origin that reflects it. Empty means the
	// Observatory's own origin.
	ProbeOrigin string
}

// TestResult is one test's outcome.
type TestResult struct {
	Name     string // e.g. "content-security-policy"
	Result   string // e.g. "csp-implemented-with-no-unsafe-default-src-none"
	Modifier int
	Pass     bool
}

// Result is the graded scan. Tests holds only the tests the input allowed
// to run, in the Observatory's order.
type Result struct {
	Score int
	Grade string
	Tests []TestResult
}

// Test returns the result of the named test, if it ran.
func (r Result) Test(name string) (TestResult, bool) {
	for _, t := range r.Tests {
		if t.Name == name {
			return t, true
		}
	}
	return TestResult{}, false
}

// Score grades the header-only tests of one response: CSP, cookies, CORS,
// Referrer-Policy, HSTS, X-Content-Type-Options, X-Frame-Options, CORP,
// and SRI when the response is not HTML.
func Score(h http.Header, isTLS bool) Result {
	return Evaluate(Input{Header: h, TLS: isTLS})
}

// Evaluate runs every test the input allows and grades the result: start
// at 100, subtract the penalties; if that is at least 90, add the bonuses
// too; never below 0.
func Evaluate(in Input) Result {
	h := in.Header
	if h == nil {
		h = http.Header{}
	}
	csp := cspTest(h, in.TLS)
	hsts := hstsTest(h, in.TLS, in.Preloaded)
	var tests []TestResult
	add := func(name, result string, pass bool) {
		tests = append(tests, TestResult{Name: name, Result: result, Modifier: Modifiers[result], Pass: pass})
	}
	add(TestCSP, csp.result, csp.pass)
	c := cookiesTest(h, hsts.pass)
	add(TestCookies, c, c == "cookies-not-found" || c == "cookies-secure-with-httponly-sessions-and-samesite" || c == "cookies-secure-with-httponly-sessions")
	cors := corsTest(h, in.ProbeOrigin)
	add(TestCORS, cors, cors != "cross-origin-resource-sharing-implemented-with-universal-access")
	if len(in.Redirects) > 0 {
		r := redirectionTest(in.Redirects)
		add(TestRedirection, r, Modifiers[r] >= 0)
	}
	ref := referrerTest(h)
	add(TestReferrer, ref, ref != "referrer-policy-unsafe" && ref != "referrer-policy-header-invalid")
	add(TestHSTS, hsts.result, hsts.pass)
	if !isHTML(h) {
		add(TestSRI, "sri-not-implemented-response-not-html", true)
	}
	xcto := contentTypeOptionsTest(h)
	add(TestContentType, xcto, xcto == "x-content-type-options-nosniff")
	xfo := frameOptionsTest(h, csp)
	add(TestFrameOptions, xfo, Modifiers[xfo] >= 0)
	corp := corpTest(h)
	add(TestCORP, corp, corp != "corp-header-invalid")

	withBonus, penalties := 100, 100
	for _, t := range tests {
		withBonus += t.Modifier
		if t.Modifier < 0 {
			penalties += t.Modifier
		}
	}
	score := penalties
	if penalties >= extraCreditFloor {
		score = withBonus
	}
	score = max(score, 0)
	return Result{Score: score, Grade: Grade(score), Tests: tests}
}

// Grade maps a score to the Observatory's letter grade.
func Grade(score int) string {
	switch {
	case score >= 100:
		return "A+"
	case score >= 90:
		return "A"
	case score >= 85:
		return "A-"
	case score >= 80:
		return "B+"
	case score >= 70:
		return "B"
	case score >= 65:
		return "B-"
	case score >= 60:
		return "C+"
	case score >= 50:
		return "C"
	case score >= 45:
		return "C-"
	case score >= 40:
		return "D+"
	case score >= 30:
		return "D"
	case score >= 25:
		return "D-"
	}
	return "F"
}

func isHTML(h http.Header) bool {
	ct := strings.ToLower(h.Get("Content-Type"))
	return strings.HasPrefix(ct, "text/html") || strings.HasPrefix(ct, "application/xhtml")
}

func first(h http.Header, name string) (string, bool) {
	v := h.Values(name)
	if len(v) == 0 {
		return "", false
	}
	s := v[0]
	if len(s) > 1024 {
		s = s[:1024] // as the Observatory does, against hostile headers
	}
	return s, true
}

// --- CSP -------------------------------------------------------------------

type cspOutcome struct {
	result     string
	pass       bool
	directives map[string][]string // nil unless a policy was enforced and parsed
}

var (
	dangerouslyBroad = []string{"ftp:", "http:", "https:", "*", "http://*", "http://*.*", "https://*", "https://*.*"}
	unsafeInline     = []string{"'unsafe-inline'", "data:"}
)

func anyIn(vals []string, set ...[]string) bool {
	for _, v := range vals {
		for _, s := range set {
			if slices.Contains(s, v) {
				return true
			}
		}
	}
	return false
}

func hasNonceOrHash(vals []string) bool {
	for _, v := range vals {
		for _, p := range []string{"'sha256-", "'sha384-", "'sha512-", "'nonce-"} {
			if strings.HasPrefix(v, p) {
				return true
			}
		}
	}
	return false
}

// parsePolicies follows the Observatory's parser: header values split on
// commas into policies, directives lower-cased, sources lower-cased, an
// empty -src directive means 'none', a repeated directive (other than
// report-uri/report-to) makes the header invalid. Several policies are
// combined by keeping, per directive, the sources every policy that sets
// it allows (exact match; the Observatory also matches path prefixes).
func parsePolicies(values []string) (map[string][]string, bool, bool) {
	var policies []string
	for _, v := range values {
		for p := range strings.SplitSeq(v, ",") {
			policies = append(policies, strings.TrimSpace(strings.NewReplacer("\r", "", "\n", "").Replace(p)))
		}
	}
	if len(policies) == 0 {
		return nil, false, true
	}
	out := map[string][]string{}
	duplicates := false
	for i, pol := range policies {
		if len(pol) < len("img-src")-1 {
			return nil, false, false
		}
		seen := map[string]bool{}
		for raw := range strings.SplitSeq(pol, ";") {
			f := strings.Fields(raw)
			if len(f) == 0 {
				continue
			}
			d := strings.ToLower(f[0])
			if seen[d] {
				if d == "report-uri" || d == "report-to" {
					duplicates = true
					continue
				}
				return nil, false, false
			}
			seen[d] = true
			var vals []string
			for _, s := range f[1:] {
				vals = append(vals, strings.ToLower(s))
			}
			if len(vals) == 0 && strings.HasSuffix(d, "-src") {
				vals = []string{"'none'"}
			}
			if prev, ok := out[d]; ok && i > 0 {
				var both []string
				for _, s := range vals {
					if slices.Contains(prev, s) {
						both = append(both, s)
					}
				}
				if len(both) == 0 {
					both = []string{"'none'"}
				}
				vals = both
			}
			out[d] = vals
		}
	}
	return out, duplicates, true
}

func cspTest(h http.Header, isTLS bool) cspOutcome {
	vals := h.Values("Content-Security-Policy")
	csp, duplicates, ok := parsePolicies(vals)
	if !ok {
		return cspOutcome{result: "csp-header-invalid"}
	}
	if len(csp) == 0 {
		if _, ro := first(h, "Content-Security-Policy-Report-Only"); ro {
			return cspOutcome{result: "csp-not-implemented-but-reporting-enabled"}
		}
		return cspOutcome{result: "csp-not-implemented"}
	}
	get := func(names ...string) []string {
		for _, n := range names {
			if v, ok := csp[n]; ok {
				return slices.Clone(v)
			}
		}
		return []string{"*"}
	}
	objectSrc := get("object-src", "default-src")
	scriptSrc := get("script-src", "default-src")
	styleSrc := get("style-src", "default-src")
	dropUnsafeInline := func(v []string) []string {
		if hasNonceOrHash(v) {
			return slices.DeleteFunc(v, func(s string) bool { return s == "'unsafe-inline'" })
		}
		return v
	}
	scriptSrc, styleSrc = dropUnsafeInline(scriptSrc), dropUnsafeInline(styleSrc)
	result := ""
	set := func(r string) {
		if result == "" {
			result = r
		}
	}
	if hasNonceOrHash(scriptSrc) && slices.Contains(scriptSrc, "'strict-dynamic'") {
		scriptSrc = slices.DeleteFunc(scriptSrc, func(s string) bool {
			for _, b := range dangerouslyBroad {
				if strings.HasPrefix(s, b) {
					return true
				}
			}
			return s == "'self'" || s == "'unsafe-inline'"
		})
	} else if slices.Contains(scriptSrc, "'strict-dynamic'") {
		set("csp-header-invalid")
	}
	var active, passive []string
	for d, v := range csp {
		if d != "img-src" && d != "media-src" && d != "script-src" {
			active = append(active, v...)
		}
	}
	active = append(active, scriptSrc...)
	for _, d := range []string{"img-src", "media-src"} {
		if v, ok := csp[d]; ok {
			passive = append(passive, v...)
		} else {
			passive = append(passive, csp["default-src"]...)
		}
	}
	insecure := func(vs []string) bool {
		for _, s := range vs {
			if strings.HasPrefix(s, "http:") || strings.HasPrefix(s, "ftp:") {
				return true
			}
		}
		return false
	}
	if anyIn(scriptSrc, dangerouslyBroad, unsafeInline) || anyIn(objectSrc, dangerouslyBroad) {
		set("csp-implemented-with-unsafe-inline")
	}
	if isTLS && insecure(active) {
		set("csp-implemented-with-insecure-scheme")
	}
	if slices.Contains(scriptSrc, "'unsafe-eval'") || slices.Contains(styleSrc, "'unsafe-eval'") {
		set("csp-implemented-with-unsafe-eval")
	}
	if isTLS && insecure(passive) {
		set("csp-implemented-with-insecure-scheme-in-passive-content-only")
	}
	if anyIn(styleSrc, dangerouslyBroad, unsafeInline) {
		set("csp-implemented-with-unsafe-inline-in-style-src-only")
	}
	if d := csp["default-src"]; len(d) == 1 && d[0] == "'none'" {
		set("csp-implemented-with-no-unsafe-default-src-none")
	} else {
		set("csp-implemented-with-no-unsafe")
	}
	pass := slices.Contains([]string{"csp-implemented-with-no-unsafe", "csp-implemented-with-no-unsafe-default-src-none",
		"csp-implemented-with-unsafe-inline-in-style-src-only", "csp-implemented-with-insecure-scheme-in-passive-content-only"}, result)
	if pass && duplicates {
		result = "csp-implemented-but-duplicate-directives"
	}
	return cspOutcome{result: result, pass: pass, directives: csp}
}

// --- Cookies ---------------------------------------------------------------

// cookieBadness orders the failing cookie results, least bad first.
var cookieBadness = []string{
	"cookies-without-secure-flag-but-protected-by-hsts",
	"cookies-without-secure-flag",
	"cookies-session-without-secure-flag-but-protected-by-hsts",
	"cookies-samesite-flag-invalid",
	"cookies-anticsrf-without-samesite-flag",
	"cookies-session-without-httponly-flag",
	"cookies-session-without-secure-flag",
}

func cookiesTest(h http.Header, hsts bool) string {
	raw := h.Values("Set-Cookie")
	result := ""
	worse := func(r string) {
		if slices.Index(cookieBadness, r) > slices.Index(cookieBadness, result) {
			result = r
		}
	}
	found, missingSameSite := false, false
	for _, line := range raw {
		c, err := http.ParseSetCookie(line)
		if err != nil {
			continue
		}
		found = true
		sameSite := ""
		for attr := range strings.SplitSeq(line, ";") {
			k, v, _ := strings.Cut(strings.TrimSpace(attr), "=")
			if strings.EqualFold(strings.TrimSpace(k), "samesite") {
				sameSite = strings.ToLower(strings.TrimSpace(v))
				if sameSite != "lax" && sameSite != "strict" && sameSite != "none" {
					worse("cookies-samesite-flag-invalid")
				}
			}
		}
		name := strings.ToLower(c.Name)
		session := strings.Contains(name, "login") || strings.Contains(name, "sess")
		csrf := strings.Contains(name, "csrf")
		if !c.Secure && sameSite == "none" {
			worse("cookies-samesite-flag-invalid")
		}
		if !c.Secure {
			if hsts {
				worse("cookies-without-secure-flag-but-protected-by-hsts")
			} else {
				worse("cookies-without-secure-flag")
			}
		}
		if csrf && sameSite == "" {
			worse("cookies-anticsrf-without-samesite-flag")
		}
		if session && !c.Secure {
			if hsts {
				worse("cookies-session-without-secure-flag-but-protected-by-hsts")
			} else {
				worse("cookies-session-without-secure-flag")
			}
		}
		if session && !c.HttpOnly {
			worse("cookies-session-without-httponly-flag")
		}
		if sameSite == "" {
			missingSameSite = true
		}
	}
	switch {
	case !found:
		return "cookies-not-found"
	case result != "":
		return result
	case missingSameSite:
		return "cookies-secure-with-httponly-sessions"
	}
	return "cookies-secure-with-httponly-sessions-and-samesite"
}

// --- CORS, redirection, Referrer-Policy, HSTS, XCTO, XFO, CORP -------------

func corsTest(h http.Header, probe string) string {
	acao, ok := first(h, "Access-Control-Allow-Origin")
	if !ok {
		return "cross-origin-resource-sharing-not-implemented"
	}
	acao = strings.ToLower(strings.TrimSpace(acao))
	if probe == "" {
		probe = defaultProbeOrgin
	}
	acac, _ := first(h, "Access-Control-Allow-Credentials")
	switch {
	case acao == "*":
		return "cross-origin-resource-sharing-implemented-with-public-access"
	case acao == strings.ToLower(probe) && strings.EqualFold(strings.TrimSpace(acac), "true"):
		return "cross-origin-resource-sharing-implemented-with-universal-access"
	}
	return "cross-origin-resource-sharing-implemented-with-restricted-access"
}

func redirectionTest(chain []string) string {
	urls := make([]*url.URL, 0, len(chain))
	for _, s := range chain {
		u, err := url.Parse(s)
		if err != nil {
			return "redirection-not-to-https"
		}
		urls = append(urls, u)
	}
	if urls[0].Scheme == "https" {
		return "redirection-not-needed-no-http"
	}
	if len(urls) == 1 {
		return "redirection-missing"
	}
	final := urls[len(urls)-1]
	switch {
	case final.Scheme != "https":
		return "redirection-not-to-https"
	case urls[1].Scheme != "https":
		return "redirection-not-to-https-on-initial-redirection"
	case !strings.EqualFold(urls[1].Hostname(), urls[0].Hostname()):
		return "redirection-off-host-from-http"
	}
	return "redirection-to-https"
}

func referrerTest(h http.Header) string {
	vals := h.Values("Referrer-Policy")
	if len(vals) == 0 {
		return "referrer-policy-not-implemented"
	}
	private := []string{"no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"}
	unsafe := []string{"origin", "origin-when-cross-origin", "unsafe-url", "no-referrer-when-downgrade"}
	last := ""
	for _, v := range vals {
		for tok := range strings.SplitSeq(v, ",") {
			tok = strings.ToLower(strings.TrimSpace(tok))
			if slices.Contains(private, tok) || slices.Contains(unsafe, tok) {
				last = tok // the browser uses the last policy it recognises
			}
		}
	}
	switch {
	case slices.Contains(private, last):
		return "referrer-policy-private"
	case slices.Contains(unsafe, last):
		return "referrer-policy-unsafe"
	}
	return "referrer-policy-header-invalid"
}

type hstsOutcome struct {
	result string
	pass   bool
}

func hstsTest(h http.Header, isTLS, preloaded bool) hstsOutcome {
	if !isTLS {
		return hstsOutcome{result: "hsts-not-implemented-no-https"}
	}
	out := hstsOutcome{result: "hsts-not-implemented"}
	if v, ok := first(h, "Strict-Transport-Security"); ok {
		out.result = "hsts-header-invalid"
		maxAge := -1
		if !strings.Contains(v, ",") {
			for p := range strings.SplitSeq(v, ";") {
				p = strings.ToLower(strings.TrimSpace(p))
				if n, ok := strings.CutPrefix(p, "max-age="); ok {
					if age, err := strconv.Atoi(strings.Trim(n, `"`)); err == nil && age >= 0 {
						maxAge = age
					}
				}
			}
		}
		switch {
		case maxAge < 0:
		case maxAge < sixMonthsSeconds:
			out.result = "hsts-implemented-max-age-less-than-six-months"
		default:
			out.result = "hsts-implemented-max-age-at-least-six-months"
		}
	}
	if preloaded {
		out.result = "hsts-preloaded"
	}
	out.pass = out.result == "hsts-implemented-max-age-at-least-six-months" || out.result == "hsts-preloaded"
	return out
}

func contentTypeOptionsTest(h http.Header) string {
	v, ok := first(h, "X-Content-Type-Options")
	switch {
	case !ok:
		return "x-content-type-options-not-implemented"
	case strings.EqualFold(strings.TrimSpace(v), "nosniff"):
		return "x-content-type-options-nosniff"
	}
	return "x-content-type-options-header-invalid"
}

func frameOptionsTest(h http.Header, csp cspOutcome) string {
	result := "x-frame-options-not-implemented"
	if v, ok := first(h, "X-Frame-Options"); ok {
		v = strings.ToLower(strings.TrimSpace(v))
		switch {
		case v == "deny" || v == "sameorigin":
			result = "x-frame-options-sameorigin-or-deny"
		case strings.HasPrefix(v, "allow-from"):
			result = "x-frame-options-allow-from-origin"
		default:
			result = "x-frame-options-header-invalid"
		}
	}
	if _, ok := csp.directives["frame-ancestors"]; ok && csp.result != "csp-header-invalid" {
		result = "x-frame-options-implemented-via-csp"
	}
	return result
}

func corpTest(h http.Header) string {
	v, ok := first(h, "Cross-Origin-Resource-Policy")
	if !ok {
		return "corp-not-implemented"
	}
	if len(v) > 256 {
		v = v[:256]
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "same-origin":
		return "corp-implemented-with-same-origin"
	case "same-site":
		return "corp-implemented-with-same-site"
	case "cross-origin":
		return "corp-implemented-with-cross-origin"
	}
	return "corp-header-invalid"
}
