package waf

import (
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3/experimental/plugins"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/wasilibs/go-re2/experimental"
)

// The CRS's regular expressions, screened by RE2.
//
// Go's regexp runs a CRS pattern over a value with its backtracker or its
// NFA, both slow on the CRS's long alternations: it was a third of a JSON
// POST's inspection time. RE2's DFA answers the same question (does the
// pattern match anywhere in the value?) several times faster. The gateway's
// rule sets therefore use an operator that asks RE2 first and, when RE2
// says no, answers no; when RE2 says yes, or cannot say, Go's regexp
// decides and gives the capture groups, exactly as Coraza's own @rx does.
// So a match is always Go's, and a miss is RE2's only where the two agree
// by construction:
//
//   - the value is valid UTF-8 (Go reads an invalid byte as U+FFFD, which
//     a dot or a negated class matches, RE2 as nothing they match: an
//     invalid value goes to Go alone);
//   - the pattern is Coraza's own string, "(?sm)" and the CRS's text, in
//     the syntax both engines implement (RE2's), with no byte escape
//     (those rules keep Coraza's @rx and its byte matcher);
//   - RE2 compiled it within screenMaxMem and ran its DFA to the end (a
//     DFA out of memory is an error, and Go decides).
//
// The CRS's own regression suite, run against the gateway's rule set and
// against Coraza's default configuration (stock @rx), checks that both
// match the same CRS rules in every test; FuzzScreenAgreesWithRegexp
// checks the two engines' answers on arbitrary values.

// screenedRxName is the operator the gateway's CRS rule files use in place
// of @rx.
const screenedRxName = "malaiScreenedRx"

// screenMaxMem bounds what RE2 may hold for one pattern: its program and
// its DFA's cache of states, which grows with the values it has seen and
// is never returned. With the CRS's 305 screened patterns that bounds
// RE2's memory at ~305 MiB whatever requests arrive; a pattern whose
// program needs more is not screened, and a DFA that fills its share
// gives up on that value (Go decides).
const screenMaxMem = 1 << 20

func init() {
	plugins.RegisterOperator(screenedRxName, newScreenedRx)
}

// screenedRx is one pattern, compiled once and shared by every rule that
// has it (it holds no per-rule state).
type screenedRx struct {
	re     *regexp.Regexp
	screen *experimental.Set // nil: RE2 did not compile it; Go alone
	index  int               // its bit in verdictCache; -1: none
}

func newScreenedRx(o plugintypes.OperatorOptions) (plugintypes.Operator, error) {
	if hasByteEscape(o.Arguments) || !utf8.ValidString(o.Arguments) {
		// screenedFS never renames such a rule; one written by hand
		// would need Coraza's byte matcher.
		return nil, fmt.Errorf("waf: @%s: byte escapes need @rx", screenedRxName)
	}
	// Coraza's @rx prefixes (?sm): dot matches newline, ^ and $ lines.
	expr := "(?sm)" + o.Arguments
	build := func() (any, error) {
		re, err := regexp.Compile(expr)
		if err != nil {
			return nil, err
		}
		o := &screenedRx{re: re, index: -1}
		if s, err := experimental.CompileSetWithOptions([]string{expr}, experimental.CompileOptions{MaxMem: screenMaxMem}); err == nil {
			o.screen = s
			o.index = screenIndexes.index(expr)
		}
		return o, nil
	}
	var v any
	var err error
	if o.Memoizer != nil {
		// Shared by every rule set of the process that has the pattern
		// (the whole rule set and the service profile).
		v, err = o.Memoizer.Do("malai-screened-rx:"+expr, build)
	} else {
		v, err = build()
	}
	if err != nil {
		return nil, err
	}
	return v.(*screenedRx), nil
}

// Evaluate is Coraza's @rx with RE2's answer first.
func (o *screenedRx) Evaluate(tx plugintypes.TransactionState, value string) bool {
	if o.screen != nil && utf8.ValidString(value) && !o.screenMatches(tx, value) {
		return false
	}
	if !tx.Capturing() {
		return o.re.MatchString(value)
	}
	// As Coraza's @rx: up to 9 groups, index 0 the whole match, a group
	// that did not take part captured as "".
	match := o.re.FindStringSubmatchIndex(value)
	if match == nil {
		return false
	}
	for i := 0; i < len(match)/2 && i < 9; i++ {
		if match[2*i] >= 0 {
			tx.CaptureField(i, value[match[2*i]:match[2*i+1]])
		} else {
			tx.CaptureField(i, "")
		}
	}
	return true
}

// screenMatches is RE2's answer on a valid UTF-8 value: false only when
// RE2 ran to the end and found no match; remembered for the transaction's
// client (verdictCache).
func (o *screenedRx) screenMatches(tx plugintypes.TransactionState, value string) bool {
	var v *screenVerdicts
	if client, ok := screenClient(tx.ID()); ok && o.index >= 0 {
		if v = verdictCache.verdicts(client, value); v != nil {
			if matched, known := v.answer(o.index); known {
				return matched
			}
		}
	}
	m, err := o.screen.FindAllStringWithError(value, 1)
	if err != nil {
		return true // it cannot say: Go decides, and nothing is kept
	}
	if v != nil {
		v.remember(o.index, len(m) > 0)
	}
	return len(m) > 0
}

// hasByteEscape reports a \x escape in a pattern that spells something
// other than an ASCII character: the only way a CRS pattern can spell a
// byte that is not UTF-8 (Coraza then compiles it with its byte matcher,
// not Go's regexp). \x5c and \x{27} are ASCII, the same character to
// both engines; \x80 to \xff, or a brace spelling anything above 7f, is
// a byte to Coraza; whatever does not parse counts as one too.
func hasByteEscape(p string) bool {
	for i := 0; i+1 < len(p); i++ {
		if p[i] != '\\' {
			continue
		}
		if p[i+1] != 'x' {
			i++ // an escaped backslash does not start an escape
			continue
		}
		hex := p[i+2:]
		if strings.HasPrefix(hex, "{") {
			end := strings.IndexByte(hex, '}')
			if end < 0 {
				return true
			}
			hex = hex[1:end]
		} else if len(hex) >= 2 {
			hex = hex[:2]
		}
		v, err := strconv.ParseUint(hex, 16, 32)
		if err != nil || v > 0x7f {
			return true
		}
		i++
	}
	return false
}

// screenedFS is the CRS's file system with its rule files' @rx operators
// renamed to the screened operator, where the pattern qualifies.
type screenedFS struct{ fs.FS }

// screenedRules are the CRS rule files, renamed and without logdata
// (dropLogdata), from the files the WAF has already read (embeddedRules).
var screenedRules = sync.OnceValues(func() (map[string][]byte, error) {
	files, err := embeddedRules()
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(files))
	for _, f := range files {
		if f.crs {
			out[f.name] = []byte(dropLogdata(screenRx(f.text)))
		}
	}
	return out, nil
})

// rulesFS is the root the gateway's rule sets are read from.
func rulesFS() (fs.FS, error) {
	if _, err := screenedRules(); err != nil {
		return nil, err
	}
	return screenedFS{coreruleset.FS}, nil
}

// ReadFile returns a renamed rule file, or the file itself.
func (s screenedFS) ReadFile(name string) ([]byte, error) {
	if files, err := screenedRules(); err == nil {
		if data, ok := files[path.Clean(name)]; ok {
			return append([]byte(nil), data...), nil
		}
	}
	return fs.ReadFile(s.FS, name)
}

// screenRx renames, in a SecLang text, every `"@rx ` and `"!@rx `
// operator whose pattern spells no byte (hasByteEscape) to the screened
// operator.
// The pattern runs to the next quote not escaped by a backslash; a
// pattern that does not end on its line is left alone.
func screenRx(text string) string {
	var b strings.Builder
	b.Grow(len(text) + len(text)/50)
	for {
		i := strings.Index(text, `@rx `)
		if i < 0 {
			b.WriteString(text)
			return b.String()
		}
		start := i + len(`@rx `)
		quoted := i > 0 && text[i-1] == '"' || i > 1 && text[i-1] == '!' && text[i-2] == '"'
		end := patternEnd(text[start:])
		b.WriteString(text[:i])
		if quoted && end >= 0 {
			p := strings.ReplaceAll(text[start:start+end], `\"`, `"`)
			if !hasByteEscape(p) && utf8.ValidString(p) {
				b.WriteString("@" + screenedRxName + " ")
			} else {
				b.WriteString(`@rx `)
			}
		} else {
			b.WriteString(`@rx `)
		}
		text = text[start:]
	}
}

// patternEnd is the index of the quote that ends an operator's argument
// in s, or -1 when the line ends first.
func patternEnd(s string) int {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		case '\n':
			return -1
		}
	}
	return -1
}
