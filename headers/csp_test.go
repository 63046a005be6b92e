package headers

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var cspCases = []struct {
	name   string
	policy string
	want   error // from ParseCSP, then Validate
}{
	{"api profile", APIPolicy, nil},
	{"web with nonce", webPolicy, nil},
	{"strict-dynamic with nonce placeholder", "script-src 'strict-dynamic' $NONCE; object-src 'none'; base-uri 'none'; form-action 'self'", nil},
	{"hash source", "default-src 'self'; script-src 'sha256-abc='; object-src 'none'; base-uri 'none'; form-action 'none'", nil},
	{"upper-case keywords", "DEFAULT-SRC 'NONE'; BASE-URI 'NONE'; FORM-ACTION 'NONE'", nil},
	{"extra whitespace and empty directives", " default-src  'none' ;; base-uri 'none';form-action\t'none' ; ", nil},
	{"report-uri over https", APIPolicy + "; report-uri https://example.com/csp", nil},
	{"empty", "", ErrCSPSyntax},
	{"only separators", " ; ;", ErrCSPSyntax},
	{"two policies", "default-src 'none', script-src *", ErrCSPSyntax},
	{"control byte", "default-src 'none'\n; base-uri 'none'", ErrCSPSyntax},
	{"non-ascii", "default-src 'none'; img-src https://exämple.com", ErrCSPSyntax},
	{"unknown directive", "default-src 'none'; object_src 'none'", ErrCSPSyntax},
	{"duplicate directive", "default-src 'none'; default-src *; base-uri 'none'; form-action 'none'", ErrCSPSyntax},
	{"scripts unrestricted", "object-src 'none'; base-uri 'none'; form-action 'none'", ErrCSPUnsafe},
	{"unsafe-inline", "default-src 'self'; script-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; form-action 'self'", ErrCSPUnsafe},
	{"unsafe-eval via default-src", "default-src 'self' 'unsafe-eval'; object-src 'none'; base-uri 'none'; form-action 'self'", ErrCSPUnsafe},
	{"unsafe-hashes", "script-src-attr 'unsafe-hashes'; default-src 'none'; base-uri 'none'; form-action 'none'", ErrCSPUnsafe},
	{"data: scripts", "default-src 'none'; script-src data:; base-uri 'none'; form-action 'none'", ErrCSPUnsafe},
	{"wildcard scripts", "default-src 'none'; script-src *; base-uri 'none'; form-action 'none'", ErrCSPUnsafe},
	{"https: scripts", "default-src 'none'; script-src https:; base-uri 'none'; form-action 'none'", ErrCSPUnsafe},
	{"strict-dynamic alone", "default-src 'none'; script-src 'strict-dynamic'; base-uri 'none'; form-action 'none'", ErrCSPUnsafe},
	{"object-src missing", "default-src 'self'; base-uri 'none'; form-action 'self'", ErrCSPUnsafe},
	{"object-src broad", "default-src 'self'; object-src *; base-uri 'none'; form-action 'self'", ErrCSPUnsafe},
	{"base-uri missing", "default-src 'none'; form-action 'none'", ErrCSPUnsafe},
	{"form-action missing", "default-src 'none'; base-uri 'none'", ErrCSPUnsafe},
	{"form-action broad", "default-src 'none'; base-uri 'none'; form-action https:", ErrCSPUnsafe},
	{"framing allowed", APIPolicy[:len(APIPolicy)-len("; frame-ancestors 'none'")] + "; frame-ancestors *", ErrCSPUnsafe},
	{"insecure image", "default-src 'none'; img-src http://cdn.example.com; base-uri 'none'; form-action 'none'", ErrCSPUnsafe},
	{"cleartext websocket", "default-src 'none'; connect-src ws://api.example.com; base-uri 'none'; form-action 'none'", ErrCSPUnsafe},
	{"cleartext report-uri", APIPolicy + "; report-uri http://example.com/csp", ErrCSPUnsafe},
	{"relative report-uri", APIPolicy + "; report-uri /csp-report", nil},
	{"secure websocket", "default-src 'none'; connect-src wss://api.example.com; base-uri 'none'; form-action 'none'", nil},
	{"fixed nonce", "default-src 'none'; script-src 'nonce-R4nd0m'; base-uri 'none'; form-action 'none'", ErrCSPUnsafe},
	{"nonce in img-src", "default-src 'none'; img-src $NONCE; base-uri 'none'; form-action 'none'", ErrCSPUnsafe},
}

func TestParseAndValidateCSP(t *testing.T) {
	for _, tc := range cspCases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseCSP(tc.policy)
			if err == nil {
				err = p.Validate()
			}
			if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestCSPNormalisation(t *testing.T) {
	p, err := ParseCSP("Script-Src 'SELF' 'nonce-AbC=' 'SHA256-XyZ=' HTTPS: https://Example.com; default-src 'NONE'")
	if err != nil {
		t.Fatal(err)
	}
	want := "script-src 'self' 'nonce-AbC=' 'sha256-XyZ=' https: https://Example.com; default-src 'none'"
	if got := p.String(); got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	vals, ok := p.Get("script-src")
	if !ok || len(vals) != 5 {
		t.Fatalf("Get = %q, %v", vals, ok)
	}
	// Directives returns a copy.
	ds := p.Directives()
	ds[0].Values[0] = "*"
	if v, _ := p.Get("script-src"); v[0] != "'self'" {
		t.Fatal("Directives exposed internal state")
	}
	if got := mustPolicy(t, APIPolicy).withFrameAncestors().String(); got != APIPolicy {
		t.Errorf("frame-ancestors duplicated: %q", got)
	}
	if got := mustPolicy(t, "default-src 'none'").withFrameAncestors().String(); got != "default-src 'none'; frame-ancestors 'none'" {
		t.Errorf("frame-ancestors not appended: %q", got)
	}
}

func mustPolicy(t *testing.T, s string) Policy {
	t.Helper()
	p, err := ParseCSP(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FuzzParseCSP: parsing never panics, a parsed policy re-parses to the
// same policy from its String form, and validation is deterministic and
// never panics.
func FuzzParseCSP(f *testing.F) {
	for _, tc := range cspCases {
		f.Add(tc.policy)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseCSP(s)
		if err != nil {
			if !errors.Is(err, ErrCSPSyntax) {
				t.Fatalf("error %v does not wrap ErrCSPSyntax", err)
			}
			return
		}
		q, err := ParseCSP(p.String())
		if err != nil {
			t.Fatalf("String() %q does not re-parse: %v", p.String(), err)
		}
		if d := cmp.Diff(p.Directives(), q.Directives()); d != "" {
			t.Fatalf("round trip changed the policy (-first +second):\n%s", d)
		}
		e1, e2 := p.Validate(), q.Validate()
		if (e1 == nil) != (e2 == nil) {
			t.Fatalf("Validate differs after round trip: %v vs %v", e1, e2)
		}
		if e1 != nil && !errors.Is(e1, ErrCSPUnsafe) {
			t.Fatalf("Validate error %v does not wrap ErrCSPUnsafe", e1)
		}
		if e1 == nil {
			// A valid policy must be enforceable as configured.
			if _, err := compileApp(App{CSP: s}); err != nil {
				t.Fatalf("valid policy %q rejected by compileApp: %v", s, err)
			}
		}
	})
}
