package waf

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
)

func TestHasByteEscape(t *testing.T) {
	for _, tc := range []struct {
		p    string
		want bool
	}{
		{`union\s+select`, false},
		{`[\x5c/]`, false},    // a backslash: ASCII
		{`\x{27}`, false},     // a quote, braced
		{`\\x80`, false},      // an escaped backslash, then "x80"
		{`[\x80-\xff]`, true}, // bytes to Coraza's matcher
		{`\x{bc}`, true},      // above 7f, braced
		{`\x{2028}`, true},    // a character to Go, a byte run to Coraza: kept
		{`\xZZ`, true},        // does not parse: kept
		{`\x{41`, true},       // unterminated brace: kept
		{`abc\`, false},       // a trailing backslash escapes nothing
		{`\\\x00`, false},     // escaped backslash, then NUL: ASCII
		{`(?i)\x3c\x73cript`, false},
	} {
		if got := hasByteEscape(tc.p); got != tc.want {
			t.Errorf("hasByteEscape(%q) = %v, want %v", tc.p, got, tc.want)
		}
	}
}

func TestScreenRxRenames(t *testing.T) {
	scr := "@" + screenedRxName + " "
	for _, tc := range []struct{ in, want string }{
		{`SecRule ARGS "@rx union\s+select" "id:1"`, `SecRule ARGS "` + scr + `union\s+select" "id:1"`},
		{`SecRule ARGS "!@rx ^[a-z]+$" "id:1"`, `SecRule ARGS "!` + scr + `^[a-z]+$" "id:1"`},
		{`SecRule ARGS "@rx a\"b" "id:1"`, `SecRule ARGS "` + scr + `a\"b" "id:1"`},
		{`SecRule ARGS "@rx [\x80-\xff]" "id:1"`, `SecRule ARGS "@rx [\x80-\xff]" "id:1"`},
		{`SecRule ARGS "@rx [\x5c/]" "id:1"`, `SecRule ARGS "` + scr + `[\x5c/]" "id:1"`},
		// Not an operator: a message naming it, an unquoted or unterminated one.
		{`SecAction "id:1,msg:'uses @rx here'"`, `SecAction "id:1,msg:'uses @rx here'"`},
		{`SecRule ARGS @rx abc "id:1"`, `SecRule ARGS @rx abc "id:1"`},
		{"SecRule ARGS \"@rx abc\n\"id:1\"", "SecRule ARGS \"@rx abc\n\"id:1\""},
		{`SecRule ARGS "@pm rx" "id:1"`, `SecRule ARGS "@pm rx" "id:1"`},
	} {
		if got := screenRx(tc.in); got != tc.want {
			t.Errorf("screenRx(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

// TestCRSRulesScreened checks the renamed rule files: every @rx left is a
// byte pattern, and the gateway's rule sets compile from them.
func TestCRSRulesScreened(t *testing.T) {
	files, err := screenedRules()
	if err != nil {
		t.Fatal(err)
	}
	screened := 0
	for name, data := range files {
		text := string(data)
		screened += strings.Count(text, "@"+screenedRxName+" ")
		for _, p := range operatorPatterns(text, "@rx ") {
			if !hasByteEscape(p) && utf8.ValidString(p) {
				t.Errorf("%s: @rx %q left unscreened", name, p)
			}
		}
	}
	if screened < 250 {
		t.Fatalf("%d CRS patterns screened, want most of the ~315", screened)
	}
}

// operatorPatterns returns the quoted arguments of operator op in text.
func operatorPatterns(text, op string) []string {
	var out []string
	for {
		i := strings.Index(text, op)
		if i < 0 {
			return out
		}
		text = text[i+len(op):]
		if end := patternEnd(text); end >= 0 {
			out = append(out, strings.ReplaceAll(text[:end], `\"`, `"`))
		}
	}
}

// screenedPatterns are the CRS's screened patterns, as Coraza receives
// them, with Go's and RE2's compiled forms.
func screenedPatterns(t testing.TB) []*screenedRx {
	files, err := screenedRules()
	if err != nil {
		t.Fatal(err)
	}
	var out []*screenedRx
	for _, data := range files {
		for _, p := range operatorPatterns(string(data), "@"+screenedRxName+" ") {
			op, err := newScreenedRx(pluginOptions(p))
			if err != nil {
				t.Fatalf("%q: %v", p, err)
			}
			out = append(out, op.(*screenedRx))
		}
	}
	return out
}

// TestScreenedRxDecidesAsRegexp runs the rule operator through the WAF: a
// match and its captures are Go's, and a value with an invalid byte, which
// Go reads as U+FFFD and RE2 as nothing a dot or a negated class matches,
// is matched where Go's regexp matches it.
func TestScreenedRxDecidesAsRegexp(t *testing.T) {
	cfg := GatewayConfig()
	// The captured group must be what Go's leftmost-first match gives.
	cfg.AfterCRS = `SecRule REQUEST_HEADERS:X-Probe "@` + screenedRxName + ` (a+?)(b|bc).attack" "id:99101,phase:1,capture,chain,deny,status:403"
	SecRule TX:2 "@streq b" ""
SecRule REQUEST_HEADERS:X-Probe2 "!@` + screenedRxName + ` ^safe$" "id:99102,phase:1,deny,status:403"
`
	w := newSuiteWAF(t, cfg)
	h := w.Handler(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { rw.WriteHeader(http.StatusNoContent) }))
	for _, tc := range []struct {
		name, header, value string
		want                int
	}{
		{"benign", "X-Probe", "hello", 204},
		{"match, group 2 is b", "X-Probe", "xaabc-attack", 204}, // (b|bc) takes bc: the chain fails
		{"match, group 2 b", "X-Probe", "xaab-attack", 403},
		{"invalid bytes, no match (the CRS lets them by here)", "X-Probe", "\xff\xfeaabc-attack", 204},
		{"invalid byte before the match", "X-Probe", "\xff\xfeaab-attack", 403},
		// Go reads the byte as U+FFFD, which . matches; RE2 does not.
		{"invalid byte where the pattern has a dot", "X-Probe", "aab\xffattack", 403},
		{"negated, matching", "X-Probe2", "safe", 204},
		{"negated, not matching", "X-Probe2", "unsafe", 403},
		{"negated, invalid byte", "X-Probe2", "safe\xff", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("User-Agent", "malai-test/1.0")
			r.Header.Set("Accept", "text/html")
			r.Header.Set(tc.header, tc.value)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != tc.want {
				t.Fatalf("%s: %q: status %d, want %d", tc.header, tc.value, rec.Code, tc.want)
			}
		})
	}
}

// screenMisses reports whether c's screen answers "no match" for v, and
// whether Go's regexp then disagrees.
func screenMisses(c *screenedRx, v string) (miss, disagree bool) {
	if c.screen == nil {
		return false, false
	}
	if m, err := c.screen.FindAllStringWithError(v, 1); err != nil || len(m) > 0 {
		return false, false
	}
	return true, c.re.MatchString(v)
}

// FuzzScreenAgreesWithRegexp: where the screen answers (valid UTF-8, the
// DFA ran to the end), a miss is a miss to Go's regexp too, for every
// screened CRS pattern over the same value; and the operator, with its
// remembered answers, decides as the two do.
func FuzzScreenAgreesWithRegexp(f *testing.F) {
	pats := screenedPatterns(f)
	for _, s := range []string{"", "hello", "1' OR '1'='1' --", "<script>alert(1)</script>", "$(cat /etc/passwd)",
		"; cat /etc/passwd", "../../etc/passwd", "${jndi:ldap://x/a}", "union select password from users",
		"SELECT * FROM users WHERE id=1", "\u212aelvin", "ſcript", "a\nb\r\nc", "İstanbul", "eval(atob('x'))"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if !utf8.ValidString(v) {
			return // Go alone decides: not the screen's
		}
		for _, c := range pats {
			miss, disagree := screenMisses(c, v)
			if disagree {
				t.Fatalf("RE2 misses what Go's regexp matches: %q on %q", c.re.String(), v)
			}
			// The operator, asking RE2 or its remembered answer,
			// decides as Go's regexp, the first time and the next.
			want := !miss && c.re.MatchString(v)
			for range 2 {
				if got := c.Evaluate(noCapture{}, v); got != want {
					t.Fatalf("the operator answers %v, RE2 and Go %v: %q on %q", got, want, c.re.String(), v)
				}
			}
		}
	})
}

// TestScreenAgreesOnCRSPayloads runs the check of the fuzz test over the
// payloads the CRS's regression suite sends (every argument, header and
// body value), and URL-decoded and lower-cased as most rules see them.
func TestScreenAgreesOnCRSPayloads(t *testing.T) {
	pats := screenedPatterns(t)
	values := map[string]bool{}
	for _, c := range loadSuite(t) {
		for _, st := range c.stages {
			in := st.Input
			var vs []string
			for _, p := range []*string{in.URI, in.Data} {
				if p != nil {
					vs = append(vs, *p)
				}
			}
			for _, h := range in.Headers {
				vs = append(vs, fmt.Sprint(h.Value))
			}
			for _, s := range vs {
				values[s] = true
				if d, err := url.QueryUnescape(s); err == nil {
					values[strings.ToLower(d)] = true
				}
			}
		}
	}
	checked, i := 0, 0
	for v := range values {
		// A quarter of them (a thirty-second under the race detector):
		// the CRS suite runs every payload through both rule sets.
		if i++; i%4 != 0 || (raceEnabled || testing.Short()) && i%32 != 0 {
			continue
		}
		if !utf8.ValidString(v) {
			continue
		}
		for _, c := range pats {
			miss, disagree := screenMisses(c, v)
			if miss {
				checked++
			}
			if disagree {
				t.Errorf("RE2 misses what Go's regexp matches: %q on %q", c.re.String(), v)
			}
		}
	}
	if checked == 0 {
		t.Fatal("nothing checked")
	}
	t.Logf("%d values, %d misses checked against Go's regexp", len(values), checked)
}

func pluginOptions(p string) plugintypes.OperatorOptions {
	return plugintypes.OperatorOptions{Arguments: p}
}
