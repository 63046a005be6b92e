package interop

import (
	"bytes"
	"flag"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

var updateSnippets = flag.Bool("update", false, "rewrite docsnippets/snippets_gen.go")

// snippetImports maps the package names doc snippets use to their import
// paths. A snippet naming another package fails the test until it is
// listed here.
var snippetImports = map[string]string{
	"auditlog": "github.com/malai-sec/malai/auditlog", "filestore": "github.com/malai-sec/malai/auditlog/filestore",
	"memstore": "", "pgstore": "github.com/malai-sec/malai/auditlog/pgstore", "chi": "github.com/go-chi/chi/v5",
	"clientip": "github.com/malai-sec/malai/clientip", "correlation": "github.com/malai-sec/malai/correlation",
	"devissuer": "github.com/malai-sec/malai/jwtverify/devissuer", "headers": "github.com/malai-sec/malai/headers",
	"idempotency": "github.com/malai-sec/malai/idempotency", "jwtverify": "github.com/malai-sec/malai/jwtverify",
	"jwttest": "github.com/malai-sec/malai/jwtverify/jwttest", "keyring": "github.com/malai-sec/malai/keyring",
	"mux": "github.com/gorilla/mux", "note": "golang.org/x/mod/sumdb/note", "observatory": "github.com/malai-sec/malai/headers/observatory",
	"otelmetric": "github.com/malai-sec/malai/otelmetric", "problem": "github.com/malai-sec/malai/problem",
	"ratelimit": "github.com/malai-sec/malai/ratelimit", "rbac": "github.com/malai-sec/malai/rbac",
	"redis": "github.com/redis/go-redis/v9", "redisstore": "", "route": "github.com/malai-sec/malai/route",
	"storetest": "", "promhttp": "github.com/prometheus/client_golang/prometheus/promhttp",
	"http": "net/http", "netip": "net/netip", "time": "time", "tls": "crypto/tls", "slog": "log/slog", "os": "os",
	"filepath": "path/filepath", "signal": "os/signal", "syscall": "syscall", "context": "context", "fmt": "fmt",
	"json": "encoding/json", "testing": "testing", "pgxpool": "github.com/jackc/pgx/v5/pgxpool", "pgx": "github.com/jackc/pgx/v5",
	"io": "io", "metric": "go.opentelemetry.io/otel/metric", "trace": "go.opentelemetry.io/otel/trace",
	"prometheus": "github.com/prometheus/client_golang/prometheus",
}

// placeholders are names snippets use without declaring them, with the
// type a generated function declares them as, and the package of that
// type. Keep them honest: a placeholder stands for what a user has at
// that point (their mux, their handler), never for something the snippet
// should have built.
var placeholders = map[string][2]string{
	"mux":                    {"*http.ServeMux", "http"},
	"app":                    {"http.HandlerFunc", "http"},
	"transfers":              {"http.HandlerFunc", "http"},
	"settle":                 {"http.HandlerFunc", "http"},
	"accounts":               {"http.HandlerFunc", "http"},
	"getAccount":             {"http.HandlerFunc", "http"},
	"createTransfer":         {"http.HandlerFunc", "http"},
	"redirect":               {"http.Handler", "http"},
	"authn":                  {"func(http.Handler) http.Handler", "http"},
	"r":                      {"*http.Request", "http"},
	"resp":                   {"*http.Response", "http"},
	"srv":                    {"*http.Server", "http"},
	"tlsTransport":           {"http.RoundTripper", "http"},
	"fromGateway":            {"func(*http.Request) bool", "http"},
	"subjectFromVerifiedJWT": {"func(*http.Request) (string, bool)", "http"},
	"certs":                  {"[]tls.Certificate", "tls"},
	"ctx":                    {"context.Context", "context"},
	"t":                      {"*testing.T", "testing"},
	"logger":                 {"*slog.Logger", "slog"},
	"file":                   {"io.Reader", "io"},
	"dataDir":                {"string", ""},
	"subject":                {"string", ""},
	"requestID":              {"string", ""},
	"origin":                 {"string", ""},
	"adminDSN":               {"string", ""},
	"body":                   {"[]byte", ""},
	"witnessCheckpoints":     {"[][]byte", ""},
	"signer":                 {"note.Signer", "note"},
	"publicKeys":             {"[]note.Verifier", "note"},
	"witness":                {"auditlog.Witness", "auditlog"},
	"balances":               {"ledgerState", ""},
	"ring":                   {"*keyring.Ring", "keyring"},
	"adminConn":              {"*pgx.Conn", "pgx"},
	"vault":                  {"secretStore", ""},
	"mp":                     {"metric.MeterProvider", "metric"},
	"meterProvider":          {"metric.MeterProvider", "metric"},
	"tp":                     {"trace.TracerProvider", "trace"},
	"page":                   {"func(correlation.AlarmEvent)", "correlation"},
	"reg":                    {"*prometheus.Registry", "prometheus"},
	"rdb":                    {"redis.UniversalClient", "redis"},
	"redisStore":             {"ratelimit.Store", "ratelimit"},
	"limiter":                {"*ratelimit.Limiter", "ratelimit"},
	"verifier":               {"*jwtverify.Verifier", "jwtverify"},
	"auth":                   {"*jwtverify.Verifier", "jwtverify"},
	"claims":                 {"*jwtverify.Claims", "jwtverify"},
	"issuers":                {"[]jwtverify.Issuer", "jwtverify"},
	"authz":                  {"*rbac.Middleware", "rbac"},
	"audit":                  {"func(*http.Request, rbac.Decision)", "http rbac"},
	"hdrs":                   {"*headers.Middleware", "headers"},
	"runner":                 {"*idempotency.Runner", "idempotency"},
	"msg":                    {"queueMessage", ""},
	"transfer":               {"func(context.Context, *idempotency.Lease) (idempotency.Result, error)", "context idempotency"},
	"newMyStore":             {"func(*testing.T, func() time.Time) ratelimit.Store", "testing time ratelimit"},
}

// Package names several store packages share: the snippet's own
// directory says which one it means.
var storePkgs = map[string]bool{"memstore": true, "redisstore": true, "storetest": true}

type snippet struct {
	pos  string // file:line, relative to the repository root
	dir  string // the package directory, relative
	code string
}

// docSnippets returns every Go code block of the public packages' doc
// comments. A block is Go when it declares or assigns something, calls a
// package function or defines a function; the others are formats and
// tables (record layouts, header lists, policy lines).
func docSnippets(t *testing.T, root string) []snippet {
	t.Helper()
	skip := map[string]bool{"examples": true, "bench": true, "tools": true, "testdata": true, "internal": true,
		".git": true, "evidence": true, "docs": true, ".ci": true}
	goLike := regexp.MustCompile(`:=|\bfunc\b|(?m)^\s*\w+(\.\w+)+\(`)
	var out []snippet
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if skip[d.Name()] && p != root {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var block []string
		start := 0
		flush := func() {
			for len(block) > 0 && strings.TrimSpace(block[len(block)-1]) == "" {
				block = block[:len(block)-1]
			}
			if len(block) > 0 && goLike.MatchString(strings.Join(block, "\n")) {
				out = append(out, snippet{pos: fmt.Sprintf("%s:%d", rel, start), dir: filepath.Dir(rel), code: strings.Join(block, "\n")})
			}
			block = nil
		}
		for i, l := range strings.Split(string(data), "\n") {
			tl := strings.TrimLeft(l, " \t")
			switch {
			case strings.HasPrefix(tl, "//\t"):
				if len(block) == 0 {
					start = i + 1
				}
				block = append(block, strings.TrimPrefix(tl, "//\t"))
			case tl == "//" && len(block) > 0:
				block = append(block, "")
			default:
				flush()
			}
		}
		flush()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var (
	bareDots  = regexp.MustCompile(`(?m)^\s*\.\.\.\s*$`)
	braceDots = regexp.MustCompile(`\{\s*\.\.\.\s*\}`)
	tailDots  = regexp.MustCompile(`,\s*\.\.\.\s*\}`)
	headDots  = regexp.MustCompile(`\{\s*\.\.\.\s*,\s*`)
	topFunc   = regexp.MustCompile(`(?m)^func (\w+)\(`)
)

// generate turns the snippets of one package into one Go file (imports
// are per file, so two packages' "storetest" do not clash): each statement block is
// the body of a function of its own, each declaration block is renamed
// apart; "{ ... }" becomes a panic and a line of "..." disappears; every
// variable a block declares is used, so only real mistakes fail.
func generate(t *testing.T, first int, snips []snippet) []byte {
	t.Helper()
	imports := map[string]bool{}
	var body bytes.Buffer
	for j, s := range snips {
		i := first + j
		code := braceDots.ReplaceAllString(s.code, "{ panic(0) }")
		code = tailDots.ReplaceAllString(code, "}")
		code = headDots.ReplaceAllString(code, "{")
		code = bareDots.ReplaceAllString(code, "")
		fset := token.NewFileSet()
		declSrc := "package p\n" + code
		f, declErr := parser.ParseFile(fset, "", declSrc, 0)
		var unit string
		if declErr == nil && len(f.Decls) > 0 {
			unit = topFunc.ReplaceAllString(code, fmt.Sprintf("func ${1}_%d(", i))
			for _, id := range f.Unresolved {
				if ph, ok := placeholders[id.Name]; ok {
					t.Errorf("%s: a declaration snippet uses the placeholder %s (%s): declare it in the snippet", s.pos, id.Name, ph[0])
				}
			}
		} else {
			stmtSrc := "package p\nfunc _() {\n" + code + "\n}\n"
			f2, err := parser.ParseFile(fset, "", stmtSrc, 0)
			if err != nil {
				t.Errorf("%s: the doc snippet is not valid Go: %v\n%s", s.pos, err, s.code)
				continue
			}
			f = f2
			var used []string
			seen := map[string]bool{}
			// Only names declared by the function's own statements: names
			// declared in nested blocks and closures are out of scope at
			// its end (and their blocks use them).
			top := f.Decls[0].(*ast.FuncDecl).Body.List
			for _, st := range top {
				var n ast.Node = st
				if ds, ok := st.(*ast.DeclStmt); ok {
					n = ds.Decl
				}
				var names []*ast.Ident
				switch x := n.(type) {
				case *ast.GenDecl:
					for _, sp := range x.Specs {
						if vs, ok := sp.(*ast.ValueSpec); ok {
							names = append(names, vs.Names...)
						}
					}
				case *ast.AssignStmt:
					if x.Tok == token.DEFINE {
						for _, e := range x.Lhs {
							if id, ok := e.(*ast.Ident); ok {
								names = append(names, id)
							}
						}
					}
				}
				for _, id := range names {
					if id.Name != "_" && !seen[id.Name] {
						seen[id.Name] = true
						used = append(used, id.Name)
					}
				}
			}
			// The names the snippet uses but never declares.
			free := map[string]bool{}
			for _, id := range f.Unresolved {
				free[id.Name] = true
			}
			sort.Strings(used)
			uses := ""
			for _, n := range used {
				uses += "\t_ = " + n + "\n"
			}
			var decls string
			var pnames []string
			for name := range placeholders {
				pnames = append(pnames, name)
			}
			sort.Strings(pnames)
			for _, name := range pnames {
				ph := placeholders[name]
				if !free[name] {
					continue
				}
				if name == "mux" && strings.Contains(code, "mux.NewRouter") {
					continue // gorilla/mux, the package
				}
				decls += fmt.Sprintf("\tvar %s %s\n", name, ph[0])
				uses += "\t_ = " + name + "\n"
				for _, pkg := range strings.Fields(ph[1]) {
					imports[pkg+" "+snippetImports[pkg]] = true
				}
			}
			unit = fmt.Sprintf("func snippet%d() {\n%s%s\n%s}", i, decls, code, uses)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if id, ok := sel.X.(*ast.Ident); ok {
					if id.Name == "mux" && !strings.Contains(s.code, "mux.NewRouter") {
						return true // a *http.ServeMux placeholder, not gorilla/mux
					}
					if path, known := snippetImports[id.Name]; known {
						if storePkgs[id.Name] {
							path = "github.com/malai-sec/malai/" + filepath.ToSlash(storeDir(s.dir, id.Name))
						}
						imports[id.Name+" "+path] = true
					}
				}
			}
			return true
		})
		fmt.Fprintf(&body, "// %s\n%s\n\n", s.pos, unit)

	}
	var imps []string
	for k := range imports {
		imps = append(imps, k)
	}
	sort.Strings(imps)
	var src bytes.Buffer
	src.WriteString("// Code generated by TestDocSnippetsCompile; DO NOT EDIT.\n\n")
	src.WriteString("//lint:file-ignore SA4006 snippets leave out error checks between calls (\"if err != nil { ... }\")\n\n")
	fmt.Fprintf(&src, "// The Go snippets of the documentation of %s.\n\npackage docsnippets\n\nimport (\n", snips[0].dir)
	for _, k := range imps {
		name, path, _ := strings.Cut(k, " ")
		if filepath.Base(path) == name || strings.HasSuffix(path, "/"+name) || (name == "chi" && strings.HasSuffix(path, "chi/v5")) || (name == "redis" && strings.HasSuffix(path, "go-redis/v9")) || (name == "pgx" && strings.HasSuffix(path, "pgx/v5")) {
			fmt.Fprintf(&src, "\t%q\n", path)
		} else {
			fmt.Fprintf(&src, "\t%s %q\n", name, path)
		}
	}
	src.WriteString(")\n\n")
	src.Write(body.Bytes())
	out, err := format.Source(src.Bytes())
	if err != nil {
		t.Fatalf("generated snippets do not format: %v\n%s", err, src.Bytes())
	}
	return out
}

// storeDir is the store package a snippet in dir means by name: its own
// directory when it is one, else the sibling of that name.
func storeDir(dir, name string) string {
	if filepath.Base(dir) == name {
		return dir
	}
	if strings.Contains(dir, "/") {
		return filepath.Join(filepath.Dir(dir), name)
	}
	return filepath.Join(dir, name)
}

// TestDocSnippetsCompile extracts the Go snippets of every public
// package's documentation into docsnippets/snippets_gen.go, which the
// module builds: a snippet that stops compiling fails the build, and a
// snippet changed without regenerating fails this test. Regenerate with
//
//	go test ./internal/interop -run TestDocSnippetsCompile -update
func TestDocSnippetsCompile(t *testing.T) {
	snips := docSnippets(t, filepath.Join("..", ".."))
	if len(snips) < 20 {
		t.Fatalf("found only %d snippets: the extraction is broken", len(snips))
	}
	byDir := map[string][]snippet{}
	var dirs []string
	for _, s := range snips {
		if byDir[s.dir] == nil {
			dirs = append(dirs, s.dir)
		}
		byDir[s.dir] = append(byDir[s.dir], s)
	}
	sort.Strings(dirs)
	want := map[string][]byte{}
	n := 0
	for _, d := range dirs {
		name := "snippets_" + strings.ReplaceAll(filepath.ToSlash(d), "/", "_") + "_gen.go"
		want[name] = generate(t, n, byDir[d])
		n += len(byDir[d])
	}
	if t.Failed() {
		return
	}
	existing, _ := filepath.Glob(filepath.Join("docsnippets", "snippets_*_gen.go"))
	if *updateSnippets {
		for _, p := range existing {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
		for name, src := range want {
			if err := os.WriteFile(filepath.Join("docsnippets", name), src, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	stale := len(existing) != len(want)
	for name, src := range want {
		got, err := os.ReadFile(filepath.Join("docsnippets", name))
		stale = stale || err != nil || !bytes.Equal(got, src)
	}
	if stale {
		t.Fatal("docsnippets/ is out of date with the package documentation: run go test ./internal/interop -run TestDocSnippetsCompile -update")
	}
}
