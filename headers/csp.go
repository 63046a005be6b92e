package headers

import (
	"errors"
	"fmt"
	"strings"
)

// NoncePlaceholder is replaced, in a policy given to [App], by a fresh
// 'nonce-…' source on every request, as unrolled/secure's $NONCE is.
const NoncePlaceholder = "$NONCE"

// Errors returned by [ParseCSP] and [Policy.Validate]. They wrap a detail
// naming the directive, so a configuration mistake points at its cause.
var (
	// ErrCSPSyntax: the policy cannot be parsed.
	ErrCSPSyntax = errors.New("headers: malformed Content-Security-Policy")
	// ErrCSPUnsafe: the policy parses but fails the strict rules.
	ErrCSPUnsafe = errors.New("headers: unsafe Content-Security-Policy")
)

// maxPolicyLen bounds what ParseCSP accepts; real policies are a few
// hundred bytes and browsers cap header sizes well below this.
const maxPolicyLen = 16 << 10

// knownDirectives is CSP Level 3 plus the reporting and Trusted Types
// directives. Anything else is rejected so a typo ("object_src") cannot
// silently leave a hole.
var knownDirectives = map[string]bool{
	"default-src": true, "script-src": true, "script-src-elem": true, "script-src-attr": true,
	"style-src": true, "style-src-elem": true, "style-src-attr": true, "img-src": true,
	"font-src": true, "connect-src": true, "media-src": true, "object-src": true,
	"frame-src": true, "child-src": true, "worker-src": true, "manifest-src": true,
	"fenced-frame-src": true, "base-uri": true, "form-action": true, "frame-ancestors": true,
	"sandbox": true, "report-uri": true, "report-to": true, "upgrade-insecure-requests": true,
	"block-all-mixed-content": true, "require-trusted-types-for": true, "trusted-types": true,
	"webrtc": true,
}

// Directive is one directive of a policy: its lower-case name and its
// values (source expressions or tokens) in order.
type Directive struct {
	Name   string
	Values []string
}

// Policy is a parsed Content-Security-Policy. The zero value is an empty
// policy, which [Policy.Validate] rejects. A Policy is immutable once
// parsed and safe for concurrent use.
type Policy struct {
	directives []Directive
}

// ParseCSP parses one serialized policy (CSP3 §2.2.1) strictly: directive
// names must be known, a directive may appear once, values must be
// printable ASCII, and the policy may not contain a comma (which would make
// a header carry two policies). Keyword sources are compared
// case-insensitively and normalised to lower case.
func ParseCSP(s string) (Policy, error) {
	if len(s) > maxPolicyLen {
		return Policy{}, fmt.Errorf("%w: longer than %d bytes", ErrCSPSyntax, maxPolicyLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ',' {
			return Policy{}, fmt.Errorf("%w: a comma separates policies; give one policy", ErrCSPSyntax)
		}
		if (c < 0x20 && c != '\t') || c >= 0x7f {
			return Policy{}, fmt.Errorf("%w: byte 0x%02x at offset %d is not printable ASCII", ErrCSPSyntax, c, i)
		}
	}
	var p Policy
	seen := make(map[string]bool)
	for raw := range strings.SplitSeq(s, ";") {
		fields := strings.Fields(raw)
		if len(fields) == 0 {
			continue
		}
		name := strings.ToLower(fields[0])
		if !knownDirectives[name] {
			return Policy{}, fmt.Errorf("%w: unknown directive %q", ErrCSPSyntax, truncate(fields[0]))
		}
		if seen[name] {
			return Policy{}, fmt.Errorf("%w: directive %s appears twice (browsers ignore the second)", ErrCSPSyntax, name)
		}
		seen[name] = true
		vals := fields[1:]
		for i, v := range vals {
			vals[i] = normaliseSource(v)
		}
		p.directives = append(p.directives, Directive{Name: name, Values: vals})
	}
	if len(p.directives) == 0 {
		return Policy{}, fmt.Errorf("%w: empty policy", ErrCSPSyntax)
	}
	return p, nil
}

// normaliseSource lower-cases keywords and scheme sources; a nonce or
// hash keeps its (case-sensitive) base64 value.
func normaliseSource(v string) string {
	switch {
	case isKeyword(v):
		if i := strings.IndexByte(v, '-'); i > 0 {
			prefix := strings.ToLower(v[:i+1])
			if prefix == "'nonce-" || prefix == "'sha256-" || prefix == "'sha384-" || prefix == "'sha512-" {
				return prefix + v[i+1:]
			}
		}
		return strings.ToLower(v)
	case strings.HasSuffix(v, ":") && !strings.Contains(v, "/"):
		return strings.ToLower(v)
	}
	return v
}

func isKeyword(v string) bool { return len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' }

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// Directives returns a copy of the policy's directives in order.
func (p Policy) Directives() []Directive {
	out := make([]Directive, len(p.directives))
	for i, d := range p.directives {
		out[i] = Directive{Name: d.Name, Values: append([]string(nil), d.Values...)}
	}
	return out
}

// Get returns the values of directive name and whether it is present.
func (p Policy) Get(name string) ([]string, bool) {
	for _, d := range p.directives {
		if d.Name == name {
			return d.Values, true
		}
	}
	return nil, false
}

// String serializes the policy in its canonical form: directives joined by
// "; ", values by single spaces.
func (p Policy) String() string {
	var b strings.Builder
	for i, d := range p.directives {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(d.Name)
		for _, v := range d.Values {
			b.WriteByte(' ')
			b.WriteString(v)
		}
	}
	return b.String()
}

// effective returns the values that govern name, following the fallback
// to default-src that fetch directives have.
func (p Policy) effective(name string) ([]string, bool) {
	if v, ok := p.Get(name); ok {
		return v, true
	}
	return p.Get("default-src")
}

var scriptDirectives = []string{"script-src", "script-src-elem", "script-src-attr"}

// broadSources allow any host (or any host over a scheme): as good as no
// restriction for script or plugin content.
var broadSources = map[string]bool{
	"*": true, "http:": true, "https:": true, "ftp:": true, "data:": true, "blob:": true,
	"filesystem:": true, "http://*": true, "https://*": true, "http://*.*": true, "https://*.*": true,
}

// Validate applies the strict rules every Malai policy must meet:
//
//   - scripts are restricted (script-src or default-src present) and no
//     script directive allows 'unsafe-inline', 'unsafe-eval',
//     'unsafe-hashes', data:, blob: or a wildcard/scheme-only source;
//   - 'strict-dynamic' comes with a nonce or a hash;
//   - object-src is given explicitly (or default-src is exactly 'none')
//     and is not broad;
//   - base-uri and form-action are present (they do not fall back to
//     default-src);
//   - frame-ancestors, when present, is 'none' (X-Frame-Options is DENY);
//   - no source loads over http:, ws: or ftp:, and reports do not travel
//     over http: (the site is HTTPS-only);
//   - no fixed 'nonce-…' source (every response would repeat it; use
//     $NONCE), and $NONCE appears only in script and style directives.
//
// The error wraps [ErrCSPUnsafe] and names the rule that failed.
func (p Policy) Validate() error {
	unsafe := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrCSPUnsafe}, args...)...)
	}
	if len(p.directives) == 0 {
		return unsafe("empty policy")
	}
	if _, ok := p.effective("script-src"); !ok {
		return unsafe("neither script-src nor default-src restricts scripts")
	}
	for _, name := range append([]string{"default-src"}, scriptDirectives...) {
		vals, ok := p.Get(name)
		if !ok {
			continue
		}
		if name == "default-src" {
			if _, own := p.Get("script-src"); own {
				continue // default-src does not govern scripts then
			}
		}
		hasNonceOrHash := false
		for _, v := range vals {
			switch {
			case v == "'unsafe-inline'" || v == "'unsafe-eval'" || v == "'unsafe-hashes'":
				return unsafe("%s allows %s", name, v)
			case broadSources[v]:
				return unsafe("%s allows any source with %s", name, v)
			case v == NoncePlaceholder || strings.HasPrefix(v, "'nonce-") || isHash(v):
				hasNonceOrHash = true
			}
		}
		if hasKeyword(vals, "'strict-dynamic'") && !hasNonceOrHash {
			return unsafe("%s uses 'strict-dynamic' without a nonce or hash", name)
		}
	}
	obj, explicit := p.Get("object-src")
	if !explicit {
		def, ok := p.Get("default-src")
		if !ok || len(def) != 1 || def[0] != "'none'" {
			return unsafe("object-src missing (set object-src 'none')")
		}
		obj = def
	}
	for _, v := range obj {
		if broadSources[v] {
			return unsafe("object-src allows any source with %s", v)
		}
	}
	for _, name := range []string{"base-uri", "form-action"} {
		vals, ok := p.Get(name)
		if !ok {
			return unsafe("%s missing (it does not fall back to default-src)", name)
		}
		for _, v := range vals {
			if broadSources[v] {
				return unsafe("%s allows any source with %s", name, v)
			}
		}
	}
	if fa, ok := p.Get("frame-ancestors"); ok && (len(fa) != 1 || fa[0] != "'none'") {
		return unsafe("frame-ancestors must be 'none' to match X-Frame-Options: DENY")
	}
	for _, d := range p.directives {
		for _, v := range d.Values {
			lv := strings.ToLower(v)
			if insecureSource(lv) {
				return unsafe("%s loads over an insecure scheme (%s)", d.Name, truncate(v))
			}
			if strings.HasPrefix(v, "'nonce-") {
				return unsafe("%s has a fixed nonce, which every response would repeat; use %s", d.Name, NoncePlaceholder)
			}
			if v == NoncePlaceholder && !strings.HasPrefix(d.Name, "script-src") && !strings.HasPrefix(d.Name, "style-src") && d.Name != "default-src" {
				return unsafe("%s placeholder is only meaningful in script-src and style-src, not %s", NoncePlaceholder, d.Name)
			}
		}
	}
	return nil
}

// insecureSource reports a source (or report-uri) over a cleartext scheme.
func insecureSource(lv string) bool {
	for _, scheme := range []string{"http", "ftp", "ws"} {
		if lv == scheme+":" || strings.HasPrefix(lv, scheme+"://") {
			return true
		}
	}
	return false
}

func isHash(v string) bool {
	return strings.HasPrefix(v, "'sha256-") || strings.HasPrefix(v, "'sha384-") || strings.HasPrefix(v, "'sha512-")
}

func hasKeyword(vals []string, kw string) bool {
	for _, v := range vals {
		if v == kw {
			return true
		}
	}
	return false
}

// withFrameAncestors returns p with frame-ancestors 'none' appended when
// the policy does not set it.
func (p Policy) withFrameAncestors() Policy {
	if _, ok := p.Get("frame-ancestors"); ok {
		return p
	}
	ds := append(p.Directives(), Directive{Name: "frame-ancestors", Values: []string{"'none'"}})
	return Policy{directives: ds}
}

// usesNonce reports whether the placeholder appears anywhere.
func (p Policy) usesNonce() bool {
	for _, d := range p.directives {
		if hasKeyword(d.Values, NoncePlaceholder) {
			return true
		}
	}
	return false
}
